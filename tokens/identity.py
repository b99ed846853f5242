"""What the gateway knows about the caller after authentication: the contract between `tokens`
(which builds it) and `gateway`/`usage` (which enforce it). Built from the verified token's claims
and the device's cached policy, so an ordinary request needs no database query."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tokens.model_aliases import ModelAliases


@dataclass(frozen=True, slots=True)
class DevicePolicy:
    """A device's effective policy: its own fields, else its person's, else its organization's, else
    the settings. The person's and the organization's caps are also carried on their own, since they
    bound the total of all the person's (or the organization's) devices.

    `allowed_models` holds fnmatch-style patterns (`claude-sonnet-*`); empty means every model.
    Caps are USD; None means no cap. `tokens_per_minute` 0 means no limit. `spend_cap_enforcement`
    is how the caps bite (`usage.spend_enforcement`): clamp, strict or soft. The alert thresholds are
    percentages of each cap (the device's caps, and the organization's) at which operators are told.
    """

    requests_per_window: int
    window_ms: int
    tokens_per_minute: int
    allowed_models: tuple[str, ...]
    device_daily_cap_usd: Decimal | None
    device_monthly_cap_usd: Decimal | None
    org_daily_cap_usd: Decimal | None
    org_monthly_cap_usd: Decimal | None
    model_aliases: ModelAliases = ()  # (pattern, served model), first match wins
    device_weekly_cap_usd: Decimal | None = None
    org_weekly_cap_usd: Decimal | None = None
    spend_cap_enforcement: str = "clamp"
    device_alert_thresholds: tuple[int, ...] = (50, 80, 100)
    org_alert_thresholds: tuple[int, ...] = (50, 80, 100)
    person_daily_cap_usd: Decimal | None = None
    person_weekly_cap_usd: Decimal | None = None
    person_monthly_cap_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    device_id: str
    device_pk: int
    org_id: int | None
    jti: str
    expires_at: float
    policy: DevicePolicy
    person_id: int | None = None
