"""Authentication of wrapper tokens on every /v1 request.

Signature, kid, exp and token type are checked against the in-memory keyring by the simplejwt
backend of the wrapper tokens (without building a Token object per request: see issuance); revocation and device
status come from `device_state`'s short-lived cache. With both warm an ordinary call does no I/O at
all: no database query, no Redis round trip.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxyproject.lib.errors import AuthenticationFailed, DeviceBlocked, DevicePendingApproval, TokenRevoked
from tokens.device_state import get_device_state
from tokens.identity import DeviceIdentity
from tokens.issuance import UnknownKid, verify_wrapper_claims
from tokens.models import DeviceStatus
from tokens.signing_keys import aget_keyring, areload_keyring_for_unknown_kid


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value


def extract_bearer_token(headers: Mapping[str, str]) -> str | None:
    """The credential from `Authorization: Bearer <token>` (SDK 2.x, Claude Code's auth token) or
    `x-api-key` (older SDKs, Claude Code's api key). `headers` is Django's `request.headers` or any
    mapping with lower-case (or Title-Case) names."""
    authorization = _header(headers, "authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = _header(headers, "x-api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    return None


async def authenticate_wrapper_token(raw_token: str) -> DeviceIdentity:
    """Who is calling and under what policy. Raises TokenExpired, TokenRevoked, AuthenticationFailed
    (missing, forged, wrong type, unknown kid), DevicePendingApproval or DeviceBlocked."""
    if not raw_token:
        raise AuthenticationFailed("Missing token: send Authorization: Bearer <wrapper token> or x-api-key.")
    await aget_keyring()
    try:
        claims = verify_wrapper_claims(raw_token)
    except UnknownKid as exc:
        await areload_keyring_for_unknown_kid(exc.kid)
        claims = verify_wrapper_claims(raw_token)
    state = await get_device_state(claims["sub"])
    if state is None:
        raise TokenRevoked("This device no longer exists. Bootstrap again.")
    if state.status == DeviceStatus.BLOCKED:
        raise DeviceBlocked()
    if state.status == DeviceStatus.PENDING:
        raise DevicePendingApproval()
    if claims["jti"] in state.revoked_jtis or (state.revoked_before is not None and float(claims["iat"]) < state.revoked_before):
        raise TokenRevoked()
    return DeviceIdentity(
        device_id=state.device_id,
        device_pk=state.device_pk,
        org_id=state.org_id,
        jti=claims["jti"],
        expires_at=float(claims["exp"]),
        policy=state.policy,
        person_id=state.person_id,
    )
