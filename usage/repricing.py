"""Repricing recorded usage after an operator changes a price retroactively: each record's cost and
its basis recomputed from the table as it is now, then the rollups of the changed period rebuilt and
the live spend counters moved by the difference. The command, the admin page and
POST /admin/usage/reprice all call `reprice_usage`; a dry run computes and reports the same difference and writes nothing.

Each record is priced at the moment its basis names (`pricing.at`: a batch result's batch creation),
or at `occurred_at` for a record stored before costs kept their basis.

Spend counters: only the current UTC day's and month's counters matter to the caps, so only changes
to records of those periods move them, by the exact difference (never by reloading a total, which
would forget records still in the write queue). A record that was unpriced had its reservation's
worst case settled; its new cost is added on top, erring on the side of the cap. Shared counters
(REDIS_URL) change at once for every gateway process; the in-process counters of gateway processes
without Redis follow a rise within a minute and a fall at their next start.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from proxyproject.lib.backends import shared_state_backend
from usage.counts import TOKEN_FIELDS
from usage.events import UsageEvent
from usage.models import UsageRecord
from usage.pricing import PriceQuote, invalidate_price_table, quote_usage
from usage.rollups import PERIOD_LENGTH, rollup_usage
from usage.spend import Counter, counter_for, spend_backend, to_nanos

CHUNK = 2000
_FIELDS = (
    "pk",
    "request_id",
    "occurred_at",
    "endpoint",
    "method",
    "model",
    "status",
    *TOKEN_FIELDS,
    "service_tier",
    "speed",
    "inference_geo",
    "device_pk",
    "org_pk",
    "person_pk",
    "cost",
    "priced",
    "price_flag",
    "pricing",
)


@dataclass
class RepriceReport:
    since: dt.datetime
    until: dt.datetime
    dry_run: bool
    records: int = 0
    changed: int = 0
    cost_before: Decimal = Decimal(0)
    cost_after: Decimal = Decimal(0)
    newly_priced: int = 0
    newly_unpriced: int = 0
    by_model: dict[str, Decimal] = field(default_factory=dict)
    rollup_buckets: int = 0
    counters_adjusted: int = 0
    shared_counters: bool = False

    @property
    def difference(self) -> Decimal:
        return self.cost_after - self.cost_before

    def summary_lines(self) -> list[str]:
        """The difference, in the words the command and the admin page both show."""
        verb = "would change" if self.dry_run else "changed"
        lines = [
            (
                f"Records from {self.since:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M} UTC: {self.records:,} checked, "
                f"{self.changed:,} {verb}."
            ),
            f"Cost: {self.cost_before:.10f} -> {self.cost_after:.10f} USD (difference {self.difference:+.10f}).",
        ]
        if self.newly_priced or self.newly_unpriced:
            lines.append(f"Newly priced: {self.newly_priced:,}; newly unpriced: {self.newly_unpriced:,}.")
        if self.dry_run:
            lines.append("Dry run: nothing was written.")
        else:
            where = (
                "shared (Redis)"
                if self.shared_counters
                else ("in-process (no REDIS_URL: gateway processes follow a rise within a minute, a fall at their next start)")
            )
            lines.append(
                f"Rebuilt {self.rollup_buckets:,} rollup buckets; adjusted {self.counters_adjusted:,} {where} spend counters."
            )
        return lines


def event_of(record: UsageRecord) -> UsageEvent:
    """What pricing reads of a stored record, priced at the moment its basis names."""
    at = (record.pricing or {}).get("at")
    return UsageEvent(
        request_id=record.request_id,
        occurred_at=record.occurred_at,
        endpoint=record.endpoint,
        method=record.method,
        model=record.model or None,
        status=record.status,
        **{name: getattr(record, name) for name in TOKEN_FIELDS},
        service_tier=record.service_tier or None,
        speed=record.speed or None,
        inference_geo=record.inference_geo or None,
        priced_at=dt.datetime.fromisoformat(at) if at else None,
    )


def _differs(record: UsageRecord, quote: PriceQuote) -> bool:
    return (record.cost, record.price_flag, record.pricing) != (quote.cost, quote.flag, quote.basis())


class _CounterDeltas:
    """The nano-dollar change of each current day and month counter the changed records count toward."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        self.month_start = self.day_start.replace(day=1)
        self.deltas: dict[Counter, int] = defaultdict(int)

    def add(self, record: UsageRecord, new_cost: Decimal | None) -> None:
        delta = to_nanos(new_cost or Decimal(0)) - to_nanos(record.cost or Decimal(0))
        if not delta or record.occurred_at < self.month_start:
            return
        periods = ["month"] + (["day"] if record.occurred_at >= self.day_start else [])
        for scope, pk in (("device", record.device_pk), ("org", record.org_pk), ("person", record.person_pk)):
            if pk is not None:
                for period in periods:
                    self.deltas[counter_for(scope, pk, period, self.now)] += delta


def reprice_usage(*, since: dt.datetime, until: dt.datetime | None = None, dry_run: bool = False) -> RepriceReport:
    """Recompute the cost of every record that happened in [since, until) from the current prices."""
    now = timezone.now().astimezone(dt.UTC)
    until = until or now
    report = RepriceReport(since, until, dry_run, shared_counters=shared_state_backend() == "redis")
    invalidate_price_table()  # this process prices from the table as it is now
    counters = _CounterDeltas(now)
    changed_times: list[dt.datetime] = []
    records = UsageRecord.objects.filter(occurred_at__gte=since, occurred_at__lt=until).order_by("pk").only(*_FIELDS)
    last_pk = 0
    while chunk := list(records.filter(pk__gt=last_pk)[:CHUNK]):
        last_pk = chunk[-1].pk
        updates = []
        for record in chunk:
            report.records += 1
            quote = quote_usage(event_of(record))
            report.cost_before += record.cost or 0
            report.cost_after += quote.cost or 0
            if not _differs(record, quote):
                continue
            report.changed += 1
            report.newly_priced += record.cost is None and quote.cost is not None
            report.newly_unpriced += record.cost is not None and quote.cost is None
            difference = (quote.cost or 0) - (record.cost or 0)
            report.by_model[record.model] = report.by_model.get(record.model, Decimal(0)) + difference
            counters.add(record, quote.cost)
            changed_times.append(record.occurred_at)
            record.cost, record.priced, record.price_flag, record.pricing = (
                quote.cost,
                quote.cost is not None,
                quote.flag,
                quote.basis(),
            )
            updates.append(record)
        if updates and not dry_run:
            with transaction.atomic():
                UsageRecord.objects.bulk_update(updates, ["cost", "priced", "price_flag", "pricing"])
    report.by_model = {model: delta for model, delta in report.by_model.items() if delta}
    if changed_times and not dry_run:
        summary = rollup_usage(min(changed_times), max(changed_times) + PERIOD_LENGTH["hour"])
        report.rollup_buckets = summary.buckets
        deltas = {counter: delta for counter, delta in counters.deltas.items() if delta}
        spend_backend().adjust_settled(deltas)
        report.counters_adjusted = len(deltas)
    elif changed_times:
        report.counters_adjusted = sum(1 for delta in counters.deltas.values() if delta)
    return report
