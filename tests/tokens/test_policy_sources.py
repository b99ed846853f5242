"""The device and organization pages show the policy in force and where each value comes from."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokens.models import Device, Organization
from tokens.policy import resolve_policy
from tokens.policy_sources import effective_policy_sources

pytestmark = pytest.mark.django_db


def test_each_value_names_the_device_the_organization_or_the_setting(settings):
    settings.RATE_LIMIT_MAX = 100
    settings.TOKENS_PER_MINUTE_MAX = 0
    settings.DAILY_SPEND_CAP_USD = ""
    settings.WEEKLY_SPEND_CAP_USD = ""
    settings.BUDGET_ALERT_THRESHOLDS = "50,80,100"
    acme = Organization(
        name="Acme",
        window_ms=30_000,
        monthly_spend_cap_usd=Decimal("500"),
        model_aliases="claude-opus-* = claude-sonnet-4-5",
        budget_alert_thresholds="100 80",
    )
    device = Device(device_id="laptop-ada", allowed_models="claude-sonnet-*", requests_per_window=7)
    rows = [(row.label, row.value, row.source) for row in effective_policy_sources(device, acme)]
    assert rows == [
        ("Allowed models", "claude-sonnet-*", "this device"),
        ("Requests per window", "7", "this device"),
        ("Window (ms)", "30000", "organization Acme"),
        ("Tokens per minute", "0", "setting TOKENS_PER_MINUTE_MAX"),
        ("Daily spend cap (USD)", "none", "setting DAILY_SPEND_CAP_USD"),
        ("Weekly spend cap (USD)", "none", "setting WEEKLY_SPEND_CAP_USD"),
        ("Monthly spend cap (USD)", "$500.00", "organization Acme"),
        ("Budget alert thresholds (%)", "80, 100", "organization Acme"),
        ("Model alias", "claude-opus-* → claude-sonnet-4-5", "organization Acme"),
    ]
    policy = resolve_policy(device, acme)
    assert (policy.device_alert_thresholds, policy.org_alert_thresholds) == ((80, 100), (80, 100))
    assert resolve_policy(device, None).device_alert_thresholds == (50, 80, 100)
    assert (policy.allowed_models, policy.requests_per_window, policy.window_ms, policy.device_monthly_cap_usd) == (
        ("claude-sonnet-*",),
        7,
        30_000,
        Decimal("500"),
    )


def test_the_device_and_organization_pages_show_the_table(operator_client, acme, acme_device):
    client = operator_client
    acme.requests_per_window = 42
    acme.save()
    device = acme_device
    device_page = client.get(f"/admin/tokens/device/{device.pk}/change/").content.decode()
    assert "<tr><td>Requests per window</td><td>42</td><td>organization Acme</td></tr>" in device_page
    org_page = client.get(f"/admin/tokens/organization/{acme.pk}/change/").content.decode()
    assert "<tr><td>Requests per window</td><td>42</td><td>organization Acme</td></tr>" in org_page
    assert "<tr><td>Allowed models</td><td>any model</td><td>default (no allowlist)</td></tr>" in org_page
