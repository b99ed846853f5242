"""POST /refresh: rotation, single use, reuse detection, expiry."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from tests.tokens.client import bootstrap, error_of, jwt_parts, refresh, refresh_with_bearer
from tokens.audit import ClientInfo
from tokens.issuance import issue_token_pair
from tokens.models import AuditEvent, AuditKind, Device, IssuedToken

pytestmark = pytest.mark.django_db


def test_refresh_token_in_body_returns_a_new_pair_in_the_same_family(client, enrolled):
    response = refresh(client, enrolled["refresh_token"])

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"wrapper_token", "refresh_token", "proxy_base_url", "expires_at", "refresh_expires_at"}
    assert body["refresh_token"] != enrolled["refresh_token"]
    _, old = jwt_parts(enrolled["wrapper_token"])
    _, new = jwt_parts(body["wrapper_token"])
    assert new["fam"] == old["fam"] and new["jti"] != old["jti"] and new["sub"] == "laptop-ada"
    presented = IssuedToken.objects.get(jti=jwt_parts(enrolled["refresh_token"])[1]["jti"])
    assert presented.used_at is not None and presented.revoked_at is None


def test_refresh_token_as_bearer_header_works(client, enrolled):
    response = refresh_with_bearer(client, enrolled["refresh_token"])
    assert response.status_code == 200


def test_still_valid_wrapper_token_as_bearer_refreshes_once(client, enrolled):
    assert refresh_with_bearer(client, enrolled["wrapper_token"]).status_code == 200
    reused = refresh_with_bearer(client, enrolled["wrapper_token"])
    assert error_of(reused) == (401, "authentication_error", "refresh_token_reused")


def test_a_refresh_token_is_single_use_and_reuse_revokes_the_family(client, enrolled):
    second = refresh(client, enrolled["refresh_token"]).json()

    reused = refresh(client, enrolled["refresh_token"])

    assert error_of(reused) == (401, "authentication_error", "refresh_token_reused")
    assert reused["x-should-retry"] == "false"
    # Both holders of the family are out: the thief's new refresh token and the wrapper tokens.
    assert error_of(refresh(client, second["refresh_token"]))[2] == "token_revoked"
    family = jwt_parts(enrolled["refresh_token"])[1]["fam"]
    assert IssuedToken.objects.filter(family=family, revoked_at__isnull=True).count() == 0
    event = AuditEvent.objects.get(kind=AuditKind.REUSE_DETECTED)
    assert event.jti == jwt_parts(enrolled["refresh_token"])[1]["jti"]
    assert event.detail["family"] == family
    assert event.detail["revoked_tokens"] == 4


def test_refresh_is_audited_with_the_new_token_id(client, enrolled):
    body = refresh(client, enrolled["refresh_token"]).json()
    event = AuditEvent.objects.get(kind=AuditKind.REFRESH)
    assert event.jti == jwt_parts(body["wrapper_token"])[1]["jti"]
    assert event.detail["presented"] == jwt_parts(enrolled["refresh_token"])[1]["jti"]
    assert event.device_ref == "laptop-ada"


def _expired_pair(device_id: str, settings) -> tuple[str, str]:
    settings.JWT_EXPIRATION_HOURS = 1
    settings.REFRESH_TOKEN_DAYS = 1
    device = Device.objects.create(device_id=device_id)
    pair = issue_token_pair(device=device, client=ClientInfo(), now=timezone.now() - dt.timedelta(days=2))
    return pair.wrapper_token, pair.refresh_token


def test_expired_refresh_token_gets_token_expired_with_the_seed_message(client, settings):
    _, refresh_token = _expired_pair("dev-old", settings)
    response = refresh(client, refresh_token)
    assert error_of(response) == (401, "authentication_error", "token_expired")
    assert response.json()["error"]["message"] == "Token expired. Please refresh your token."


def test_expired_wrapper_token_cannot_refresh(client, settings):
    wrapper, _ = _expired_pair("dev-old-wrapper", settings)
    response = refresh_with_bearer(client, wrapper)
    assert error_of(response) == (401, "authentication_error", "token_expired")


def test_refresh_without_any_token_is_401(client):
    response = client.generic("POST", "/refresh")
    assert error_of(response) == (401, "authentication_error", "invalid_token")
    assert "refresh_token" in response.json()["error"]["message"]


def test_body_token_wins_over_header(client, enrolled):
    response = client.post(
        "/refresh",
        data={"refresh_token": enrolled["refresh_token"]},
        content_type="application/json",
        headers={"authorization": "Bearer not-a-token"},
    )
    assert response.status_code == 200


def test_refresh_after_device_revocation_is_refused(client, enrolled):
    from tokens.revocation import revoke_device_tokens

    revoke_device_tokens(device=Device.objects.get(device_id="laptop-ada"), actor="test")
    assert error_of(refresh(client, enrolled["refresh_token"])) == (401, "authentication_error", "token_revoked")


def test_refresh_works_for_tokens_issued_after_a_revocation(client, enrolled):
    from tokens.revocation import revoke_device_tokens

    revoke_device_tokens(device=Device.objects.get(device_id="laptop-ada"), actor="test")
    again = bootstrap(client, "laptop-ada", device_secret=enrolled["device_secret"]).json()
    assert refresh(client, again["refresh_token"]).status_code == 200
