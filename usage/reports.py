"""Usage totals and breakdowns over raw records, for GET /admin/usage, the admin dashboard and the
device list's spend column alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from tokens.models import Person
from usage.counts import COUNT_FIELDS, TOKEN_FIELDS
from usage.models import ESTIMATED_FLAGS, UsageRecord
from usage.pricing import COST_QUANTUM

GroupBy = Literal["day", "hour", "model", "device", "person"]
NO_PERSON = "(no person)"
UTC = dt.UTC


@dataclass(frozen=True)
class UsageFilter:
    since: dt.datetime
    until: dt.datetime
    device_pk: int | None = None
    device_ref: str | None = None
    org_pk: int | None = None
    model: str | None = None
    request_id: str | None = None
    person_pks: tuple[int, ...] | None = None

    def dimensions(self) -> dict[str, object]:
        """The device, organization and model it names: records and rollups both carry these columns."""
        named = {"device_pk": self.device_pk, "device_ref": self.device_ref, "org_pk": self.org_pk, "model": self.model}
        return {column: value for column, value in named.items() if value is not None}

    def apply(self, records: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        records = records.filter(occurred_at__gte=self.since, occurred_at__lt=self.until, **self.dimensions())
        if self.person_pks is not None:
            records = records.filter(person_pk__in=self.person_pks)
        if self.request_id is not None:
            records = records.filter(request_id=self.request_id)
        return records


@dataclass
class UsageTotals:
    requests: int = 0
    errors: int = 0
    unpriced_requests: int = 0
    estimated_requests: int = 0
    cost: Decimal = Decimal(0)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_FIELDS, 0))

    @property
    def total_tokens(self) -> int:
        return sum(self.counts[name] for name in TOKEN_FIELDS)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "unpriced_requests": self.unpriced_requests,
            "estimated_requests": self.estimated_requests,
            **self.counts,
            "cost": format(self.cost.quantize(COST_QUANTUM), "f"),
        }


@dataclass
class UsageGroup:
    key: str
    totals: UsageTotals


_AGGREGATES = {
    "requests": Count("id"),
    "errors": Count("id", filter=Q(is_error=True)),
    "unpriced_requests": Count("id", filter=Q(priced=False)),
    "estimated_requests": Count("id", filter=Q(price_flag__in=ESTIMATED_FLAGS)),
    "cost_sum": Sum("cost"),
    **{f"{name}_sum": Sum(name) for name in COUNT_FIELDS},
}


def _totals(row: Mapping[str, Any]) -> UsageTotals:
    return UsageTotals(
        requests=row["requests"],
        errors=row["errors"],
        unpriced_requests=row["unpriced_requests"],
        estimated_requests=row["estimated_requests"],
        cost=row["cost_sum"] or Decimal(0),
        counts={name: row[f"{name}_sum"] or 0 for name in COUNT_FIELDS},
    )


def group_key(group_by: GroupBy, value: object) -> str:
    if isinstance(value, dt.datetime) and group_by == "day":
        return value.astimezone(UTC).strftime("%Y-%m-%d")
    if isinstance(value, dt.datetime) and group_by == "hour":
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:00:00Z")
    return str(value)


def sum_totals(parts: Iterable[UsageTotals]) -> UsageTotals:
    total = UsageTotals()
    for part in parts:
        total.requests += part.requests
        total.errors += part.errors
        total.unpriced_requests += part.unpriced_requests
        total.estimated_requests += part.estimated_requests
        total.cost += part.cost
        for name in COUNT_FIELDS:
            total.counts[name] += part.counts[name]
    return total


def sort_groups(groups: list[UsageGroup], group_by: GroupBy) -> list[UsageGroup]:
    """The order `usage_groups` answers in: time groups by time, others dearest first."""
    if group_by in ("day", "hour"):
        return sorted(groups, key=lambda group: group.key)
    return sorted(groups, key=lambda group: (-group.totals.cost, -group.totals.requests, group.key))


def usage_totals(usage_filter: UsageFilter) -> UsageTotals:
    return _totals(usage_filter.apply(UsageRecord.objects.all()).aggregate(**_AGGREGATES))


def _group_expression(group_by: GroupBy) -> TruncDay | TruncHour | F:
    expressions: dict[GroupBy, TruncDay | TruncHour | F] = {
        "day": TruncDay("occurred_at", tzinfo=UTC),
        "hour": TruncHour("occurred_at", tzinfo=UTC),
        "model": F("model"),
        "device": F("device_ref"),
        "person": F("person_pk"),
    }
    return expressions[group_by]


def usage_groups_by_time_and_model(usage_filter: UsageFilter, over_time: GroupBy) -> list[tuple[str, str, UsageTotals]]:
    """(time key, model, totals) of every pair that has records: one query for what the totals, the
    time series and the model breakdown each need."""
    records = usage_filter.apply(UsageRecord.objects.all())
    rows = records.annotate(group_key=_group_expression(over_time)).values("group_key", "model").annotate(**_AGGREGATES)
    return [(group_key(over_time, row["group_key"]), row["model"], _totals(row)) for row in rows.order_by()]


def usage_totals_by_value(usage_filter: UsageFilter, group_by: GroupBy) -> list[tuple[object, UsageTotals]]:
    """Each group's stored value (a person's pk, None for records without one) and totals, in no order."""
    records = usage_filter.apply(UsageRecord.objects.all())
    rows = records.annotate(group_key=_group_expression(group_by)).values("group_key").annotate(**_AGGREGATES)
    return [(row["group_key"], _totals(row)) for row in rows.order_by()]


def _person_rank(group: tuple[int | None, UsageTotals]) -> tuple[bool, Decimal, int, bool, int]:
    """The order `usage_groups(..., "person")` gives on PostgreSQL: dearest first, groups with no
    priced record (a NULL sum there) after every priced one, then by pk, no person last."""
    pk, totals = group
    return (totals.unpriced_requests == totals.requests, -totals.cost, -totals.requests, pk is None, pk or 0)


def top_person_pks(groups: Iterable[tuple[int | None, UsageTotals]], *, limit: int) -> list[int | None]:
    """The pks of the first `limit` people in that order; only requests, unpriced requests and cost count."""
    return [pk for pk, _ in sorted(groups, key=_person_rank)[:limit]]


def rank_person_groups(groups: Iterable[tuple[int | None, UsageTotals]], *, limit: int) -> list[UsageGroup]:
    """The first `limit` people in `usage_groups`' order, named as it names them."""
    ranked = sorted(groups, key=_person_rank)[:limit]
    names = person_names([pk for pk, _ in ranked if pk is not None])
    return [UsageGroup(NO_PERSON if pk is None else names[pk], totals) for pk, totals in ranked]


def usage_groups(usage_filter: UsageFilter, group_by: GroupBy, *, limit: int | None = None) -> list[UsageGroup]:
    """Time groups in time order; model and device groups by cost, dearest first."""
    records = usage_filter.apply(UsageRecord.objects.all())
    rows = records.annotate(group_key=_group_expression(group_by)).values("group_key").annotate(**_AGGREGATES)
    if group_by in ("day", "hour"):
        rows = rows.order_by("group_key")
    else:
        # django-stubs cannot see the annotations passed as **_AGGREGATES, so it refuses "requests".
        rows = rows.order_by(F("cost_sum").desc(nulls_last=True), "-requests", "group_key")  # type: ignore[misc]
    if limit is not None:
        rows = rows[:limit]
    if group_by == "person":
        person_rows = list(rows)
        names = person_names([row["group_key"] for row in person_rows if row["group_key"] is not None])
        return [UsageGroup(names.get(row["group_key"], NO_PERSON), _totals(row)) for row in person_rows]
    return [UsageGroup(group_key(group_by, row["group_key"]), _totals(row)) for row in rows]


def person_names(pks: Iterable[int]) -> dict[int, str]:
    """A deleted person's records keep their pk: shown as `person <pk>`."""
    wanted = set(pks)
    names = {person.pk: str(person) for person in Person.objects.filter(pk__in=wanted)}
    return {pk: names.get(pk, f"person {pk}") for pk in wanted}


def people_named(name: str) -> tuple[int, ...]:
    """The people a report's `person` filter names: by email (any case), or by id. Only ASCII
    digits are an id: `str.isdigit` also takes `²`, which `int` refuses (a server error)."""
    is_id = name.isascii() and name.isdigit()
    matches = Person.objects.filter(Q(email__iexact=name) | Q(pk=int(name)) if is_id else Q(email__iexact=name))
    return tuple(matches.values_list("pk", flat=True))


@dataclass(frozen=True)
class DeviceSpend:
    today: Decimal
    month: Decimal


def spend_summary_for_devices(device_pks: Iterable[int], *, now: dt.datetime | None = None) -> dict[int, DeviceSpend]:
    """Recorded spend today and this month (UTC) per device, for the device list next to its caps.

    Two grouped queries for the whole page, whatever its size; devices without usage get zeros.
    """
    pks = list(device_pks)
    moment = (now or timezone.now()).astimezone(UTC)
    day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    records = UsageRecord.objects.filter(device_pk__in=pks, cost__isnull=False)

    def totals(since: dt.datetime) -> dict[int | None, Decimal]:
        rows = records.filter(occurred_at__gte=since).values("device_pk").annotate(total=Sum("cost"))
        return {row["device_pk"]: row["total"] for row in rows}

    today, month = totals(day_start), totals(month_start)
    zero = Decimal(0).quantize(COST_QUANTUM)
    return {pk: DeviceSpend(today.get(pk, zero), month.get(pk, zero)) for pk in pks}
