"""The usage tests' cast: an ordinary successful request's usage event, a capped caller, and the
seeded price table."""

from __future__ import annotations

import datetime as dt
import importlib
import secrets
from decimal import Decimal

from tokens.identity import DeviceIdentity, DevicePolicy
from usage.events import UsageEvent
from usage.models import ModelPrice
from usage.pricing import invalidate_price_table

seed_migration = importlib.import_module("usage.migrations.0002_seed_model_prices")
provenance_migration = importlib.import_module("usage.migrations.0004_price_provenance_and_record_pricing")

NOV_25 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def usage_event(**fields: object) -> UsageEvent:
    values: dict[str, object] = {
        "request_id": "req_gw_" + secrets.token_hex(8),
        "occurred_at": NOV_25,
        "endpoint": "/v1/messages",
        "method": "POST",
        "model": "claude-sonnet-4-5-20250929",
        "status": 200,
    }
    values.update(fields)
    return UsageEvent(**values)


def identity_with(
    *,
    device_pk: int,
    org_id: int | None = None,
    device_daily: Decimal | None = None,
    device_monthly: Decimal | None = None,
    org_daily: Decimal | None = None,
    org_monthly: Decimal | None = None,
    device_weekly: Decimal | None = None,
    org_weekly: Decimal | None = None,
    person_id: int | None = None,
    person_daily: Decimal | None = None,
    person_monthly: Decimal | None = None,
    enforcement: str = "clamp",
) -> DeviceIdentity:
    """A caller as the gateway sees it after authentication, with the given caps (USD)."""
    policy = DevicePolicy(
        requests_per_window=100,
        window_ms=60000,
        tokens_per_minute=0,
        allowed_models=(),
        device_daily_cap_usd=device_daily,
        device_monthly_cap_usd=device_monthly,
        org_daily_cap_usd=org_daily,
        org_monthly_cap_usd=org_monthly,
        device_weekly_cap_usd=device_weekly,
        org_weekly_cap_usd=org_weekly,
        person_daily_cap_usd=person_daily,
        person_monthly_cap_usd=person_monthly,
        spend_cap_enforcement=enforcement,
    )
    return DeviceIdentity(f"device-{device_pk}", device_pk, org_id, f"jti-{device_pk}", 2_000_000_000.0, policy, person_id)


def ensure_seeded_prices() -> None:
    """Transactional tests flush the tables, migration data included: put the seed back."""
    if not ModelPrice.objects.exists():
        ModelPrice.objects.bulk_create(
            ModelPrice(
                **row,
                **dict(
                    zip(("provenance", "provenance_note"), provenance_migration.provenance_of(row["model_pattern"], row["speed"]))
                ),
            )
            for row in seed_migration.seed_rows()
        )
    invalidate_price_table()
