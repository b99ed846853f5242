"""A wrapper token verified once is remembered by its text (tokens.issuance.verify_wrapper_claims),
so a device's next request skips the signature check. What was remembered must not outlive what
made it valid: the token's expiry, and the key that signed it."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest
from asgiref.sync import sync_to_async

from proxyproject.lib.errors import AuthenticationFailed, TokenExpired
from tests.support import enroll_device
from tokens import issuance
from tokens.authentication import authenticate_wrapper_token
from tokens.models import SigningKey
from tokens.signing_keys import forget_keyring, retire_expired_signing_keys, rotate_signing_key

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_remembered_token_is_refused_once_it_expires(monkeypatch):
    token = await enroll_device()
    assert (await authenticate_wrapper_token(token)).device_id
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    monkeypatch.setattr(issuance.time, "time", lambda: expires_at + 1)
    with pytest.raises(TokenExpired):
        await authenticate_wrapper_token(token)


async def test_a_remembered_token_is_refused_once_its_signing_key_is_retired():
    token = await enroll_device()
    assert (await authenticate_wrapper_token(token)).device_id
    kid = jwt.get_unverified_header(token)["kid"]

    def retire() -> None:
        rotate_signing_key(actor="test")
        verify_until = SigningKey.objects.get(kid=kid).verify_until
        assert retire_expired_signing_keys(now=verify_until + dt.timedelta(seconds=1)) == [kid]

    await sync_to_async(retire)()
    forget_keyring()  # what every process does within KEYRING_CACHE_SECONDS
    with pytest.raises(AuthenticationFailed):
        await authenticate_wrapper_token(token)
