"""tokens.jws: the strict HS256 verifier under the token backend, against tokens PyJWT encodes."""

from __future__ import annotations

import jwt
import pytest
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenBackendExpiredToken

from tokens.jws import UnknownSigningKey, read_kid, verify_hs256

KEYS = {"k1": b"k1-secret-0123456789-0123456789-0123456789"}
CLAIMS = {"exp": 2_000, "iat": 1_000.5, "jti": "j" * 32, "sub": "dev", "token_type": "access"}


def _token(claims: dict = CLAIMS, kid: str = "k1", key: bytes = KEYS["k1"], algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def test_valid_token_gives_its_claims():
    assert verify_hs256(_token(), KEYS, now=1_999.9) == CLAIMS
    assert read_kid(_token()) == "k1"


def test_expiry_is_exclusive_and_leeway_extends_it():
    with pytest.raises(TokenBackendExpiredToken):
        verify_hs256(_token(), KEYS, now=2_000)
    assert verify_hs256(_token(), KEYS, now=2_000, leeway=1)["sub"] == "dev"


@pytest.mark.parametrize(
    "claims",
    [
        {**CLAIMS, "exp": True},
        {**CLAIMS, "exp": "2000"},
        {**CLAIMS, "iat": None},
        {**CLAIMS, "sub": 5},
        {key: value for key, value in CLAIMS.items() if key != "token_type"},
    ],
)
def test_required_claims_must_be_present_with_their_types(claims):
    with pytest.raises(TokenBackendError):
        verify_hs256(_token(claims), KEYS, now=1_000)


def test_unknown_or_missing_kid_is_its_own_error():
    with pytest.raises(UnknownSigningKey) as unknown:
        verify_hs256(_token(kid="k9"), KEYS, now=1_000)
    assert unknown.value.kid == "k9"
    with pytest.raises(UnknownSigningKey):
        verify_hs256(jwt.encode(CLAIMS, KEYS["k1"], algorithm="HS256"), KEYS, now=1_000)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_other_algorithms_are_refused_even_with_the_right_key():
    for algorithm in ("HS384", "HS512"):
        with pytest.raises(TokenBackendError, match="algorithm"):
            verify_hs256(_token(algorithm=algorithm), KEYS, now=1_000)


@pytest.mark.parametrize(
    "mangle", [lambda t: t + "=", lambda t: t[:-2] + "*" + t[-1], lambda t: t + ".", lambda t: t.replace(".", "", 1)]
)
def test_malformed_segments_are_refused(mangle):
    with pytest.raises(TokenBackendError):
        verify_hs256(mangle(_token()), KEYS, now=1_000)
