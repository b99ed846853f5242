"""Periodic usage work, scheduled in proxyproject/celery.py: draining what gateway processes left
queued, rolling up recent buckets, reconciling spend counters, pruning old raw records."""

from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.utils import timezone

from usage.budget_sweep import sweep_budget_alerts
from usage.rollups import prune_usage_records, rollup_usage
from usage.spend import reconcile_spend_counters
from usage.writer import drain_usage_queue

RECENT_WINDOW = dt.timedelta(hours=2)


@shared_task(name="usage.drain_usage_queue")
def drain_usage_queue_task() -> int:
    """Each gateway process drains its own queue; this picks up what a dead process left behind."""
    return drain_usage_queue()


@shared_task(name="usage.rollup_recent_usage")
def rollup_recent_usage() -> dict[str, int]:
    """Rebuild the last two hours' hour buckets and the day buckets they fall in, reconcile the
    spend counters from the records they counted, and record any budget alert they reach."""
    now = timezone.now()
    summary = rollup_usage(now - RECENT_WINDOW, now)
    counters = reconcile_spend_counters()
    alerts = sweep_budget_alerts()
    return {
        "records": summary.records,
        "hour_rows": summary.rows["hour"],
        "day_rows": summary.rows["day"],
        "spend_counters": counters,
        "budget_alerts": alerts,
    }


@shared_task(name="usage.prune_usage_records")
def prune_usage_records_task() -> int:
    return prune_usage_records()
