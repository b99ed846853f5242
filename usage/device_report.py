"""What a device may do and what it has spent, as the device itself may see it (`GET /device`).

It lives in `usage` because the spend comes from the live spend counters (usage.spend), which also
count requests whose records are still in the write queue: the figure the caps are enforced on.
The report is built for the token's own device and holds no secret: no token, no device secret or
its hash, no client address.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Any

from tokens.identity import DeviceIdentity
from tokens.issuance import format_timestamp
from tokens.models import Device
from tokens.policy import policy_to_json
from usage.periods import period_start
from usage.pricing import COST_QUANTUM
from usage.spend import current_spend


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _cost(value: Decimal) -> str:
    """Costs as the usage report writes them (the counters keep nano-dollars)."""
    return format(value.quantize(COST_QUANTUM), "f")


def _period_ends(period: str, moment: dt.datetime) -> dt.datetime:
    start = period_start(period, moment)
    if period == "day":
        return start + dt.timedelta(days=1)
    if period == "week":
        return start + dt.timedelta(days=7)
    return (start + dt.timedelta(days=32)).replace(day=1)


def _spend(scope: str, pk: int, period: str, cap: Decimal | None, now: float) -> dict[str, Any]:
    settled, reserved = current_spend(scope, pk, period, now)
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    return {
        "spent_usd": _cost(settled),
        "in_flight_usd": _cost(reserved),
        "cap_usd": _money(cap),
        "resets_at": format_timestamp(_period_ends(period, moment)),
    }


def device_report(identity: DeviceIdentity, *, now: float | None = None) -> dict[str, Any]:
    """The authenticated device's status, effective policy and spend this UTC day, ISO week and month."""
    moment = time.time() if now is None else now
    device = Device.objects.select_related("organization", "person").get(pk=identity.device_pk)
    policy = identity.policy
    report: dict[str, Any] = {
        "device_id": device.device_id,
        "status": device.status,
        "device_name": device.device_name,
        "app_name": device.app_name,
        "app_version": device.app_version,
        "os": device.os,
        "organization": device.organization.name if device.organization else None,
        "person": str(device.person) if device.person else None,
        "token_expires_at": format_timestamp(dt.datetime.fromtimestamp(identity.expires_at, dt.UTC)),
        "policy": policy_to_json(policy),
        "spend": {
            "day": _spend("device", device.pk, "day", policy.device_daily_cap_usd, moment),
            "week": _spend("device", device.pk, "week", policy.device_weekly_cap_usd, moment),
            "month": _spend("device", device.pk, "month", policy.device_monthly_cap_usd, moment),
        },
    }
    if identity.person_id is not None:
        report["person_spend"] = {
            "day": _spend("person", identity.person_id, "day", policy.person_daily_cap_usd, moment),
            "week": _spend("person", identity.person_id, "week", policy.person_weekly_cap_usd, moment),
            "month": _spend("person", identity.person_id, "month", policy.person_monthly_cap_usd, moment),
        }
    if identity.org_id is not None:
        report["organization_spend"] = {
            "day": _spend("org", identity.org_id, "day", policy.org_daily_cap_usd, moment),
            "week": _spend("org", identity.org_id, "week", policy.org_weekly_cap_usd, moment),
            "month": _spend("org", identity.org_id, "month", policy.org_monthly_cap_usd, moment),
        }
    return report
