"""Where each value of a device's (or an organization's devices') effective policy comes from, for
the admin pages: an empty field says "inherit", which is no answer to "what is in force?".

Mirrors `tokens.policy.resolve_policy`; a test holds the two to the same values."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from tokens.budget_alert_fields import parse_alert_thresholds
from tokens.model_aliases import parse_model_aliases
from tokens.models import Device, Organization, Person
from tokens.policy import parse_model_patterns

_FIELDS = (
    # (label, model field, setting it falls back to)
    ("Allowed models", "allowed_models", None),
    ("Requests per window", "requests_per_window", "RATE_LIMIT_MAX"),
    ("Window (ms)", "window_ms", "RATE_LIMIT_WINDOW"),
    ("Tokens per minute", "tokens_per_minute", "TOKENS_PER_MINUTE_MAX"),
    ("Daily spend cap (USD)", "daily_spend_cap_usd", "DAILY_SPEND_CAP_USD"),
    ("Weekly spend cap (USD)", "weekly_spend_cap_usd", "WEEKLY_SPEND_CAP_USD"),
    ("Monthly spend cap (USD)", "monthly_spend_cap_usd", "MONTHLY_SPEND_CAP_USD"),
    ("Budget alert thresholds (%)", "budget_alert_thresholds", "BUDGET_ALERT_THRESHOLDS"),
)


@dataclass(frozen=True, slots=True)
class PolicyValue:
    label: str
    value: str
    source: str


def _own(owner: Device | Person | Organization | None, field: str) -> object | None:
    value: object = getattr(owner, field, None)  # a person sets no alert thresholds of its own
    if value is None:
        return None
    if field == "allowed_models" and isinstance(value, str):
        return (", ".join(parse_model_patterns(value)) or "any model") if value.strip() else None
    if field == "budget_alert_thresholds" and isinstance(value, str):
        return ", ".join(map(str, parse_alert_thresholds(value))) if value.strip() else None
    return value


def _shown(value: object) -> str:
    if value in (None, ""):
        return "none"
    if isinstance(value, Decimal):
        return f"${value:.2f}"
    return str(value)


def _setting_shown(field: str, setting: str) -> str:
    value = getattr(settings, setting)
    if field == "budget_alert_thresholds":
        return ", ".join(map(str, parse_alert_thresholds(value)))
    return _shown(value)


def effective_policy_sources(
    device: Device | None, organization: Organization | None, person: Person | None = None
) -> list[PolicyValue]:
    """For a device: each value and whether the device, its person, its organization or a setting
    sets it. For a person or an organization (`device` None): what their devices get unless they set
    their own."""
    rows = []
    owners = ((device, "this device"), (person, f"person {person}"), (organization, f"organization {organization}"))
    for label, field, setting in _FIELDS:
        for owner, source in owners:
            value = _own(owner, field)
            if value is not None:
                rows.append(PolicyValue(label, _shown(value), source))
                break
        else:
            if setting is None:
                rows.append(PolicyValue(label, "any model", "default (no allowlist)"))
            else:
                rows.append(PolicyValue(label, _setting_shown(field, setting), f"setting {setting}"))
    for owner, source in owners:
        rows.extend(PolicyValue("Model alias", rule, source) for rule in _lines(owner))
    return rows


def _lines(owner: Device | Person | Organization | None) -> list[str]:
    if owner is None:
        return []
    return [f"{pattern} → {served}" for pattern, served in parse_model_aliases(owner.model_aliases)]
