"""A wrapper token is base64url. The verifier once translated `-` and `_` to the standard alphabet's
`+` and `/` and decoded strictly after that, so a token respelled with `+` or `/` decoded to the same
bytes and verified: a second spelling of one token, which a cache or log keyed by the token's text
would count as another."""

from __future__ import annotations

import itertools

import jwt
import pytest
from rest_framework_simplejwt.exceptions import TokenBackendError

from tokens.jws import verify_hs256

KEYS = {"k1": b"k1-secret-0123456789-0123456789-0123456789"}


def _token_whose_signature_has(letter: str) -> str:
    for n in itertools.count():
        claims = {"exp": 2_000, "iat": 1_000, "jti": f"j{n}", "sub": "dev", "token_type": "access"}
        token = jwt.encode(claims, KEYS["k1"], algorithm="HS256", headers={"kid": "k1"})
        if letter in token.rsplit(".", 1)[1]:
            return token
    raise AssertionError("unreachable")


@pytest.mark.parametrize(("urlsafe", "standard"), [("-", "+"), ("_", "/")])
def test_a_token_respelled_in_the_standard_base64_alphabet_is_refused(urlsafe, standard):
    token = _token_whose_signature_has(urlsafe)
    assert verify_hs256(token, KEYS, now=1_000)["sub"] == "dev"
    head, signature = token.rsplit(".", 1)
    with pytest.raises(TokenBackendError):
        verify_hs256(f"{head}.{signature.replace(urlsafe, standard)}", KEYS, now=1_000)


def test_a_token_with_a_letter_outside_ascii_is_refused():
    head, signature = _token_whose_signature_has("-").rsplit(".", 1)
    with pytest.raises(TokenBackendError):
        verify_hs256(f"{head}.{signature.replace('-', 'é', 1)}", KEYS, now=1_000)
