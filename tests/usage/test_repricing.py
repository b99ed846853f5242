"""Repricing after a retroactive price change: `manage.py reprice_usage` and the admin page call the
same function; costs, their basis, rollups and live spend counters move by the difference; a dry
run reports it and writes nothing."""

from __future__ import annotations

import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.usage.cast import usage_event
from tokens.operators import create_operator_api_key
from usage.models import ModelPrice, PriceFlag, RollupPeriod, UsageRecord, UsageRollup
from usage.rollups import rollup_usage
from usage.spend import LocalSpendBackend, counter_for, database_totals, from_nanos, spend_backend
from usage.writer import drain_usage_queue, submit_usage

pytestmark = pytest.mark.usefixtures("prices")
UTC = dt.UTC


@pytest.fixture
def recorded():
    """Two Haiku 4.5 requests (1M output each: $5) and one of a model without a price, minutes ago, rolled up."""
    now = timezone.now()
    at = max(now - dt.timedelta(minutes=5), now.replace(hour=0, minute=0, second=0, microsecond=0))
    for request_id, model in (
        ("req_h1", "claude-haiku-4-5"),
        ("req_h2", "claude-haiku-4-5-20251001"),
        ("req_new", "claude-new-1"),
    ):
        submit_usage(
            usage_event(
                request_id=request_id,
                occurred_at=at,
                model=model,
                device_id="ada",
                device_pk=41,
                org_id=None,
                output_tokens=1_000_000,
            )
        )
    drain_usage_queue()
    rollup_usage(at - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    return at


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command("reprice_usage", *args, stdout=out)
    return out.getvalue()


def cut_haiku_output_price() -> None:
    row = ModelPrice.objects.get(model_pattern="claude-haiku-4-5*")
    row.output_per_mtok = Decimal("4")
    row.save()


def day_rollup_cost() -> Decimal:
    return sum(rollup.cost for rollup in UsageRollup.objects.filter(period=RollupPeriod.DAY, model__startswith="claude-haiku"))


def test_a_dry_run_reports_the_difference_and_writes_nothing(recorded):
    cut_haiku_output_price()
    out = run_command("--since", (recorded - dt.timedelta(hours=1)).isoformat(), "--dry-run")
    assert "3 checked, 2 would change." in out
    assert "Cost: 10.0000000000 -> 8.0000000000 USD (difference -2.0000000000)." in out
    assert "Dry run: nothing was written." in out
    assert set(UsageRecord.objects.filter(model__startswith="claude-haiku").values_list("cost", flat=True)) == {Decimal("5")}
    assert day_rollup_cost() == Decimal("10")


def test_repricing_rewrites_costs_their_basis_rollups_and_live_spend_counters(recorded, monkeypatch):
    backend = LocalSpendBackend()
    backend.raise_settled_to(database_totals())
    monkeypatch.setattr("usage.repricing.spend_backend", lambda: backend)
    today = counter_for("device", 41, "day", timezone.now())
    assert from_nanos(backend.snapshot(today, timezone.now().timestamp())[0]) == Decimal("10")
    cut_haiku_output_price()

    out = run_command("--since", (recorded - dt.timedelta(hours=1)).isoformat())

    assert "3 checked, 2 changed." in out
    assert "claude-haiku-4-5 " in out and "-1.0000000000" in out
    records = UsageRecord.objects.filter(model__startswith="claude-haiku")
    assert set(records.values_list("cost", flat=True)) == {Decimal("4")}
    assert {record.pricing["rates"]["output"] for record in records} == {"4.000000"}
    assert day_rollup_cost() == Decimal("8")
    assert from_nanos(backend.snapshot(today, timezone.now().timestamp())[0]) == Decimal("8")
    # The hour after the record is rebuilt too: its hour (or two) and its day, and the next day when that
    # hour is past midnight (a run in the day's last hour); the device's day and month.
    assert re.search(r"Rebuilt [234] rollup buckets; adjusted 2 ", out)
    assert "0 changed" in run_command("--since", (recorded - dt.timedelta(hours=1)).isoformat())  # idempotent


def test_a_model_given_a_price_afterwards_is_priced_by_repricing(recorded):
    ModelPrice.objects.create(
        model_pattern="claude-new-*",
        effective_from=dt.datetime(2020, 1, 1, tzinfo=UTC),
        input_per_mtok=1,
        output_per_mtok=3,
        cache_write_5m_per_mtok=1,
        cache_write_1h_per_mtok=2,
        cache_read_per_mtok="0.1",
    )
    out = run_command("--since", (recorded - dt.timedelta(hours=1)).isoformat())
    assert "Newly priced: 1; newly unpriced: 0." in out
    record = UsageRecord.objects.get(request_id="req_new")
    assert (record.cost, record.priced, record.price_flag) == (Decimal("3"), True, PriceFlag.EXACT)


def test_a_batch_result_is_repriced_at_its_batch_creation(prices):
    created, fetched = dt.datetime(2026, 10, 6, 12, tzinfo=UTC), dt.datetime(2026, 10, 8, 12, tzinfo=UTC)
    submit_usage(
        usage_event(
            request_id="batch_b_1",
            model="claude-sonnet-5-5",
            service_tier="batch",
            occurred_at=fetched,
            priced_at=created,
            cache_read_tokens=1_000_000,
        )
    )
    drain_usage_queue()
    assert UsageRecord.objects.get(request_id="batch_b_1").cost == Decimal("0.1")
    out = run_command("--since", "2026-10-08", "--until", "2026-10-09")
    assert "1 checked, 0 changed." in out
    assert UsageRecord.objects.get(request_id="batch_b_1").cost == Decimal("0.1")  # 0.20, not the later 0.10, halved


def test_the_admin_page_reprices_with_the_same_function(recorded):
    operator = Client()
    operator.force_login(get_user_model().objects.create(username="ops", is_staff=True, is_superuser=True))
    cut_haiku_output_price()
    since = (recorded - dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    dry = operator.post("/admin/usage/modelprice/reprice/", {"since": since, "dry_run": "on"}).content.decode()
    assert "3 checked, 2 would change." in dry
    assert UsageRecord.objects.filter(cost=Decimal("5")).count() == 2
    real = operator.post("/admin/usage/modelprice/reprice/", {"since": since}).content.decode()
    assert "3 checked, 2 changed." in real
    assert UsageRecord.objects.filter(cost=Decimal("4")).count() == 2


def test_the_admin_reprice_page_needs_the_price_change_permission(recorded):
    viewer = Client()
    viewer.force_login(get_user_model().objects.create(username="viewer", is_staff=True))
    assert viewer.post("/admin/usage/modelprice/reprice/", {"since": "2026-01-01 00:00:00"}).status_code == 403
    assert UsageRecord.objects.filter(cost=Decimal("5")).count() == 2


def test_the_redis_backend_moves_only_existing_counters_and_never_below_zero():
    backend = spend_backend()
    if not isinstance(backend, LocalSpendBackend):
        counter = counter_for("device", 97, "day", timezone.now())
        backend.raise_settled_to({counter: 1000})
        missing = counter_for("device", 98, "day", timezone.now())
        backend.adjust_settled({counter: -5000, missing: 700})
        now = timezone.now().timestamp()
        assert (backend.snapshot(counter, now)[0], backend.snapshot(missing, now)[0]) == (0, 0)
    local = LocalSpendBackend()
    counter = counter_for("device", 97, "day", timezone.now())
    local.raise_settled_to({counter: 1000})
    local.adjust_settled({counter: -300})
    assert local.snapshot(counter, timezone.now().timestamp())[0] == 700


def test_the_operator_api_reprices_with_the_same_function(recorded):
    _, secret = create_operator_api_key(name="finance", created_by=None)
    cut_haiku_output_price()
    since = (recorded - dt.timedelta(hours=1)).isoformat()
    client = Client()
    headers = {"authorization": f"Bearer {secret}"}
    dry = client.post("/admin/usage/reprice", {"since": since}, content_type="application/json", headers=headers)
    assert dry.status_code == 200, dry.content
    body = dry.json()
    assert (body["dry_run"], body["records"], body["changed"], body["difference"]) == (True, 3, 2, "-2.0000000000")
    assert body["by_model"] == {"claude-haiku-4-5": "-1.0000000000", "claude-haiku-4-5-20251001": "-1.0000000000"}
    assert UsageRecord.objects.filter(cost=Decimal("5")).count() == 2
    real = client.post(
        "/admin/usage/reprice", {"since": since, "dry_run": False}, content_type="application/json", headers=headers
    )
    assert (real.json()["dry_run"], real.json()["changed"]) == (False, 2)
    assert UsageRecord.objects.filter(cost=Decimal("4")).count() == 2


def test_the_operator_api_refuses_a_device_token_and_a_session_without_the_price_permission(recorded):
    client = Client()
    assert (
        client.post(
            "/admin/usage/reprice",
            {"since": "2026-01-01T00:00:00Z"},
            content_type="application/json",
            headers={"authorization": "Bearer not-an-operator-key"},
        ).status_code
        == 401
    )
    client.force_login(get_user_model().objects.create(username="viewer", is_staff=True))
    refused = client.post(
        "/admin/usage/reprice", {"since": "2026-01-01T00:00:00Z", "dry_run": False}, content_type="application/json"
    )
    assert refused.status_code == 403
    assert UsageRecord.objects.filter(cost=Decimal("5")).count() == 2
