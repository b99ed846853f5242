"""Spend caps are never exceeded: worst-case reservations checked and taken atomically, settled to
the actual cost, released on failure, expired when abandoned; per device and organization, per UTC
day and month; on the in-process backend and on real Redis, within a process and across two."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import subprocess
import sys
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from redis.crc import key_slot

from proxyproject.lib.errors import SpendCapReached, error_response
from proxyproject.lib.redis import get_sync_redis, redis_key
from tests import servers
from tests.usage.cast import identity_with, usage_event
from usage.spend import (
    LocalSpendBackend,
    SpendLedger,
    cap_checks,
    counter_for,
    current_spend,
    database_totals,
    from_nanos,
    reconcile_spend_counters,
    reserve_spend,
    settle_spend,
)
from usage.spend.redis import RedisSpendBackend, counter_keys_pattern
from usage.writer import drain_usage_queue, flush_usage, stop_usage_writer, submit_usage

UTC = dt.UTC


def first_day_of_next_month() -> dt.datetime:
    """Redis drops a period's counter (EXPIREAT) two days after the period ends, so the moments these
    tests play at must lie in the future of whenever the suite runs."""
    today = dt.datetime.now(UTC)
    return dt.datetime(today.year + today.month // 12, today.month % 12 + 1, 1, tzinfo=UTC)


MONTH = first_day_of_next_month()
MONTH_AFTER = (MONTH + dt.timedelta(days=32)).replace(day=1)
NOON = (MONTH + dt.timedelta(days=24, hours=12)).timestamp()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def ledger(request):
    if request.param == "redis":
        if not django_settings.REDIS_URL:
            pytest.skip("needs REDIS_URL (CI's second pass)")
        backend = RedisSpendBackend()
    else:
        backend = LocalSpendBackend()
    return SpendLedger(backend=backend, clock=FakeClock(NOON))


def fresh_pk() -> int:
    return random.randrange(10**6, 10**9)


async def test_no_caps_means_no_reservation_and_no_state(ledger):
    assert await ledger.reserve(identity_with(device_pk=fresh_pk(), org_id=3), Decimal("5"), "req-1") is None
    if isinstance(ledger.backend, RedisSpendBackend):
        assert list(get_sync_redis().scan_iter(counter_keys_pattern())) == []


async def test_fifty_concurrent_requests_fit_only_what_the_cap_allows(ledger):
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("1.00"))

    async def request(index: int) -> bool:
        try:
            reservation = await ledger.reserve(identity, Decimal("0.095"), f"req-{index}")
        except SpendCapReached:
            return False
        await asyncio.sleep(0)
        await ledger.settle(reservation, Decimal("0.09"))
        return True

    outcomes = await asyncio.gather(*(request(index) for index in range(50)))
    admitted = sum(outcomes)
    # 10 reservations of 0.095 fill the cap; an 11th fits only after ten have settled at 0.09
    assert admitted in (10, 11)
    counter = cap_checks(identity, NOON)[0].counter
    assert ledger.backend.snapshot(counter, NOON) == (90_000_000 * admitted, 0)  # settled <= 1.00, nothing left reserved


async def test_settling_replaces_the_reservation_with_the_actual_cost(ledger):
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("1.00"))
    first = await ledger.reserve(identity, Decimal("0.90"), "req-a")
    with pytest.raises(SpendCapReached):
        await ledger.reserve(identity, Decimal("0.90"), "req-b")
    await ledger.settle(first, Decimal("0.10"))
    await ledger.reserve(identity, Decimal("0.90"), "req-c")  # 0.10 settled + 0.90 reserved = the cap exactly
    with pytest.raises(SpendCapReached):
        await ledger.reserve(identity, Decimal("0.000000001"), "req-d")


async def test_release_frees_the_reservation(ledger):
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("1.00"))
    first = await ledger.reserve(identity, Decimal("0.60"), "req-a")
    with pytest.raises(SpendCapReached):
        await ledger.reserve(identity, Decimal("0.60"), "req-b")
    await ledger.release(first)
    assert await ledger.reserve(identity, Decimal("0.60"), "req-c") is not None


async def test_an_unpriced_request_keeps_its_worst_case_as_spent(ledger):
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("1.00"))
    await ledger.settle(await ledger.reserve(identity, Decimal("0.70"), "req-a"), None)
    with pytest.raises(SpendCapReached):
        await ledger.reserve(identity, Decimal("0.40"), "req-b")


async def test_an_abandoned_reservation_expires(ledger, settings):
    settings.SPEND_RESERVATION_TTL_SECONDS = 600
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("1.00"))
    await ledger.reserve(identity, Decimal("0.90"), "req-crashed")
    ledger.clock.now = NOON + 599
    with pytest.raises(SpendCapReached):
        await ledger.reserve(identity, Decimal("0.20"), "req-b")
    ledger.clock.now = NOON + 600
    assert await ledger.reserve(identity, Decimal("0.20"), "req-c") is not None


async def test_the_organization_cap_binds_all_its_devices(ledger):
    org = fresh_pk()
    first = identity_with(device_pk=fresh_pk(), org_id=org, org_daily=Decimal("1.00"))
    second = identity_with(device_pk=fresh_pk(), org_id=org, org_daily=Decimal("1.00"))
    await ledger.settle(await ledger.reserve(first, Decimal("0.70"), "req-a"), Decimal("0.70"))
    with pytest.raises(SpendCapReached) as refused:
        await ledger.reserve(second, Decimal("0.40"), "req-b")
    assert refused.value.message == "Daily spend cap $1.00 for this organization: $0.70 spent, this request needs at least $0.40."
    assert await ledger.reserve(second, Decimal("0.30"), "req-c") is not None


async def test_a_refusal_details_the_cap_what_is_spent_in_flight_and_left(ledger):
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("1.00"))
    await ledger.settle(await ledger.reserve(identity, Decimal("0.87"), "req-a"), Decimal("0.87"))
    await ledger.reserve(identity, Decimal("0.05"), "req-b")
    with pytest.raises(SpendCapReached) as refused:
        await ledger.reserve(identity, Decimal("0.50"), "req-c", minimum=Decimal("0.30"))
    assert refused.value.message == (
        "Daily spend cap $1.00 for this device: $0.87 spent, $0.05 reserved by requests in flight, "
        "this request needs at least $0.30."
    )
    tomorrow = dt.datetime.fromtimestamp(NOON, UTC).replace(hour=0) + dt.timedelta(days=1)
    assert refused.value.details == {
        "scope": "device",
        "period": "day",
        "cap": "1",
        "spent": "0.87",
        "reserved_in_flight": "0.05",
        "remaining": "0.08",
        "request_estimate": "0.3",
        "resets_at": tomorrow.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


async def test_a_request_past_the_cap_is_granted_what_is_left_when_that_covers_its_minimum(ledger):
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("1.00"), org_id=fresh_pk(), org_daily=Decimal("2.00"))
    await ledger.settle(await ledger.reserve(identity, Decimal("0.40"), "req-a"), Decimal("0.40"))
    granted = await ledger.reserve(identity, Decimal("2.10"), "req-b", minimum=Decimal("0.05"))
    assert granted.amount == Decimal("0.60")
    with pytest.raises(SpendCapReached):
        await ledger.reserve(identity, Decimal("2.10"), "req-c", minimum=Decimal("0.000000001"))
    assert current_spend_of(ledger, "device", identity.device_pk) == (Decimal("0.40"), Decimal("0.60"))
    assert current_spend_of(ledger, "org", identity.org_id) == (Decimal("0.40"), Decimal("0.60"))  # not the 1.60 it had room for


async def test_a_refusal_by_the_organization_cap_leaves_nothing_reserved_for_the_device(ledger):
    org = fresh_pk()
    other = identity_with(device_pk=fresh_pk(), org_id=org, org_daily=Decimal("1.00"))
    await ledger.settle(await ledger.reserve(other, Decimal("0.90"), "req-a"), Decimal("0.90"))
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("5.00"), org_id=org, org_daily=Decimal("1.00"))
    with pytest.raises(SpendCapReached) as refused:
        await ledger.reserve(identity, Decimal("0.50"), "req-b")
    assert refused.value.details["scope"] == "org"
    assert current_spend_of(ledger, "device", identity.device_pk) == (Decimal(0), Decimal(0))


async def test_the_counters_of_two_organizations_are_kept_in_different_slots(redis_required):
    ledger = SpendLedger(backend=RedisSpendBackend(), clock=FakeClock(NOON))
    orgs = [fresh_pk()]
    while len(orgs) < 2:  # two organizations whose hash tags differ in slot (all but 1 in 16,384 pairs)
        candidate = fresh_pk()
        if key_slot(f"{{spend:org:{candidate}}}".encode()) != key_slot(f"{{spend:org:{orgs[0]}}}".encode()):
            orgs.append(candidate)
    for org in orgs:
        await ledger.reserve(
            identity_with(device_pk=fresh_pk(), org_id=org, org_monthly=Decimal("1.00")), Decimal("0.10"), "req-a"
        )
    client = get_sync_redis()
    stored = [list(client.scan_iter(redis_key(f"{{spend:org:{org}}}:*"))) for org in orgs]
    assert [len(keys) for keys in stored] == [1, 1]
    assert [key_slot(keys[0]) for keys in stored] == [key_slot(f"{{spend:org:{org}}}".encode()) for org in orgs]


def moved(identity, *, org_id, person_id=None):
    """The same device as a process sees it once its organization (and person) changed."""
    return dataclasses.replace(identity, org_id=org_id, person_id=person_id)


def month_spend_of(ledger: SpendLedger, scope: str, pk: int) -> tuple[Decimal, Decimal]:
    counter = counter_for(scope, pk, "month", dt.datetime.fromtimestamp(ledger.clock.now, UTC))
    settled, reserved = ledger.backend.snapshot(counter, ledger.clock.now)
    return from_nanos(settled), from_nanos(reserved)


async def test_moving_a_device_to_another_organization_keeps_its_months_spend(ledger):
    first_org, second_org = fresh_pk(), fresh_pk()
    identity = identity_with(device_pk=fresh_pk(), device_monthly=Decimal("1.00"), org_id=first_org, org_monthly=Decimal("5.00"))
    await ledger.settle(await ledger.reserve(identity, Decimal("0.80"), "req-a"), Decimal("0.70"))
    identity = moved(identity, org_id=second_org)
    with pytest.raises(SpendCapReached) as refused:
        await ledger.reserve(identity, Decimal("0.40"), "req-b")
    assert (refused.value.details["scope"], refused.value.details["spent"]) == ("device", "0.7")
    await ledger.reserve(identity, Decimal("0.30"), "req-c")
    assert month_spend_of(ledger, "device", identity.device_pk) == (Decimal("0.70"), Decimal("0.30"))
    assert month_spend_of(ledger, "org", first_org) == (Decimal("0.70"), Decimal(0))  # what it spent there stays there
    assert month_spend_of(ledger, "org", second_org) == (Decimal(0), Decimal("0.30"))


async def test_moving_a_device_to_another_person_keeps_its_months_spend(ledger):
    first_person, second_person = fresh_pk(), fresh_pk()
    identity = identity_with(
        device_pk=fresh_pk(), device_monthly=Decimal("1.00"), person_id=first_person, person_monthly=Decimal("5.00")
    )
    await ledger.settle(await ledger.reserve(identity, Decimal("0.60"), "req-a"), Decimal("0.60"))
    identity = moved(identity, org_id=None, person_id=second_person)
    with pytest.raises(SpendCapReached):
        await ledger.reserve(identity, Decimal("0.50"), "req-b")
    await ledger.settle(await ledger.reserve(identity, Decimal("0.40"), "req-c"), Decimal("0.40"))
    assert month_spend_of(ledger, "device", identity.device_pk) == (Decimal("1.00"), Decimal(0))
    assert month_spend_of(ledger, "person", first_person) == (Decimal("0.60"), Decimal(0))
    assert month_spend_of(ledger, "person", second_person) == (Decimal("0.40"), Decimal(0))


async def test_a_reservation_made_before_a_move_settles_where_it_was_reserved(ledger):
    first_org, second_org = fresh_pk(), fresh_pk()
    identity = identity_with(device_pk=fresh_pk(), device_monthly=Decimal("1.00"), org_id=first_org, org_monthly=Decimal("5.00"))
    before = await ledger.reserve(identity, Decimal("0.50"), "req-a")
    after = await ledger.reserve(moved(identity, org_id=second_org), Decimal("0.50"), "req-b")
    await ledger.settle(before, Decimal("0.20"))
    await ledger.settle(after, Decimal("0.30"))
    assert month_spend_of(ledger, "device", identity.device_pk) == (Decimal("0.50"), Decimal(0))
    assert month_spend_of(ledger, "org", first_org) == (Decimal("0.20"), Decimal(0))
    assert month_spend_of(ledger, "org", second_org) == (Decimal("0.30"), Decimal(0))


async def test_concurrent_reservations_around_a_move_never_pass_the_device_cap(ledger):
    """Processes whose cached policy still names the old organization and person reserve alongside
    those that see the new ones: the device's cap binds them all, and every cent lands once."""
    first_org, second_org, first_person, second_person = (fresh_pk() for _ in range(4))
    before = identity_with(
        device_pk=fresh_pk(),
        device_monthly=Decimal("1.00"),
        org_id=first_org,
        org_monthly=Decimal("50.00"),
        person_id=first_person,
        person_monthly=Decimal("50.00"),
    )
    after = moved(before, org_id=second_org, person_id=second_person)

    async def request(index: int) -> str | None:
        identity = before if index % 2 else after
        try:
            reservation = await ledger.reserve(identity, Decimal("0.05"), f"req-{index}")
        except SpendCapReached:
            return None
        await asyncio.sleep(0)
        await ledger.settle(reservation, Decimal("0.05"))
        return "before" if identity is before else "after"

    outcomes = await asyncio.gather(*(request(index) for index in range(60)))
    admitted = [outcome for outcome in outcomes if outcome is not None]
    assert len(admitted) == 20  # 20 × 0.05 is the cap exactly
    assert month_spend_of(ledger, "device", before.device_pk) == (Decimal("1.00"), Decimal(0))
    on_each = {side: Decimal("0.05") * admitted.count(side) for side in ("before", "after")}
    assert (
        month_spend_of(ledger, "org", first_org)
        == month_spend_of(ledger, "person", first_person)
        == (on_each["before"], Decimal(0))
    )
    assert (
        month_spend_of(ledger, "org", second_org)
        == month_spend_of(ledger, "person", second_person)
        == (on_each["after"], Decimal(0))
    )


async def test_a_soft_cap_reserves_past_the_cap_and_never_refuses(ledger):
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("1.00"))
    await ledger.reserve(identity, Decimal("0.90"), "req-a", soft=True)
    granted = await ledger.reserve(identity, Decimal("0.90"), "req-b", soft=True)
    assert granted.amount == Decimal("0.90")
    assert current_spend_of(ledger, "device", identity.device_pk) == (Decimal(0), Decimal("1.80"))


async def test_the_weekly_cap_runs_monday_to_monday_utc(ledger):
    identity = identity_with(device_pk=fresh_pk(), device_weekly=Decimal("1.00"))
    noon = dt.datetime.fromtimestamp(NOON, UTC)
    monday = (noon - dt.timedelta(days=noon.weekday())).replace(hour=0)
    ledger.clock.now = (monday + dt.timedelta(days=7, seconds=-1)).timestamp()
    await ledger.settle(await ledger.reserve(identity, Decimal("0.90"), "req-a"), Decimal("0.90"))
    with pytest.raises(SpendCapReached) as refused:
        await ledger.reserve(identity, Decimal("0.20"), "req-b")
    assert refused.value.details["period"] == "week"
    assert refused.value.details["resets_at"] == (monday + dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ledger.clock.now = (monday + dt.timedelta(days=7)).timestamp()
    assert await ledger.reserve(identity, Decimal("0.90"), "req-c") is not None


def current_spend_of(ledger: SpendLedger, scope: str, pk: int) -> tuple[Decimal, Decimal]:
    counter = counter_for(scope, pk, "day", dt.datetime.fromtimestamp(ledger.clock.now, UTC))
    settled, reserved = ledger.backend.snapshot(counter, ledger.clock.now)
    return from_nanos(settled), from_nanos(reserved)


async def test_the_monthly_cap_spans_days_and_the_daily_cap_resets_at_utc_midnight(ledger):
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("1.00"), device_monthly=Decimal("1.50"))
    ledger.clock.now = (MONTH + dt.timedelta(days=24, seconds=-1)).timestamp()
    await ledger.settle(await ledger.reserve(identity, Decimal("0.90"), "req-a"), Decimal("0.90"))
    with pytest.raises(SpendCapReached):
        await ledger.reserve(identity, Decimal("0.20"), "req-b")
    ledger.clock.now = (MONTH + dt.timedelta(days=24)).timestamp()
    await ledger.settle(await ledger.reserve(identity, Decimal("0.50"), "req-c"), Decimal("0.50"))
    with pytest.raises(SpendCapReached) as refused:
        await ledger.reserve(identity, Decimal("0.20"), "req-d")
    assert refused.value.message == "Monthly spend cap $1.50 for this device: $1.40 spent, this request needs at least $0.20."
    ledger.clock.now = MONTH_AFTER.timestamp()
    assert await ledger.reserve(identity, Decimal("0.90"), "req-e") is not None


def test_a_refusal_is_a_429_that_clients_must_not_retry():
    response = error_response(SpendCapReached("Daily spend cap of $1.00 reached for this device."), "req_x")
    assert response.status_code == 429
    assert response["x-should-retry"] == "false"
    assert b'"error_code":"spend_cap_reached"' in response.content
    assert b'"type":"rate_limit_error"' in response.content


async def test_module_functions_reserve_against_the_configured_backend(transactional_db):
    identity = identity_with(device_pk=fresh_pk(), device_daily=Decimal("0.50"))
    outcomes = []
    for index in range(3):
        try:
            await settle_spend(await reserve_spend(identity, Decimal("0.20"), f"req-{index}"), Decimal("0.20"))
            outcomes.append(True)
        except SpendCapReached:
            outcomes.append(False)
    assert outcomes == [True, True, False]
    assert current_spend("device", identity.device_pk, "day") == (Decimal("0.4"), Decimal(0))


@pytest.mark.django_db
def test_counters_are_reconciled_from_the_database(prices):
    device_pk, org_pk = fresh_pk(), fresh_pk()
    today = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for index in range(3):
        # Sonnet 4.5: 10,000 output tokens at 15 = 0.15 each
        submit_usage(
            usage_event(
                request_id=f"req-rec-{index}", occurred_at=today, device_pk=device_pk, org_id=org_pk, output_tokens=10_000
            )
        )
    drain_usage_queue()
    assert current_spend("device", device_pk, "day") == (Decimal(0), Decimal(0))
    assert reconcile_spend_counters() >= 4
    assert current_spend("device", device_pk, "day")[0] == Decimal("0.45")
    assert current_spend("org", org_pk, "month")[0] == Decimal("0.45")


async def test_a_fresh_process_starts_from_what_the_database_recorded(live_prices):
    device_pk = fresh_pk()
    today = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # Sonnet 4.5: 63,000 output tokens at 15 = 0.945
    submit_usage(usage_event(request_id="req-spent", occurred_at=today, device_pk=device_pk, output_tokens=63_000))
    await flush_usage()
    await stop_usage_writer()
    ledger = SpendLedger(backend=LocalSpendBackend(totals_loader=database_totals))
    identity = identity_with(device_pk=device_pk, device_daily=Decimal("1.00"))
    with pytest.raises(SpendCapReached):
        await ledger.reserve(identity, Decimal("0.06"), "req-after-restart")
    assert await ledger.reserve(identity, Decimal("0.055"), "req-fits") is not None


@pytest.mark.django_db
def test_reconciliation_never_lowers_a_counter(prices):
    device_pk = fresh_pk()
    identity = identity_with(device_pk=device_pk, device_daily=Decimal("10"))
    asyncio.run(settle_spend(asyncio.run(reserve_spend(identity, Decimal("1"), "req-a")), Decimal("0.75")))
    reconcile_spend_counters()
    assert current_spend("device", device_pk, "day")[0] == Decimal("0.75")


def test_caps_hold_across_two_processes_on_one_redis(redis_required):
    device_pk = fresh_pk()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.usage.spend_process", str(device_pk), "1.00", "0.095", "25", "0.09"],
            cwd=servers.BASE_DIR,
            env=servers.server_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [process.stdout.readline().strip() for process in processes]
        for process in processes:
            process.wait(timeout=30)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    counts = [dict(part.split("=") for part in result.split()) for result in results]
    admitted = sum(int(count["reserved"]) for count in counts)
    assert admitted + sum(int(count["refused"]) for count in counts) == 50
    # Ten 0.095 reservations fill the 1.00 cap; each settles 0.005 lower, so once ten have settled
    # (0.90) an eleventh fits (0.995), a twelfth never does (0.99 + 0.095).
    assert admitted in (10, 11)
    settled, reserved = current_spend("device", device_pk, "day")
    assert (settled, reserved) == (Decimal("0.09") * admitted, Decimal(0))
    assert settled <= Decimal("1.00")
