"""GET /device: the calling device's status, effective policy and spend, read with its wrapper token."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from decimal import Decimal

import pytest

from tests.tokens.client import bootstrap, error_of
from tests.usage.cast import identity_with
from tokens.models import Device, Organization
from usage.spend import reserve_spend, settle_spend

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def open_enrollment(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_MODE = "open"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000


def device_status(client, token: str):
    return client.get("/device", headers={"authorization": f"Bearer {token}"})


def test_device_reads_its_status_policy_and_spend(client, settings):
    settings.RATE_LIMIT_MAX, settings.RATE_LIMIT_WINDOW, settings.TOKENS_PER_MINUTE_MAX = 50, 60_000, 9000
    organization = Organization.objects.create(name="Acme", monthly_spend_cap_usd=Decimal("100.00"))
    Device.objects.create(
        pk=random.randrange(10**6, 10**9),
        device_id="dev-status",
        organization=organization,
        allowed_models="claude-haiku-*",
        daily_spend_cap_usd=Decimal("2.50"),
    )
    body = bootstrap(client, "dev-status", "4.2.0", device_name="Ada's laptop", app_name="Scribe", os="macOS 15.1").json()
    device = Device.objects.get(device_id="dev-status")
    identity = identity_with(
        device_pk=device.pk,
        org_id=organization.pk,
        device_daily=Decimal("2.50"),
        device_monthly=Decimal("100"),
        org_monthly=Decimal("100"),
    )
    asyncio.run(settle_spend(asyncio.run(reserve_spend(identity, Decimal("1"), "req-status")), Decimal("0.125")))

    response = device_status(client, body["wrapper_token"])

    assert response.status_code == 200 and response["cache-control"] == "no-store"
    report = response.json()
    today = dt.datetime.now(dt.UTC).date()
    tomorrow = today + dt.timedelta(days=1)
    assert {
        key: report[key] for key in ("device_id", "status", "device_name", "app_name", "app_version", "os", "organization")
    } == {
        "device_id": "dev-status",
        "status": "active",
        "device_name": "Ada's laptop",
        "app_name": "Scribe",
        "app_version": "4.2.0",
        "os": "macOS 15.1",
        "organization": "Acme",
    }
    assert report["token_expires_at"] == body["expires_at"]
    assert report["policy"] == {
        "requests_per_window": 50,
        "window_ms": 60_000,
        "tokens_per_minute": 9000,
        "allowed_models": ["claude-haiku-*"],
        "device_daily_cap_usd": "2.50",
        "device_monthly_cap_usd": "100.00",
        "org_daily_cap_usd": None,
        "org_monthly_cap_usd": "100.00",
        "model_aliases": [],
        "device_weekly_cap_usd": None,
        "org_weekly_cap_usd": None,
        "spend_cap_enforcement": "clamp",
        "device_alert_thresholds": [50, 80, 100],
        "org_alert_thresholds": [50, 80, 100],
        "person_daily_cap_usd": None,
        "person_weekly_cap_usd": None,
        "person_monthly_cap_usd": None,
    }
    assert report["spend"]["day"] == {
        "spent_usd": "0.1250000000",
        "in_flight_usd": "0.0000000000",
        "cap_usd": "2.50",
        "resets_at": f"{tomorrow}T00:00:00.000Z",
    }
    assert report["spend"]["month"]["spent_usd"] == "0.1250000000"
    assert report["organization_spend"]["month"]["spent_usd"] == "0.1250000000"
    assert report["organization_spend"]["month"]["cap_usd"] == "100.00"


def test_device_without_organization_has_no_organization_spend(client):
    Device.objects.create(pk=random.randrange(10**6, 10**9), device_id="dev-alone")  # spend counters are keyed by pk
    body = bootstrap(client, "dev-alone").json()
    report = device_status(client, body["wrapper_token"]).json()
    assert report["organization"] is None and "organization_spend" not in report
    assert report["spend"]["day"]["spent_usd"] == "0.0000000000" and report["spend"]["day"]["cap_usd"] is None


def test_device_endpoint_without_a_token_is_401(client):
    assert error_of(client.get("/device")) == (401, "authentication_error", "invalid_token")
