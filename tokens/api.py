"""POST /bootstrap and POST /refresh, at the seed's exact paths, and a person's sign-in on a device:
POST /auth/oidc/start and POST /auth/oidc/poll (tokens.sign_in)."""

from __future__ import annotations

from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Router

from proxyproject.lib.errors import AuthenticationFailed, DevicePendingApproval, error_response
from tokens.audit import ClientInfo
from tokens.authentication import extract_bearer_token
from tokens.enrollment import Enrollment, bootstrap_device
from tokens.enrollment_limits import enforce_enrollment_limit, enforce_sign_in_poll_limit
from tokens.issuance import TokenPair, format_timestamp
from tokens.payloads import parse_bootstrap_request, parse_refresh_token, parse_sign_in_poll, parse_sign_in_start
from tokens.provider_sessions import renew_provider_session
from tokens.refresh import refresh_token_pair
from tokens.sign_in import poll_sign_in, start_sign_in
from tokens.sign_in_completion import handle_hash

router = Router(tags=["tokens"])


def _token_response(pair: TokenPair, extra: dict[str, Any] | None = None) -> HttpResponse:
    body = {
        "wrapper_token": pair.wrapper_token,
        "refresh_token": pair.refresh_token,
        "proxy_base_url": settings.PROXY_BASE_URL,
        "expires_at": format_timestamp(pair.expires_at),
        "refresh_expires_at": format_timestamp(pair.refresh_expires_at),
        **(extra or {}),
    }
    response = HttpResponse(orjson.dumps(body), content_type="application/json")
    response["cache-control"] = "no-store"
    return response


def _pending_response(enrollment: Enrollment) -> HttpResponse:
    """403 device_pending_approval; when this call set the device's secret, it rides in
    `details.device_secret`, since the client will never be shown it again."""
    response = error_response(DevicePendingApproval())
    if enrollment.device_secret is not None:
        body = orjson.loads(response.content)
        body["error"]["details"]["device_secret"] = enrollment.device_secret
        response.content = orjson.dumps(body)
    response["cache-control"] = "no-store"
    return response


@router.post("/bootstrap", auth=None, summary="Enroll a device (or re-enroll with its device_secret) and get a token pair")
async def bootstrap(request: HttpRequest) -> HttpResponse:
    client = ClientInfo.from_request(request)
    await enforce_enrollment_limit("bootstrap", client.ip)
    payload = parse_bootstrap_request(request)
    enrollment = await sync_to_async(bootstrap_device)(
        device_id=payload.device_id,
        app_version=payload.app_version,
        device_secret=payload.device_secret,
        description=payload.description,
        bootstrap_secret=request.headers.get("x-bootstrap-secret"),
        client=client,
    )
    if enrollment.pair is None:
        return _pending_response(enrollment)
    extra = {"device_secret": enrollment.device_secret} if enrollment.device_secret is not None else None
    return _token_response(enrollment.pair, extra)


@router.post("/refresh", auth=None, summary="Exchange a refresh token (or a still-valid wrapper token) for a new pair")
async def refresh(request: HttpRequest) -> HttpResponse:
    client = ClientInfo.from_request(request)
    await enforce_enrollment_limit("refresh", client.ip)
    raw_token = parse_refresh_token(request) or extract_bearer_token(request.headers)
    if not raw_token:
        raise AuthenticationFailed('Missing token: send {"refresh_token": ...} or Authorization: Bearer <token>.')
    await renew_provider_session(raw_token=raw_token, client=client)
    pair = await sync_to_async(refresh_token_pair)(raw_token=raw_token, client=client)
    return _token_response(pair)


def _no_store(body: dict[str, Any], status: int = 200) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), content_type="application/json", status=status)
    response["cache-control"] = "no-store"
    return response


@router.post("/auth/oidc/start", auth=None, summary="Start signing a person in on this device with the identity provider")
async def sign_in_start(request: HttpRequest) -> HttpResponse:
    client = ClientInfo.from_request(request)
    await enforce_enrollment_limit("sign_in_start", client.ip)
    started = await start_sign_in(requested=parse_sign_in_start(request))
    return _no_store(started.as_json())


@router.post("/auth/oidc/poll", auth=None, summary="Finish a sign-in: 202 while the person has not approved, then a token pair")
async def sign_in_poll(request: HttpRequest) -> HttpResponse:
    client = ClientInfo.from_request(request)
    polled = parse_sign_in_poll(request)
    await enforce_sign_in_poll_limit(handle_hash(polled.handle), client.ip)
    outcome = await poll_sign_in(handle=polled.handle, code=polled.code, state=polled.state, client=client)
    enrollment = outcome.enrollment
    if enrollment is None or enrollment.pair is None:
        return _no_store({"status": "authorization_pending", "interval": outcome.interval}, status=202)
    extra = {"device_id": enrollment.device_id}
    if enrollment.device_secret is not None:
        extra["device_secret"] = enrollment.device_secret
    return _token_response(enrollment.pair, extra)
