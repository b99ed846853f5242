"""GET /device answers only about the token's own device, only to a live wrapper token of an active
device, and never with a secret."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model

from tests.tokens.client import bootstrap, error_of
from tokens.models import Device, IssuedToken, OperatorApiKey
from tokens.operators import issue_operator_api_key
from tokens.revocation import block_device, revoke_device_tokens

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def open_enrollment(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_MODE = "open"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000
    settings.REVOCATION_CACHE_SECONDS = 0


def device_status(client, token: str, path: str = "/device"):
    return client.get(path, headers={"authorization": f"Bearer {token}"})


def test_device_cannot_read_another_device_by_naming_it(client):
    mine = bootstrap(client, "dev-mine").json()
    bootstrap(client, "dev-theirs", device_name="Theirs")
    for path in ("/device?device_id=dev-theirs", "/device?device=dev-theirs", "/device/dev-theirs"):
        response = device_status(client, mine["wrapper_token"], path)
        if response.status_code == 200:
            assert response.json()["device_id"] == "dev-mine"
        else:
            assert response.status_code == 404
    assert b"Theirs" not in device_status(client, mine["wrapper_token"], "/device?device_id=dev-theirs").content


def test_revoked_token_reads_nothing(client):
    body = bootstrap(client, "dev-revoked").json()
    revoke_device_tokens(device=Device.objects.get(device_id="dev-revoked"), actor="security-test")
    assert error_of(device_status(client, body["wrapper_token"])) == (401, "authentication_error", "token_revoked")


def test_blocked_device_reads_nothing(client):
    body = bootstrap(client, "dev-blocked").json()
    block_device(device=Device.objects.get(device_id="dev-blocked"), actor="security-test")
    response = device_status(client, body["wrapper_token"])
    assert error_of(response) == (403, "permission_error", "device_blocked")
    assert b"dev-blocked" not in response.content


def test_refresh_token_is_not_a_device_credential(client):
    body = bootstrap(client, "dev-refresh-as-bearer").json()
    assert error_of(device_status(client, body["refresh_token"]))[:2] == (401, "authentication_error")


def test_operator_api_key_is_not_a_device_credential(client):
    key = OperatorApiKey(name="ops", created_by=get_user_model().objects.create_user("ops"))
    secret = issue_operator_api_key(key)
    assert error_of(device_status(client, secret))[:2] == (401, "authentication_error")


def test_device_report_holds_no_secret(client):
    body = bootstrap(client, "dev-secretless").json()
    response = device_status(client, body["wrapper_token"])
    device = Device.objects.get(device_id="dev-secretless")
    text = response.content.decode()
    assert response.status_code == 200
    for secret in (body["wrapper_token"], body["refresh_token"], body["device_secret"], device.secret_hash):
        assert secret not in text
    for jti in IssuedToken.objects.filter(device=device).values_list("jti", flat=True):
        assert jti not in text
    assert not {"secret_hash", "device_secret", "last_ip", "wrapper_token", "refresh_token"} & set(response.json())
