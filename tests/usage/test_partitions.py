"""Monthly partitions of the usage table on PostgreSQL: retention drops exactly the old months, the
writer stays idempotent by request id, records outside every month wait in the default partition."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from django.db import connection

from tests import servers
from tests.usage.cast import usage_event
from usage import queue
from usage.models import UsageRecord, UsageRollup
from usage.partitions import DEFAULT_PARTITION, MonthPartition, ensure_month_partitions, month_partitions
from usage.records import store_events, store_payloads
from usage.retention import prune_usage_records
from usage.rollups import Bucket, RollupPeriod, _rollup_bucket_in_python, _rollup_bucket_in_sql

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the usage table is partitioned on PostgreSQL only"),
    pytest.mark.usefixtures("prices"),
]
UTC = dt.UTC


def at(year: int, month: int, day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


def rows_in(partition: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT COUNT(*) FROM "{partition}"')
        return cursor.fetchone()[0]


def store(*moments: dt.datetime) -> None:
    store_events([usage_event(request_id=f"req_{moment:%Y%m%d%H}", occurred_at=moment) for moment in moments])


def test_the_usage_table_is_partitioned_by_month_after_migrating():
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [UsageRecord._meta.db_table])
        assert cursor.fetchone()[0] == "p"
    ensure_month_partitions(first=at(2026, 11, 1), last=at(2026, 11, 1))
    store(at(2026, 11, 25))
    assert rows_in("usage_usagerecord_y2026m11") == 1


def test_retention_drops_the_months_before_the_cutoff_and_deletes_the_rest_older_than_it(settings):
    settings.USAGE_RETENTION_DAYS = 30
    ensure_month_partitions(first=at(2026, 8, 1), last=at(2026, 11, 1))
    store(at(2026, 8, 10), at(2026, 8, 20), at(2026, 9, 30, 23), at(2026, 10, 5), at(2026, 10, 20), at(2026, 11, 2))
    now = at(2026, 11, 15)  # cutoff 2026-10-16 12:00

    assert prune_usage_records(now=now) == 4

    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["req_2026102012", "req_2026110212"]
    names = {month.name for month in month_partitions()}
    assert {"usage_usagerecord_y2026m08", "usage_usagerecord_y2026m09"}.isdisjoint(names)
    assert {"usage_usagerecord_y2026m10", "usage_usagerecord_y2026m11"} <= names


def test_retention_makes_the_coming_months_partitions(settings):
    prune_usage_records(now=at(2031, 5, 10))
    names = {month.name for month in month_partitions()}
    assert {"usage_usagerecord_y2031m05", "usage_usagerecord_y2031m06", "usage_usagerecord_y2031m07"} <= names


def test_a_record_outside_every_month_waits_in_the_default_partition_until_its_month_is_made():
    far = at(2040, 3, 3)
    store(far)
    assert rows_in(DEFAULT_PARTITION) == 1

    ensure_month_partitions(first=far, last=far)

    assert rows_in(DEFAULT_PARTITION) == 0
    assert rows_in(MonthPartition(at(2040, 3, 1, 0)).name) == 1
    assert UsageRecord.objects.get(request_id="req_2040030312").occurred_at == far


def test_a_duplicate_submit_stores_one_row_in_the_partitioned_table():
    payload = queue.encode_event(usage_event(request_id="req_twice", output_tokens=10))
    store_payloads([payload])
    store_payloads([payload, payload])
    assert UsageRecord.objects.filter(request_id="req_twice").count() == 1


def test_a_batch_result_fetched_again_a_month_later_stays_one_row():
    created = at(2026, 10, 30)
    first = usage_event(request_id="batch_res_1", occurred_at=at(2026, 10, 31, 23), priced_at=created, output_tokens=100)
    again = usage_event(request_id="batch_res_1", occurred_at=at(2026, 11, 2), priced_at=created, output_tokens=100)
    store_events([first])
    store_events([again])
    assert list(UsageRecord.objects.filter(request_id="batch_res_1").values_list("occurred_at", flat=True)) == [first.occurred_at]


def test_the_sql_rollup_writes_the_rows_the_python_rollup_writes():
    moments = [at(2026, 11, 25, 10) + dt.timedelta(minutes=minute) for minute in range(0, 60, 7)]
    store_events(
        [
            usage_event(
                request_id=f"req_{index}",
                occurred_at=moment,
                device_id=f"dev-{index % 2}",
                device_pk=index % 2 + 1,
                model="claude-sonnet-4-5-20250929" if index % 3 else "claude-unknown-model",
                latency_ms=float(100 + index * 37 % 11),
                status=500 if index == 4 else 200,
                input_tokens=100 * index,
                output_tokens=7 * index,
            )
            for index, moment in enumerate(moments)
        ]
    )
    bucket = Bucket(RollupPeriod.HOUR, at(2026, 11, 25, 10))
    fields = (
        "device_ref",
        "model",
        "requests",
        "errors",
        "unpriced_requests",
        "cost",
        "input_tokens",
        "output_tokens",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
    )

    def rollup_rows() -> list[tuple]:
        return list(bucket_rows.order_by("device_ref", "model").values_list(*fields))

    bucket_rows = UsageRollup.objects.filter(period=bucket.period, bucket_start=bucket.start)
    assert _rollup_bucket_in_python(bucket) == (9, 4)
    in_python = rollup_rows()
    assert _rollup_bucket_in_sql(bucket) == (9, 4)
    assert rollup_rows() == in_python
    assert sum(row[5] for row in in_python) > Decimal(0)


def test_retention_postpones_a_month_whose_lock_does_not_come_and_deletes_nothing_row_by_row(
    transactional_db, settings, monkeypatch
):
    settings.USAGE_RETENTION_DAYS = 30
    monkeypatch.setattr("usage.partitions.DETACH_LOCK_TIMEOUT", "200ms")
    ensure_month_partitions(first=at(2026, 8, 1), last=at(2026, 9, 1))
    store(at(2026, 8, 10), at(2026, 9, 10))
    with psycopg.connect(servers.test_database_url()) as reader:
        reader.execute("SELECT COUNT(*) FROM usage_usagerecord_y2026m08").fetchone()  # holds its lock until the end

        assert prune_usage_records(now=at(2026, 11, 15)) == 0

    assert UsageRecord.objects.count() == 2
    assert prune_usage_records(now=at(2026, 11, 15)) == 2
