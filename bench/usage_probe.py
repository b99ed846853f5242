"""The timings of `make bench-usage`, taken inside one Django process pointed at the loaded
database (its DATABASE_URL); prints one JSON object. Run by `bench.usage`, not by hand.

Each page goes through Django's test client, so the time is the whole view: queries, template,
admin machinery. Each is warmed once, then timed `--repetitions` times; the median is reported.
The dashboard is timed twice: as it is served (complete days' sums cached), and with the cache
emptied before each view (what the first view after a rollup pays).
The writer gets bursts of new records through `store_payloads` (what the usage writer does with a
claimed batch: decode, price, insert idempotently), batch by batch at USAGE_BATCH_SIZE.
Retention comes last, as it removes data: the oldest month by dropping its partition, the next
oldest by the chunked delete, for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable

import django

BURST_PREFIX = "bench-burst-"


def _median_seconds(action: Callable[[], object], repetitions: int) -> float:
    action()
    times = []
    for _ in range(repetitions):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _ok(response) -> None:  # noqa: ANN001 - a Django test response
    if response.status_code != 200:
        raise SystemExit(f"{response.request['PATH_INFO']} answered {response.status_code}: {response.content[:300]!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--skip-retention", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxyproject.settings")
    django.setup()

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db.models import Count
    from django.test import Client
    from django.utils import timezone

    from tokens.models import Device
    from tokens.operators import create_operator_api_key
    from usage import queue
    from usage.events import UsageEvent
    from usage.models import UsageRecord
    from usage.partitions import month_partitions, usage_table_is_partitioned
    from usage.records import store_payloads

    figures: dict[str, object] = {"records": UsageRecord.objects.count(), "partitioned": usage_table_is_partitioned()}
    staff = Client(HTTP_HOST="localhost")
    user, _ = get_user_model().objects.get_or_create(username="bench-usage", defaults={"is_staff": True, "is_superuser": True})
    staff.force_login(user)
    _key, secret = create_operator_api_key(name=f"bench-usage-{secrets.token_hex(3)}", created_by=None)
    since = timezone.now() - dt.timedelta(days=30)
    busiest = (
        UsageRecord.objects.filter(occurred_at__gte=since).values("device_ref").annotate(n=Count("id")).order_by("-n").first()
    )
    device_ref = busiest["device_ref"] if busiest else ""
    figures["device"] = device_ref
    figures["device_records_30d"] = busiest["n"] if busiest else 0

    def dashboard_without_cache() -> None:
        cache.clear()
        _ok(staff.get("/admin/usage/usagerecord/dashboard/", {"period": "30d"}))

    figures["dashboard_30d_cold_s"] = _median_seconds(dashboard_without_cache, args.repetitions)
    figures["dashboard_30d_s"] = _median_seconds(
        lambda: _ok(staff.get("/admin/usage/usagerecord/dashboard/", {"period": "30d"})), args.repetitions
    )
    figures["admin_usage_device_s"] = _median_seconds(
        lambda: _ok(staff.get("/admin/usage", {"device": device_ref}, HTTP_AUTHORIZATION=f"Bearer {secret}")),
        args.repetitions,
    )
    figures["admin_usage_device_by_day_s"] = _median_seconds(
        lambda: _ok(staff.get("/admin/usage", {"device": device_ref, "group_by": "day"}, HTTP_AUTHORIZATION=f"Bearer {secret}")),
        args.repetitions,
    )
    figures["admin_list_s"] = _median_seconds(lambda: _ok(staff.get("/admin/usage/usagerecord/")), args.repetitions)
    figures["admin_list_device_s"] = _median_seconds(
        lambda: _ok(staff.get("/admin/usage/usagerecord/", {"device_ref": device_ref})), args.repetitions
    )

    device = Device.objects.get(device_id=device_ref) if device_ref else Device.objects.first()
    rates = []
    for _ in range(args.repetitions):
        now = timezone.now()
        payloads = [
            queue.encode_event(
                UsageEvent(
                    request_id=f"{BURST_PREFIX}{secrets.token_hex(8)}",
                    occurred_at=now,
                    endpoint="/v1/messages",
                    method="POST",
                    device_id=device.device_id,
                    device_pk=device.pk,
                    org_id=device.organization_id,
                    model="claude-sonnet-4-5-20250929",
                    status=200,
                    input_tokens=1200,
                    output_tokens=340,
                    cache_read_tokens=20_000,
                    latency_ms=900.0,
                )
            )
            for _ in range(args.burst)
        ]
        started = time.perf_counter()
        for start in range(0, len(payloads), settings.USAGE_BATCH_SIZE):
            store_payloads(payloads[start : start + settings.USAGE_BATCH_SIZE])
        rates.append(len(payloads) / (time.perf_counter() - started))
    figures["writer_records_per_s"] = statistics.median(rates)
    UsageRecord.objects.filter(
        request_id__startswith=BURST_PREFIX, occurred_at__gte=since
    ).delete()  # a kept database stays as loaded

    if not args.skip_retention:
        figures.update(_retention(month_partitions()))
    json.dump(figures, sys.stdout)


def _retention(months: list) -> dict[str, object]:  # noqa: ANN001
    """The oldest month dropped as a partition, the next deleted in chunks; both timed."""
    from usage.models import UsageRecord
    from usage.partitions import drop_months_before
    from usage.retention import delete_in_chunks

    if len(months) < 2:
        return {}
    started = time.perf_counter()
    dropped = drop_months_before(months[0].end)
    figures: dict[str, object] = {
        "retention_partition_records": dropped.records,
        "retention_partition_s": time.perf_counter() - started,
        "retention_partition_lock_s": max((month.seconds_locked for month in dropped.months), default=0.0),
    }
    second = months[1]
    started = time.perf_counter()
    deletion = delete_in_chunks(UsageRecord.objects.filter(occurred_at__gte=second.start, occurred_at__lt=second.end))
    figures["retention_batched_records"] = deletion.records
    figures["retention_batched_s"] = time.perf_counter() - started
    figures["retention_batched_longest_chunk_s"] = deletion.longest_chunk_s
    return figures


if __name__ == "__main__":
    main()
