"""Wrapper (access) and refresh tokens: simplejwt token classes signed by the current signing key,
with its `kid` in the header, and the issuing of a pair with its IssuedToken rows.

Claims: `sub` device id, `jti`, `exp`, `iat` (with milliseconds, so "revoked before T" is exact for a
token issued right after a revocation), `token_type` (access / refresh), `fam` (the family of every
token descended from one bootstrap) and, on the wrapper token, the device's `policy`.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings
from django.utils import timezone
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenBackendError, TokenBackendExpiredToken, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token

from proxyproject.lib.errors import AuthenticationFailed, TokenExpired
from proxyproject.lib.process_state import register_process_state
from tokens import jws
from tokens.audit import ClientInfo
from tokens.models import Device, IssuedToken, TokenKind
from tokens.policy import policy_claims, resolve_policy
from tokens.signing_keys import cached_keyring, get_keyring, reload_keyring_for_unknown_kid

FAMILY_CLAIM = "fam"
POLICY_CLAIM = "policy"


class KeyringTokenBackend(TokenBackend):
    """simplejwt's backend, with a key per `kid` instead of one SIGNING_KEY.

    It reads only the in-memory keyring: callers make sure it is loaded (`get_keyring` or
    `aget_keyring`), so verification on the hot path never waits on the database. Verification is
    `tokens.jws` (see there why not PyJWT's decode). `iat` is not checked against this host's
    clock: a token issued by a host whose clock runs ahead must still work here; `exp` bounds a
    token's life.
    """

    def __init__(self) -> None:
        super().__init__(jws.ALGORITHM, leeway=api_settings.LEEWAY)

    def encode(self, payload: dict[str, Any]) -> str:
        keyring = get_keyring()
        return jwt.encode(payload, keyring.signing_secret, algorithm=self.algorithm, headers={"kid": keyring.signer_kid})

    def decode(self, token: Any, verify: bool = True) -> dict[str, Any]:
        """Always verifies: nothing here has a use for an unverified payload."""
        if not isinstance(token, str):
            raise TokenBackendError("Token is invalid")
        keyring = cached_keyring()
        if keyring is None:
            raise jws.UnknownSigningKey(jws.read_kid(token))
        return jws.verify_hs256(token, keyring.secrets, leeway=self.get_leeway().total_seconds())


token_backend = KeyringTokenBackend()


class WrapperToken(AccessToken):
    """The wrapper token a device sends on /v1 requests."""

    _token_backend = token_backend


class DeviceRefreshToken(RefreshToken):
    """Exchanged once at /refresh for a new pair (rotation)."""

    _token_backend = token_backend


class UnknownKid(AuthenticationFailed):
    """The token names a kid this process's keyring lacks: reload the keyring (throttled) and retry
    once, since another process may have rotated the key."""

    def __init__(self, kid: str) -> None:
        super().__init__("Token is signed by an unknown key.")
        self.kid = kid


def verify_token(raw: str, token_class: type[Token]) -> Token:
    """Verify signature, kid, exp and token type through simplejwt, mapped to our error types.
    Reads only the in-memory keyring; callers load it first."""
    try:
        # simplejwt annotates the encoded token as Optional[Token]; it takes (and stores) the str.
        return token_class(raw)  # type: ignore[arg-type]
    except ExpiredTokenError:
        raise TokenExpired() from None
    except TokenError as exc:
        if isinstance(exc.__cause__, jws.UnknownSigningKey):
            raise UnknownKid(exc.__cause__.kid) from None
        raise AuthenticationFailed("Invalid token.") from None


_VERIFIED_KEPT = 4096  # tokens remembered as verified; past that the memory starts again
_verified: dict[str, tuple[object, dict[str, Any]]] = {}
register_process_state("verified wrapper tokens", _verified.clear)


def verify_wrapper_claims(raw: str) -> dict[str, Any]:
    """The hot path's equivalent of `verify_token(raw, WrapperToken).payload`: the same backend and
    checks without building a simplejwt Token, which costs more than the verification itself.

    A device sends the same token with every request until it refreshes: one verified under the
    keyring in use is remembered by its exact text, so the next request skips the HMAC and the
    decoding (7 µs) and only its expiry is checked again. A reloaded keyring (every minute, and
    after a rotation or a retirement) is another object, under which every token is verified afresh.
    Only verified tokens are remembered, so made-up ones cannot fill the memory. The claims are
    shared between requests: read them, never change them."""
    keyring = cached_keyring()
    remembered = _verified.get(raw)
    if remembered is not None and remembered[0] is keyring:
        claims = remembered[1]
        if claims["exp"] <= time.time() - token_backend.get_leeway().total_seconds():
            raise TokenExpired()
        return claims
    claims = _verify_wrapper_claims(raw)
    if keyring is not None:
        if len(_verified) >= _VERIFIED_KEPT:
            _verified.clear()
        _verified[raw] = (keyring, claims)
    return claims


def _verify_wrapper_claims(raw: str) -> dict[str, Any]:
    try:
        claims = token_backend.decode(raw)
    except TokenBackendExpiredToken:
        raise TokenExpired() from None
    except jws.UnknownSigningKey as exc:
        raise UnknownKid(exc.kid) from None
    except TokenBackendError:
        raise AuthenticationFailed("Invalid token.") from None
    if claims["token_type"] != WrapperToken.token_type:
        raise AuthenticationFailed("Invalid token.")
    return claims


def verify_token_loading_keys(raw: str, token_class: type[Token]) -> Token:
    """For sync callers (refresh): loads the keyring, and reloads it once for a kid it lacks."""
    get_keyring()
    try:
        return verify_token(raw, token_class)
    except UnknownKid as exc:
        reload_keyring_for_unknown_kid(exc.kid)
        return verify_token(raw, token_class)


@dataclass(frozen=True, slots=True)
class TokenPair:
    wrapper_token: str
    refresh_token: str
    expires_at: dt.datetime
    refresh_expires_at: dt.datetime
    access_jti: str
    refresh_jti: str
    family: str
    grant: str


def format_timestamp(value: dt.datetime) -> str:
    """ISO 8601 UTC with milliseconds and Z, the seed's `expires_at` shape."""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _build(token_class: type[Token], device: Device, family: str, now: dt.datetime, lifetime: dt.timedelta) -> Token:
    token = token_class()
    token.set_exp(from_time=now, lifetime=lifetime)
    token[api_settings.USER_ID_CLAIM] = device.device_id
    token["iat"] = round(now.timestamp(), 3)
    token[FAMILY_CLAIM] = family
    return token


def issue_token_pair(
    *, device: Device, client: ClientInfo, family: str | None = None, now: dt.datetime | None = None
) -> TokenPair:
    """Sign a wrapper token and a refresh token for the device and record both, as one grant. Call
    inside the caller's transaction, with the device's organization and person loaded."""
    now = now or timezone.now()
    family = family or uuid.uuid4().hex
    keyring = get_keyring()
    access = _build(WrapperToken, device, family, now, dt.timedelta(hours=settings.JWT_EXPIRATION_HOURS))
    access[POLICY_CLAIM] = policy_claims(resolve_policy(device, device.organization, device.person))
    refresh = _build(DeviceRefreshToken, device, family, now, dt.timedelta(days=settings.REFRESH_TOKEN_DAYS))
    pair = TokenPair(
        wrapper_token=str(access),
        refresh_token=str(refresh),
        expires_at=dt.datetime.fromtimestamp(access["exp"], dt.UTC),
        refresh_expires_at=dt.datetime.fromtimestamp(refresh["exp"], dt.UTC),
        access_jti=access["jti"],
        refresh_jti=refresh["jti"],
        family=family,
        grant=uuid.uuid4().hex,
    )
    IssuedToken.objects.bulk_create(
        [
            IssuedToken(
                jti=jti,
                device=device,
                kind=kind,
                family=family,
                grant=pair.grant,
                kid=keyring.signer_kid,
                issued_at=now,
                expires_at=expires_at,
                ip=client.ip,
                user_agent=client.user_agent,
            )
            for jti, kind, expires_at in (
                (pair.access_jti, TokenKind.ACCESS, pair.expires_at),
                (pair.refresh_jti, TokenKind.REFRESH, pair.refresh_expires_at),
            )
        ]
    )
    return pair
