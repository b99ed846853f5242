"""Verification of the identity provider's ID tokens (OpenID Connect Core 3.1.3.7), with PyJWT, which
the project already uses for its own tokens: the signature by the provider's published key for the
token's `kid` (an asymmetric algorithm only, so a token "signed" with `none` or with an HMAC over the
public key is refused), the issuer, the audience (and `azp` when there are several), expiry and
issue time, and the nonce the gateway sent for this sign-in.

Every refusal is IdTokenRejected with the reason; the caller records it in the audit trail."""

from __future__ import annotations

import hmac
from typing import Any

import jwt
from django.conf import settings

from proxyproject.lib.errors import IdTokenRejected
from tokens.identity_provider import signing_key

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_SECONDS = 60


async def verify_id_token(raw: str, *, nonce: str, nonce_required: bool) -> dict[str, Any]:
    """The token's claims, once every check passed. The device grant has no standard nonce parameter
    (the gateway sends one; many providers do not echo it), so there a missing nonce passes, and a
    nonce that is present must still be this sign-in's."""
    try:
        header = jwt.get_unverified_header(raw)
    except jwt.InvalidTokenError:
        raise IdTokenRejected("The ID token is not a JWT.") from None
    algorithm = header.get("alg")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise IdTokenRejected(f"The ID token's algorithm {algorithm!r} is not accepted.")
    key = await signing_key(str(header.get("kid", "")))
    if key is None:
        raise IdTokenRejected("The ID token is signed by a key the provider does not publish.")
    try:
        claims = jwt.decode(
            raw,
            key,
            algorithms=[algorithm],
            audience=settings.PEOPLE_OIDC_CLIENT_ID,
            issuer=settings.PEOPLE_OIDC_ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError:
        raise IdTokenRejected("The ID token has expired.") from None
    except jwt.InvalidAudienceError:
        raise IdTokenRejected("The ID token is for another client.") from None
    except jwt.InvalidIssuerError:
        raise IdTokenRejected("The ID token is from another issuer.") from None
    except jwt.InvalidTokenError as exc:
        raise IdTokenRejected(f"The ID token is invalid: {exc}.") from None
    audiences = [claims["aud"]] if isinstance(claims["aud"], str) else list(claims["aud"])
    if len(audiences) > 1 and claims.get("azp") != settings.PEOPLE_OIDC_CLIENT_ID:
        raise IdTokenRejected("The ID token is for several clients and not authorized for this one.")
    if "nonce" not in claims and not nonce_required:
        return claims
    if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
        raise IdTokenRejected("The ID token's nonce is not this sign-in's.")
    return claims
