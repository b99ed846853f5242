"""People sign in on their devices with the company's OpenID Connect provider (ENROLLMENT_MODE
including `oidc`); the gateway is the relying party and answers with its own token pair.

Two flows, chosen at /auth/oidc/start:
- the device authorization grant (RFC 8628), where the provider offers it: the gateway asks for a
  device code and hands the client the verification URL and user code to show; at each
  /auth/oidc/poll it asks the provider's token endpoint (never faster than the provider's interval)
  until the person approved or declined;
- the authorization code flow with PKCE (RFC 7636) and a loopback redirect (RFC 8252), for providers
  without the device grant: the client opens the authorization URL in the browser, receives the code
  on 127.0.0.1, and hands code and state to /auth/oidc/poll; the gateway, which alone holds the PKCE
  verifier and the client secret, exchanges it.

Either way the ID token is verified (tokens.id_tokens) before anyone is enrolled, the sign-in is
used once, and its handle is a bearer secret of the client's (only its hash is stored).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from proxyproject.lib.encryption import decrypt_secret, encrypt_secret
from proxyproject.lib.errors import (
    GatewayError,
    IdentityProviderUnavailable,
    InvalidRequest,
    SignInDenied,
    SignInExpired,
    SignInNotEnabled,
)
from proxyproject.lib.logging import log_event
from tokens.audit import ClientInfo
from tokens.enrollment import Enrollment
from tokens.enrollment_limits import count_unknown_sign_in_poll
from tokens.enrollment_modes import sign_in_enabled
from tokens.id_tokens import verify_id_token
from tokens.identity_provider import ProviderAnswer, endpoint, post_form, token_request
from tokens.models import DEVICE_FLOW, PKCE_FLOW, SignIn
from tokens.payloads import SignInStartRequest
from tokens.sign_in_completion import (
    claim_poll,
    complete_sign_in,
    consume_sign_in,
    find_sign_in,
    handle_hash,
    record_sign_in_refusal,
    slow_down,
)

logger = logging.getLogger("tokens.sign_in")
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL_SECONDS = 5


@dataclass(frozen=True, slots=True)
class SignInStarted:
    """What the client shows or opens; `handle` is what it polls with."""

    handle: str
    flow: str
    expires_in: int
    interval: int
    verification_uri: str = ""
    verification_uri_complete: str = ""
    user_code: str = ""
    authorization_url: str = ""

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"sign_in": self.handle, "flow": self.flow, "expires_in": self.expires_in}
        if self.flow == DEVICE_FLOW:
            body |= {
                "verification_uri": self.verification_uri,
                "verification_uri_complete": self.verification_uri_complete or self.verification_uri,
                "user_code": self.user_code,
                "interval": self.interval,
            }
        else:
            body["authorization_url"] = self.authorization_url
        return body


@dataclass(frozen=True, slots=True)
class SignInOutcome:
    """Pending (`enrollment` None: poll again after `interval` seconds), or done."""

    enrollment: Enrollment | None
    interval: int = 0


def _require_sign_in_enabled() -> None:
    if not sign_in_enabled() or not (settings.PEOPLE_OIDC_ISSUER and settings.PEOPLE_OIDC_CLIENT_ID):
        raise SignInNotEnabled()


def loopback_redirect_uri(value: str) -> str:
    """RFC 8252 7.3: http on a loopback IP literal, any port. `localhost` is refused, since a
    hosts file or DNS can send it elsewhere; so is anything with credentials, a query or a fragment."""
    parts = urlsplit(value)
    try:
        loopback = parts.scheme == "http" and ipaddress.ip_address(parts.hostname or "").is_loopback and bool(parts.port)
    except ValueError:
        loopback = False
    if not loopback or parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidRequest("redirect_uri: must be http://127.0.0.1:<port>/<path> (or [::1]), the client's loopback listener.")
    return value


def _pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def _chosen_flow(requested: SignInStartRequest) -> str:
    device_endpoint = await endpoint("device_authorization_endpoint")
    if requested.flow == DEVICE_FLOW or (requested.flow is None and device_endpoint):
        if not device_endpoint:
            raise InvalidRequest("flow: the identity provider offers no device grant; use flow pkce with a redirect_uri.")
        return DEVICE_FLOW
    if not requested.redirect_uri:
        raise InvalidRequest("redirect_uri: required for the pkce flow (the identity provider offers no device grant).")
    return PKCE_FLOW


async def start_sign_in(*, requested: SignInStartRequest, now: dt.datetime | None = None) -> SignInStarted:
    _require_sign_in_enabled()
    now = now or timezone.now()
    flow = await _chosen_flow(requested)
    handle, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    sign_in = SignIn(
        handle_sha256=handle_hash(handle),
        flow=flow,
        device_id=requested.device.device_id,
        app_version=requested.device.app_version,
        description=requested.device.description.changed_fields(),
        encrypted_device_secret=encrypt_secret(requested.device.device_secret) if requested.device.device_secret else "",
        nonce=nonce,
        next_poll_at=now,
        created_at=now,
    )
    if flow == DEVICE_FLOW:
        started = await _start_device_grant(sign_in, handle, nonce)
    else:
        started = await _start_pkce(sign_in, handle, nonce, loopback_redirect_uri(requested.redirect_uri or ""))
    sign_in.expires_at = now + dt.timedelta(seconds=started.expires_in)
    await sync_to_async(sign_in.save)()
    log_event(logger, "Sign-in started", flow=flow, device_id=sign_in.device_id)
    return started


def _seconds(value: object, default: int) -> int:
    """A duration of the provider's device authorization answer, at most the sign-in's own life.
    A whole number, or one in a string (some providers send `"900"`); anything else is `default`.
    `int()` of the raw value made "soon" or a list a server error, and 1e300 a poll interval that
    overflowed the database column and the next poll's time."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return min(max(value, 0), settings.PEOPLE_SIGN_IN_SECONDS)


async def _start_device_grant(sign_in: SignIn, handle: str, nonce: str) -> SignInStarted:
    url = await endpoint("device_authorization_endpoint")
    answer = await post_form(str(url), {"scope": settings.PEOPLE_OIDC_SCOPES, "nonce": nonce})
    body = answer.body
    if answer.error or not all(isinstance(body.get(name), str) for name in ("device_code", "user_code", "verification_uri")):
        raise IdentityProviderUnavailable(f"The device authorization request failed: {answer.error or 'incomplete answer'}.")
    interval = _seconds(body.get("interval"), DEFAULT_INTERVAL_SECONDS)
    expires_in = _seconds(body.get("expires_in"), settings.PEOPLE_SIGN_IN_SECONDS) or settings.PEOPLE_SIGN_IN_SECONDS
    sign_in.encrypted_device_code = encrypt_secret(body["device_code"])
    sign_in.interval = interval
    return SignInStarted(
        handle=handle,
        flow=DEVICE_FLOW,
        expires_in=expires_in,
        interval=interval,
        verification_uri=body["verification_uri"],
        verification_uri_complete=str(body.get("verification_uri_complete") or ""),
        user_code=body["user_code"],
    )


async def _start_pkce(sign_in: SignIn, handle: str, nonce: str, redirect_uri: str) -> SignInStarted:
    url = await endpoint("authorization_endpoint")
    if url is None:
        raise IdentityProviderUnavailable("The discovery document has no authorization_endpoint.")
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(24)
    sign_in.encrypted_code_verifier = encrypt_secret(verifier)
    sign_in.redirect_uri, sign_in.state = redirect_uri, state
    query = {
        "response_type": "code",
        "client_id": settings.PEOPLE_OIDC_CLIENT_ID,
        "redirect_uri": redirect_uri,
        "scope": settings.PEOPLE_OIDC_SCOPES,
        "state": state,
        "nonce": nonce,
        "code_challenge": _pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    return SignInStarted(
        handle=handle,
        flow=PKCE_FLOW,
        expires_in=settings.PEOPLE_SIGN_IN_SECONDS,
        interval=0,
        authorization_url=f"{url}?{urlencode(query)}",
    )


async def poll_sign_in(
    *, handle: str, code: str | None, state: str | None, client: ClientInfo, now: dt.datetime | None = None
) -> SignInOutcome:
    """Pending, or the device enrolled as the signed-in person's. Raises SignInExpired,
    SignInDenied, IdTokenRejected, PersonBlocked, DeviceBlocked or DeviceSecretInvalid; every
    refusal after the sign-in was found is in the audit trail."""
    _require_sign_in_enabled()
    now = now or timezone.now()
    sign_in = await sync_to_async(find_sign_in)(handle, now)
    if sign_in is None:
        await count_unknown_sign_in_poll(client.ip)
        raise SignInExpired()
    try:
        if sign_in.flow == DEVICE_FLOW:
            answer = await _poll_device_grant(sign_in, now)
            if answer is None:
                return SignInOutcome(None, sign_in.interval)
        else:
            answer = await _exchange_code(sign_in, code, state)
        return SignInOutcome(await _finish(sign_in, answer, client, now))
    except GatewayError as refusal:
        await sync_to_async(record_sign_in_refusal)(
            device_id=sign_in.device_id, reason=f"{refusal.error_code}: {refusal.message}", client=client, now=now
        )
        log_event(logger, "Sign-in refused", logging.WARNING, device_id=sign_in.device_id, reason=refusal.message, ip=client.ip)
        raise


async def _poll_device_grant(sign_in: SignIn, now: dt.datetime) -> ProviderAnswer | None:
    """The provider's token answer once the person approved; None while pending."""
    if not await sync_to_async(claim_poll)(sign_in, now):
        return None
    answer = await token_request({"grant_type": DEVICE_CODE_GRANT, "device_code": decrypt_secret(sign_in.encrypted_device_code)})
    if answer.error == "authorization_pending":
        return None
    if answer.error == "slow_down":
        await sync_to_async(slow_down)(sign_in)
        return None
    await _end(sign_in)
    if answer.error == "access_denied":
        raise SignInDenied()
    if answer.error is not None:
        raise SignInExpired(f"The identity provider ended the sign-in: {answer.error}.")
    return answer


async def _end(sign_in: SignIn) -> None:
    """Used once: of concurrent polls that reach the end, one goes on, the others find it gone."""
    if not await sync_to_async(consume_sign_in)(sign_in):
        raise SignInExpired()


async def _exchange_code(sign_in: SignIn, code: str | None, state: str | None) -> ProviderAnswer:
    if not code or not state:
        raise InvalidRequest("code and state: required to finish a pkce sign-in (from the loopback redirect).")
    await _end(sign_in)
    if not hmac.compare_digest(state.encode(), sign_in.state.encode()):
        raise SignInExpired("The state does not match this sign-in's: start a new one.")
    answer = await token_request(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": sign_in.redirect_uri,
            "code_verifier": decrypt_secret(sign_in.encrypted_code_verifier),
        }
    )
    if answer.error == "access_denied":
        raise SignInDenied()
    if answer.error is not None:
        raise SignInExpired(f"The identity provider refused the code: {answer.error}.")
    return answer


async def _finish(sign_in: SignIn, answer: ProviderAnswer, client: ClientInfo, now: dt.datetime) -> Enrollment:
    id_token = answer.body.get("id_token")
    if not isinstance(id_token, str):
        raise IdentityProviderUnavailable("The identity provider answered without an ID token (is `openid` in the scopes?).")
    claims = await verify_id_token(id_token, nonce=sign_in.nonce, nonce_required=sign_in.flow == PKCE_FLOW)
    refresh_token = answer.body.get("refresh_token")
    signed_in = await sync_to_async(complete_sign_in)(
        sign_in=sign_in,
        claims=claims,
        device_secret=decrypt_secret(sign_in.encrypted_device_secret) if sign_in.encrypted_device_secret else None,
        provider_refresh_token=refresh_token if isinstance(refresh_token, str) else None,
        client=client,
        now=now,
    )
    log_event(logger, "Person signed in", device_id=sign_in.device_id, person_id=signed_in.person_id, flow=sign_in.flow)
    return signed_in.enrollment
