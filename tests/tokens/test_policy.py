"""A device's effective policy: device, else organization, else settings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokens.identity import DevicePolicy
from tokens.models import Device, Organization
from tokens.policy import parse_model_patterns, resolve_policy


@pytest.fixture
def defaults(settings):
    settings.RATE_LIMIT_MAX = 100
    settings.RATE_LIMIT_WINDOW = 60_000
    settings.TOKENS_PER_MINUTE_MAX = 0
    settings.DAILY_SPEND_CAP_USD = "10"
    settings.MONTHLY_SPEND_CAP_USD = ""
    settings.WEEKLY_SPEND_CAP_USD = ""
    settings.SPEND_CAP_ENFORCEMENT = "clamp"


def test_no_overrides_uses_the_settings(defaults):
    assert resolve_policy(Device(device_id="d"), None) == DevicePolicy(
        requests_per_window=100,
        window_ms=60_000,
        tokens_per_minute=0,
        allowed_models=(),
        device_daily_cap_usd=Decimal("10"),
        device_monthly_cap_usd=None,
        org_daily_cap_usd=None,
        org_monthly_cap_usd=None,
    )


def test_organization_overrides_settings_and_device_overrides_organization(defaults):
    organization = Organization(
        name="Acme",
        requests_per_window=50,
        window_ms=10_000,
        tokens_per_minute=9_000,
        allowed_models="claude-haiku-*",
        daily_spend_cap_usd=Decimal("20.00"),
        monthly_spend_cap_usd=Decimal("300.00"),
    )
    device = Device(
        device_id="d",
        requests_per_window=5,
        allowed_models="claude-sonnet-*, claude-opus-4-5*",
        monthly_spend_cap_usd=Decimal("50.00"),
    )
    assert resolve_policy(device, organization) == DevicePolicy(
        requests_per_window=5,
        window_ms=10_000,
        tokens_per_minute=9_000,
        allowed_models=("claude-sonnet-*", "claude-opus-4-5*"),
        device_daily_cap_usd=Decimal("20.00"),
        device_monthly_cap_usd=Decimal("50.00"),
        org_daily_cap_usd=Decimal("20.00"),
        org_monthly_cap_usd=Decimal("300.00"),
    )


def test_a_zero_override_is_a_value_not_inherit(defaults):
    organization = Organization(name="Acme", tokens_per_minute=9_000)
    device = Device(device_id="d", tokens_per_minute=0, daily_spend_cap_usd=Decimal("0"))
    policy = resolve_policy(device, organization)
    assert (policy.tokens_per_minute, policy.device_daily_cap_usd) == (0, Decimal("0"))


def test_star_on_the_device_allows_every_model_despite_the_organization(defaults):
    organization = Organization(name="Acme", allowed_models="claude-haiku-*")
    assert resolve_policy(Device(device_id="d", allowed_models="*"), organization).allowed_models == ()


@pytest.mark.parametrize(
    "text, patterns",
    [
        ("", ()),
        ("claude-sonnet-*", ("claude-sonnet-*",)),
        ("claude-sonnet-*\r\n claude-haiku-* ,claude-sonnet-*", ("claude-sonnet-*", "claude-haiku-*")),
        ("claude-haiku-*, *", ()),
    ],
)
def test_model_patterns_parse_lines_and_commas(text, patterns):
    assert parse_model_patterns(text) == patterns


def test_spend_cap_enforcement_and_weekly_caps_inherit_device_then_organization_then_settings(defaults, settings):
    settings.SPEND_CAP_ENFORCEMENT = "strict"
    settings.WEEKLY_SPEND_CAP_USD = "30"
    organization = Organization(name="o", spend_cap_enforcement="soft", weekly_spend_cap_usd=Decimal("40"))
    assert resolve_policy(Device(device_id="d"), None).spend_cap_enforcement == "strict"
    assert resolve_policy(Device(device_id="d"), None).device_weekly_cap_usd == Decimal("30")
    inherited = resolve_policy(Device(device_id="d"), organization)
    assert (inherited.spend_cap_enforcement, inherited.device_weekly_cap_usd, inherited.org_weekly_cap_usd) == (
        "soft",
        Decimal("40"),
        Decimal("40"),
    )
    own = resolve_policy(Device(device_id="d", spend_cap_enforcement="clamp", weekly_spend_cap_usd=Decimal("5")), organization)
    assert (own.spend_cap_enforcement, own.device_weekly_cap_usd, own.org_weekly_cap_usd) == (
        "clamp",
        Decimal("5"),
        Decimal("40"),
    )


def test_alert_thresholds_survive_the_device_policy_cache():
    from tokens.policy import policy_from_json, policy_to_json

    organization = Organization(name="Acme", budget_alert_thresholds="90")
    device = Device(device_id="d", budget_alert_thresholds="10, 20")
    policy = resolve_policy(device, organization)
    assert (policy.device_alert_thresholds, policy.org_alert_thresholds) == ((10, 20), (90,))
    assert policy_from_json(policy_to_json(policy)) == policy


@pytest.mark.parametrize("text", ["0", "50, lots", "1001", "-5"])
def test_a_threshold_that_is_not_a_percentage_is_refused(text):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        Device._meta.get_field("budget_alert_thresholds").run_validators(text)
