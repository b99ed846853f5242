"""Forged tokens get 401 on /refresh and from the /v1 authentication, and are never accepted."""

from __future__ import annotations

import base64
import time

import jwt
import orjson
import pytest
from asgiref.sync import async_to_sync

from proxyproject.lib.encryption import decrypt_secret
from proxyproject.lib.errors import AuthenticationFailed
from tests.tokens.client import error_of, jwt_parts, refresh, refresh_with_bearer
from tokens.authentication import authenticate_wrapper_token
from tokens.models import SigningKey, SigningKeyState

pytestmark = [
    pytest.mark.django_db,
    # The HS512 forgery uses the real (HS256-sized) key on purpose.
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

authenticate = async_to_sync(authenticate_wrapper_token)


def _segment(data: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def _active_kid() -> str:
    return SigningKey.objects.get(state=SigningKeyState.ACTIVE).kid


def _sign(claims: dict, key: str | bytes, kid: str, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def _forgeries(enrolled: dict) -> dict[str, str]:
    header, claims = jwt_parts(enrolled["wrapper_token"])
    _, refresh_claims = jwt_parts(enrolled["refresh_token"])
    kid = header["kid"]
    real_key = decrypt_secret(SigningKey.objects.get(kid=kid).encrypted_secret)
    signature = enrolled["wrapper_token"].rsplit(".", 1)[1]
    return {
        "wrong key": _sign(claims, "another-secret-that-is-long-enough-0123456789", kid),
        "alg none": f"{_segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_segment(claims)}.",
        "alg none signed empty": _segment({"alg": "none", "kid": kid}) + "." + _segment(claims) + "." + signature,
        "tampered sub": f"{_segment(header)}.{_segment({**claims, 'sub': 'someone-else'})}.{signature}",
        "tampered exp": f"{_segment(header)}.{_segment({**claims, 'exp': claims['exp'] + 86400})}.{signature}",
        "unknown kid": _sign(claims, real_key, "k-made-up"),
        "HS512 with the real key": _sign(claims, real_key, kid, "HS512"),
        "missing jti": _sign({k: v for k, v in claims.items() if k != "jti"}, real_key, kid),
        "unknown token type": _sign({**claims, "token_type": "sliding"}, real_key, kid),
        "refresh token used as access": enrolled["refresh_token"],
        "not a jwt": "sk-ant-api03-not-a-jwt",
        "garbage segments": "a.b.c",
        "refresh claims, access type claim, wrong key": _sign({**refresh_claims, "token_type": "access"}, "x" * 40, kid),
    }


def test_forged_tokens_are_refused_by_authentication(enrolled):
    for name, token in _forgeries(enrolled).items():
        with pytest.raises(AuthenticationFailed) as refused:
            authenticate(token)
        assert refused.value.status == 401, name
        assert refused.value.error_code == "invalid_token", name


def test_forged_tokens_are_refused_by_refresh(client, enrolled):
    forgeries = _forgeries(enrolled)
    del forgeries["refresh token used as access"]
    for name, token in forgeries.items():
        assert error_of(refresh(client, token)) == (401, "authentication_error", "invalid_token"), name
        assert error_of(refresh_with_bearer(client, token)) == (401, "authentication_error", "invalid_token"), name
    # None of them consumed the real refresh token.
    assert refresh(client, enrolled["refresh_token"]).status_code == 200


def test_a_validly_signed_token_for_an_unknown_jti_is_refused_by_refresh(client, enrolled):
    header, claims = jwt_parts(enrolled["refresh_token"])
    real_key = decrypt_secret(SigningKey.objects.get(kid=header["kid"]).encrypted_secret)
    minted = _sign({**claims, "jti": "f" * 32, "iat": time.time()}, real_key, header["kid"])
    assert error_of(refresh(client, minted)) == (401, "authentication_error", "invalid_token")
