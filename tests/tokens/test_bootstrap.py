"""POST /bootstrap: the seed's response shape, the token's claims, and device secrets."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from tests.tokens.client import bootstrap, error_of, jwt_parts
from tokens.device_secrets import hash_device_secret
from tokens.models import AuditEvent, AuditKind, Device, IssuedToken, Organization, SigningKey, SigningKeyState

pytestmark = pytest.mark.django_db

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_first_bootstrap_returns_the_seed_shape_plus_refresh_and_secret(client, settings):
    settings.JWT_EXPIRATION_HOURS = 24
    before = dt.datetime.now(dt.UTC)
    response = bootstrap(client, "test-device-123", "1.0.0")

    assert response.status_code == 200
    assert response["content-type"] == "application/json"
    assert response["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"wrapper_token", "refresh_token", "proxy_base_url", "expires_at", "refresh_expires_at", "device_secret"}
    assert body["proxy_base_url"] == settings.PROXY_BASE_URL
    assert ISO_MS_Z.match(body["expires_at"]) and ISO_MS_Z.match(body["refresh_expires_at"])
    expires_at = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=24) - dt.timedelta(seconds=2) <= expires_at - before <= dt.timedelta(hours=24, seconds=2)
    assert len(body["device_secret"]) >= 32


def test_wrapper_token_carries_device_kid_type_and_policy_claims(client, settings):
    organization = Organization.objects.create(name="Acme", requests_per_window=40, allowed_models="claude-haiku-*")
    Device.objects.create(device_id="dev-claims", organization=organization, window_ms=30_000)
    settings.TOKENS_PER_MINUTE_MAX = 5000

    body = bootstrap(client, "dev-claims").json()
    header, claims = jwt_parts(body["wrapper_token"])
    active = SigningKey.objects.get(state=SigningKeyState.ACTIVE)

    assert header == {"alg": "HS256", "kid": active.kid, "typ": "JWT"}
    assert claims["sub"] == "dev-claims"
    assert claims["token_type"] == "access"
    assert claims["policy"] == {
        "rate_limit": {"max": 40, "window_ms": 30_000},
        "tokens_per_minute": 5000,
        "allowed_models": ["claude-haiku-*"],
    }
    expires_at = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert dt.datetime.fromtimestamp(claims["exp"], dt.UTC) == expires_at
    _, refresh_claims = jwt_parts(body["refresh_token"])
    assert refresh_claims["token_type"] == "refresh"
    assert refresh_claims["fam"] == claims["fam"]
    assert "policy" not in refresh_claims
    rows = {row.kind: row for row in IssuedToken.objects.filter(device__device_id="dev-claims")}
    assert rows["access"].jti == claims["jti"] and rows["refresh"].jti == refresh_claims["jti"]
    assert rows["access"].kid == active.kid


def test_first_bootstrap_creates_the_device_with_only_a_hash_of_its_secret(client):
    body = bootstrap(client, "dev-new", "2.3.4").json()
    device = Device.objects.get(device_id="dev-new")
    assert device.status == "active"
    assert device.app_version == "2.3.4"
    assert device.secret_hash == hash_device_secret(body["device_secret"])
    assert body["device_secret"] not in device.secret_hash
    assert device.last_ip == "127.0.0.1"


def test_rebootstrap_with_the_device_secret_gets_new_tokens_and_no_secret(client):
    first = bootstrap(client, "dev-back").json()
    again = bootstrap(client, "dev-back", "1.1.0", device_secret=first["device_secret"])
    assert again.status_code == 200
    assert "device_secret" not in again.json()
    assert again.json()["wrapper_token"] != first["wrapper_token"]
    assert Device.objects.get(device_id="dev-back").app_version == "1.1.0"


@pytest.mark.parametrize("secret", [None, "x" * 40])
def test_rebootstrap_without_the_right_secret_is_refused(client, secret):
    bootstrap(client, "dev-taken")
    fields = {} if secret is None else {"device_secret": secret}
    response = bootstrap(client, "dev-taken", **fields)
    assert error_of(response) == (401, "authentication_error", "device_secret_invalid")
    assert response["x-should-retry"] == "false"
    assert IssuedToken.objects.filter(device__device_id="dev-taken").count() == 2
    refused = AuditEvent.objects.get(kind=AuditKind.ENROLLMENT_REFUSED)
    assert (refused.device_ref, refused.detail) == ("dev-taken", {"reason": "device_secret_invalid"})


def test_client_may_choose_its_own_device_secret(client):
    chosen = "my-own-device-secret-of-at-least-32-chars"
    first = bootstrap(client, "dev-chosen", device_secret=chosen).json()
    assert first["device_secret"] == chosen
    assert Device.objects.get(device_id="dev-chosen").secret_hash == hash_device_secret(chosen)
    assert bootstrap(client, "dev-chosen", device_secret=chosen).status_code == 200


def test_after_an_operator_reset_the_next_bootstrap_sets_a_new_secret(client):
    from tokens.revocation import reset_device_secret

    old = bootstrap(client, "dev-reset").json()["device_secret"]
    reset_device_secret(device=Device.objects.get(device_id="dev-reset"), actor="test")

    response = bootstrap(client, "dev-reset")
    assert response.status_code == 200
    new = response.json()["device_secret"]
    assert new != old
    assert error_of(bootstrap(client, "dev-reset", device_secret=old))[2] == "device_secret_invalid"
    assert bootstrap(client, "dev-reset", device_secret=new).status_code == 200


def test_bootstrap_is_audited(client):
    body = bootstrap(client, "dev-audit", headers={"user-agent": "desktop/1.0"}).json()
    _, claims = jwt_parts(body["wrapper_token"])
    event = AuditEvent.objects.get(kind=AuditKind.BOOTSTRAP)
    seen = (event.device_ref, event.jti, event.ip, event.user_agent, event.actor)
    assert seen == ("dev-audit", claims["jti"], "127.0.0.1", "desktop/1.0", "")
    assert event.detail["created"] is True
    assert event.detail["family"] == claims["fam"]
