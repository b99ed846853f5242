"""A forged token whose unverified `token_type` is not a string (a list, an object) is refused as an
invalid token before any verification, not answered with a server error."""

from __future__ import annotations

import jwt
import pytest
from django.test import Client

from tests.tokens.client import error_of, refresh


@pytest.mark.django_db
@pytest.mark.parametrize("token_type", [["refresh"], {"kind": "refresh"}])
def test_refresh_with_unhashable_token_type_gets_401(client: Client, token_type: object) -> None:
    forged = jwt.encode(
        {"token_type": token_type, "jti": "x", "sub": "d"}, "not-the-signing-key-0123456789abcdef", algorithm="HS256"
    )
    assert error_of(refresh(client, forged)) == (401, "authentication_error", "invalid_token")
