"""A device's effective policy: its own fields, else its person's (the one who signed in on it),
else its organization's, else the settings. A person is more specific than an organization: an
operator who gives Alice a higher limit than her team's means it for every device of hers, and a
device's own setting (a build machine, a kiosk) is more specific still.

The person's and the organization's spend caps are also carried separately (`person_*_cap_usd`,
`org_*_cap_usd`), because they bound the person's and the organization's total spend, while
`device_*_cap_usd` bounds one device's.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from tokens.budget_alert_fields import AlertThresholds, parse_alert_thresholds
from tokens.identity import DevicePolicy
from tokens.model_aliases import parse_model_aliases
from tokens.models import Device, Organization, Person

T = TypeVar("T")
_ALL_MODELS = "*"


def parse_model_patterns(text: str) -> tuple[str, ...]:
    """Patterns from the admin's text field: one per line or comma-separated; `*` alone means all."""
    patterns = tuple(dict.fromkeys(part.strip() for part in re.split(r"[,\n]", text) if part.strip()))
    return () if _ALL_MODELS in patterns else patterns


def _settings_cap(name: str) -> Decimal | None:
    raw = getattr(settings, name)
    if raw in ("", None):
        return None
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a USD amount.") from None


def settings_alert_thresholds() -> AlertThresholds:
    try:
        return parse_alert_thresholds(settings.BUDGET_ALERT_THRESHOLDS)
    except ValueError as exc:
        raise ImproperlyConfigured(f"BUDGET_ALERT_THRESHOLDS: {exc}") from None


def own_alert_thresholds(owner: Device | Person | Organization | None) -> AlertThresholds | None:
    """The owner's own thresholds, or None when its field is empty (it inherits)."""
    if owner is None or not owner.budget_alert_thresholds.strip():
        return None
    return parse_alert_thresholds(owner.budget_alert_thresholds)


def _first(*values: T | None) -> T | None:
    return next((value for value in values if value is not None), None)


def _models(owner: Device | Person | Organization | None) -> tuple[str, ...] | None:
    return parse_model_patterns(owner.allowed_models) if owner is not None and owner.allowed_models.strip() else None


def resolve_policy(device: Device, organization: Organization | None, person: Person | None = None) -> DevicePolicy:
    owners = (device, person, organization)

    def own(owner: Device | Person | Organization | None, field: str) -> Any:
        return getattr(owner, field) if owner is not None else None

    def inherited(field: str, setting: Any) -> Any:
        return _first(*(own(owner, field) for owner in owners), setting)

    return DevicePolicy(
        requests_per_window=inherited("requests_per_window", settings.RATE_LIMIT_MAX),
        window_ms=inherited("window_ms", settings.RATE_LIMIT_WINDOW),
        tokens_per_minute=inherited("tokens_per_minute", settings.TOKENS_PER_MINUTE_MAX),
        allowed_models=_first(*(_models(owner) for owner in owners)) or (),
        device_daily_cap_usd=inherited("daily_spend_cap_usd", _settings_cap("DAILY_SPEND_CAP_USD")),
        device_monthly_cap_usd=inherited("monthly_spend_cap_usd", _settings_cap("MONTHLY_SPEND_CAP_USD")),
        org_daily_cap_usd=own(organization, "daily_spend_cap_usd"),
        org_monthly_cap_usd=own(organization, "monthly_spend_cap_usd"),
        model_aliases=sum((parse_model_aliases(own(owner, "model_aliases") or "") for owner in owners), ()),
        device_weekly_cap_usd=inherited("weekly_spend_cap_usd", _settings_cap("WEEKLY_SPEND_CAP_USD")),
        org_weekly_cap_usd=own(organization, "weekly_spend_cap_usd"),
        spend_cap_enforcement=next(
            (own(owner, "spend_cap_enforcement") for owner in owners if own(owner, "spend_cap_enforcement")),
            settings.SPEND_CAP_ENFORCEMENT,
        ),
        device_alert_thresholds=_first(*(own_alert_thresholds(owner) for owner in owners)) or settings_alert_thresholds(),
        org_alert_thresholds=own_alert_thresholds(organization) or settings_alert_thresholds(),
        person_daily_cap_usd=own(person, "daily_spend_cap_usd"),
        person_weekly_cap_usd=own(person, "weekly_spend_cap_usd"),
        person_monthly_cap_usd=own(person, "monthly_spend_cap_usd"),
    )


def policy_claims(policy: DevicePolicy) -> dict[str, Any]:
    """The per-token policy the seed says can ride in the wrapper token, for clients to read."""
    return {
        "rate_limit": {"max": policy.requests_per_window, "window_ms": policy.window_ms},
        "tokens_per_minute": policy.tokens_per_minute,
        "allowed_models": list(policy.allowed_models),
    }


def policy_to_json(policy: DevicePolicy) -> dict[str, Any]:
    def money(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return {
        "requests_per_window": policy.requests_per_window,
        "window_ms": policy.window_ms,
        "tokens_per_minute": policy.tokens_per_minute,
        "allowed_models": list(policy.allowed_models),
        "device_daily_cap_usd": money(policy.device_daily_cap_usd),
        "device_monthly_cap_usd": money(policy.device_monthly_cap_usd),
        "org_daily_cap_usd": money(policy.org_daily_cap_usd),
        "org_monthly_cap_usd": money(policy.org_monthly_cap_usd),
        "model_aliases": [list(rule) for rule in policy.model_aliases],
        "device_weekly_cap_usd": money(policy.device_weekly_cap_usd),
        "org_weekly_cap_usd": money(policy.org_weekly_cap_usd),
        "spend_cap_enforcement": policy.spend_cap_enforcement,
        "device_alert_thresholds": list(policy.device_alert_thresholds),
        "org_alert_thresholds": list(policy.org_alert_thresholds),
        "person_daily_cap_usd": money(policy.person_daily_cap_usd),
        "person_weekly_cap_usd": money(policy.person_weekly_cap_usd),
        "person_monthly_cap_usd": money(policy.person_monthly_cap_usd),
    }


def policy_from_json(data: dict[str, Any]) -> DevicePolicy:
    def money(value: str | None) -> Decimal | None:
        return None if value is None else Decimal(value)

    return DevicePolicy(
        requests_per_window=int(data["requests_per_window"]),
        window_ms=int(data["window_ms"]),
        tokens_per_minute=int(data["tokens_per_minute"]),
        allowed_models=tuple(data["allowed_models"]),
        device_daily_cap_usd=money(data["device_daily_cap_usd"]),
        device_monthly_cap_usd=money(data["device_monthly_cap_usd"]),
        org_daily_cap_usd=money(data["org_daily_cap_usd"]),
        org_monthly_cap_usd=money(data["org_monthly_cap_usd"]),
        model_aliases=tuple((pattern, served) for pattern, served in data.get("model_aliases", ())),
        device_weekly_cap_usd=money(data.get("device_weekly_cap_usd")),
        org_weekly_cap_usd=money(data.get("org_weekly_cap_usd")),
        spend_cap_enforcement=data.get("spend_cap_enforcement", "clamp"),
        device_alert_thresholds=tuple(data.get("device_alert_thresholds", (50, 80, 100))),
        org_alert_thresholds=tuple(data.get("org_alert_thresholds", (50, 80, 100))),
        person_daily_cap_usd=money(data.get("person_daily_cap_usd")),
        person_weekly_cap_usd=money(data.get("person_weekly_cap_usd")),
        person_monthly_cap_usd=money(data.get("person_monthly_cap_usd")),
    )
