"""Hourly and daily rollups per device and model, rebuilt idempotently for any period; pruning of
raw records; the Celery tasks and their beat entries."""

from __future__ import annotations

import datetime as dt
import io
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from proxyproject.celery import app as celery_app
from tests import servers
from tests.usage.cast import usage_event
from usage.models import UsageRecord, UsageRollup
from usage.retention import prune_usage_records
from usage.rollups import nearest_rank
from usage.tasks import drain_usage_queue_task, prune_usage_records_task, rollup_recent_usage
from usage.writer import drain_usage_queue, submit_usage

pytestmark = pytest.mark.usefixtures("prices")


@pytest.fixture
def yesterday() -> dt.datetime:
    return (timezone.now() - dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def record(at: dt.datetime, **fields: object) -> None:
    submit_usage(usage_event(occurred_at=at, **fields))


def run_rollup(since: dt.datetime, until: dt.datetime, out: io.StringIO | None = None, err: io.StringIO | None = None) -> None:
    call_command(
        "rollup_usage", since=since.isoformat(), until=until.isoformat(), stdout=out or io.StringIO(), stderr=err or io.StringIO()
    )


def rollup_rows(period: str) -> dict[tuple, tuple]:
    return {
        (r.bucket_start, r.device_ref, r.model): (
            r.requests,
            r.errors,
            r.unpriced_requests,
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cost,
            r.latency_p50_ms,
            r.latency_p95_ms,
            r.latency_p99_ms,
        )
        for r in UsageRollup.objects.filter(period=period)
    }


@pytest.fixture
def traffic(yesterday):
    ten, eleven = yesterday.replace(hour=10), yesterday.replace(hour=11)
    sonnet, haiku = "claude-sonnet-4-5", "claude-haiku-4-5"
    for minute, latency, status in ((1, 100.0, 200), (2, 300.0, 200), (3, 200.0, 529)):
        record(
            ten.replace(minute=minute),
            device_id="alpha",
            device_pk=1,
            model=sonnet,
            status=status,
            latency_ms=latency,
            input_tokens=1000,
            output_tokens=100,
            cache_read_tokens=500,
        )
    record(
        eleven.replace(minute=5), device_id="alpha", device_pk=1, model=sonnet, latency_ms=50.0, input_tokens=10, output_tokens=10
    )
    record(
        ten.replace(minute=30), device_id="beta", device_pk=2, model=haiku, latency_ms=80.0, input_tokens=2000, output_tokens=200
    )
    record(ten.replace(minute=31), device_id="beta", device_pk=2, model="mystery-model", latency_ms=90.0, input_tokens=7)
    drain_usage_queue()
    return ten, eleven


def test_buckets_per_hour_and_day_per_device_and_model(traffic, yesterday):
    ten, eleven = traffic
    run_rollup(ten, eleven + dt.timedelta(hours=1))
    # Sonnet 4.5: 1000*3 + 100*15 + 500*0.30 = 4,650 per request
    assert rollup_rows("hour") == {
        (ten, "alpha", "claude-sonnet-4-5"): (3, 1, 0, 3000, 300, 1500, Decimal("0.01395"), 200.0, 300.0, 300.0),
        (eleven, "alpha", "claude-sonnet-4-5"): (1, 0, 0, 10, 10, 0, Decimal("0.00018"), 50.0, 50.0, 50.0),
        (ten, "beta", "claude-haiku-4-5"): (1, 0, 0, 2000, 200, 0, Decimal("0.003"), 80.0, 80.0, 80.0),
        (ten, "beta", "mystery-model"): (1, 0, 1, 7, 0, 0, Decimal("0"), 90.0, 90.0, 90.0),
    }
    assert rollup_rows("day") == {
        (yesterday, "alpha", "claude-sonnet-4-5"): (4, 1, 0, 3010, 310, 1500, Decimal("0.01413"), 100.0, 300.0, 300.0),
        (yesterday, "beta", "claude-haiku-4-5"): (1, 0, 0, 2000, 200, 0, Decimal("0.003"), 80.0, 80.0, 80.0),
        (yesterday, "beta", "mystery-model"): (1, 0, 1, 7, 0, 0, Decimal("0"), 90.0, 90.0, 90.0),
    }


def test_rerunning_a_period_replaces_it_exactly(traffic, yesterday):
    ten, _ = traffic
    run_rollup(ten, ten + dt.timedelta(hours=1))
    first = rollup_rows("hour")
    run_rollup(ten, ten + dt.timedelta(hours=1))
    assert rollup_rows("hour") == first
    record(ten.replace(minute=59), device_id="beta", device_pk=2, model="claude-haiku-4-5", latency_ms=120.0, input_tokens=1000)
    drain_usage_queue()
    run_rollup(ten, ten + dt.timedelta(hours=1))
    assert rollup_rows("hour")[(ten, "beta", "claude-haiku-4-5")] == (2, 0, 0, 3000, 200, 0, Decimal("0.004"), 80.0, 120.0, 120.0)
    assert UsageRollup.objects.filter(period="hour").count() == 3


def test_the_command_reports_progress_and_a_summary(traffic):
    ten, eleven = traffic
    out, err = io.StringIO(), io.StringIO()
    end = eleven + dt.timedelta(hours=1)
    minute = "%Y-%m-%dT%H:%M"
    call_command("rollup_usage", since=ten.strftime(minute), until=end.strftime(minute), stdout=out, stderr=err)
    text = out.getvalue()
    assert f"Rolling up usage from {ten:%Y-%m-%d %H:%M} to {eleven + dt.timedelta(hours=1):%Y-%m-%d %H:%M} UTC" in text
    assert "Rebuilt 3 buckets from 6 records in " in text
    assert err.getvalue() == "buckets: 3/3 done\n"
    rows = [line.split() for line in text.splitlines()]
    assert ["hour", "4"] in rows and ["day", "3"] in rows


def test_buckets_older_than_retention_are_left_alone(traffic, settings, monkeypatch):
    ten, _ = traffic
    run_rollup(ten, ten + dt.timedelta(hours=1))
    settings.USAGE_RETENTION_DAYS = 1
    # A day and two hours after the traffic, whatever the time of day the suite runs at.
    monkeypatch.setattr("usage.rollups.timezone.now", lambda: ten + dt.timedelta(days=1, hours=2))
    UsageRecord.objects.all().delete()
    out = io.StringIO()
    run_rollup(ten - dt.timedelta(days=3), ten + dt.timedelta(hours=1), out)
    assert "older than USAGE_RETENTION_DAYS" in out.getvalue()
    assert UsageRollup.objects.filter(period="hour", bucket_start=ten).count() == 3


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert (nearest_rank(values, 0.50), nearest_rank(values, 0.95), nearest_rank(values, 0.99)) == (50.0, 95.0, 99.0)
    assert nearest_rank([], 0.5) == 0.0


def test_pruning_deletes_only_records_past_retention(settings):
    settings.USAGE_RETENTION_DAYS = 30
    now = timezone.now()
    record(now - dt.timedelta(days=31), request_id="req_old_1")
    record(now - dt.timedelta(days=45), request_id="req_old_2")
    record(now - dt.timedelta(days=29), request_id="req_recent")
    drain_usage_queue()
    assert prune_usage_records(chunk=1) == 2
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["req_recent"]


def test_tasks_drain_roll_up_and_prune(settings):
    now = timezone.now()
    record(now - dt.timedelta(minutes=5), request_id="req_task", device_id="gamma", device_pk=7, output_tokens=1000)
    record(now - dt.timedelta(days=settings.USAGE_RETENTION_DAYS + 1), request_id="req_ancient")
    assert drain_usage_queue_task.apply().get() == 2
    result = rollup_recent_usage.apply().get()
    assert (result["records"], result["hour_rows"], result["day_rows"]) == (1, 1, 1)
    assert prune_usage_records_task.apply().get() == 1


def test_beat_runs_every_usage_task():
    schedule = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    assert {"usage.drain_usage_queue", "usage.rollup_recent_usage", "usage.prune_usage_records"} <= schedule
    assert {"usage.drain_usage_queue", "usage.rollup_recent_usage", "usage.prune_usage_records"} <= set(celery_app.tasks)


def test_the_tasks_run_on_a_real_worker(redis_required, live_prices, settings):
    """Once, through the real broker: a Celery worker process drains the queue and rolls up."""
    now = timezone.now()
    for index in range(3):
        record(now - dt.timedelta(minutes=1), request_id=f"req_worker_{index}", device_id="delta", output_tokens=100)
    worker = servers.celery_worker_process(USAGE_SPOOL_DIR=str(settings.USAGE_SPOOL_DIR))
    try:
        drain_usage_queue_task.delay()
        wait_until(lambda: UsageRecord.objects.filter(device_ref="delta").count() == 3)
        rollup_recent_usage.delay()
        wait_until(lambda: UsageRollup.objects.filter(device_ref="delta", period="hour").exists())
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert sum(UsageRollup.objects.filter(device_ref="delta", period="hour").values_list("requests", flat=True)) == 3


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the worker did not get there in time"
        time.sleep(0.1)
