"""GET /admin/usage (seed path): a device's own usage with its wrapper token, its organization's
with an organization's operator key, everything with a platform operator key or staff session;
POST /admin/usage/reprice for platform operators."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema

from proxyproject.lib.errors import InvalidRequest, NotFound, PermissionDenied
from tokens.authentication import authenticate_wrapper_token, extract_bearer_token
from tokens.operators import KEY_PREFIX, SESSION_ACTOR_PREFIX, authenticate_operator_change, authenticate_scoped_operator
from usage.cost_breakdown import cost_breakdown
from usage.models import UsageRecord
from usage.permissions import can_view_usage
from usage.reports import GroupBy, UsageFilter, people_named
from usage.repricing import reprice_usage
from usage.rollup_reports import groups_with_rollups, totals_with_rollups

router = Router(tags=["usage"])
DEFAULT_PERIOD = dt.timedelta(days=30)
EVER = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
MAX_ID = 2**63 - 1


class UsageRecordNotFound(NotFound):
    error_code = "usage_record_not_found"


class UsageQuery(Schema):
    since: dt.datetime | None = Field(
        None, description="Start, inclusive (ISO 8601; UTC when no offset). Default: 30 days before `until`."
    )
    until: dt.datetime | None = Field(None, description="End, exclusive. Default: now.")
    device: str | None = Field(None, description="A device_id. A device token may only name itself.")
    org: int | None = Field(None, ge=1, le=MAX_ID, description="An organization id.")
    person: str | None = Field(None, description="A person who signed in on devices: their email, or their id.")
    model: str | None = Field(None, description="Exact model id as the client sent it.")
    group_by: GroupBy | None = Field(None, description="Also break the totals down by day, hour (UTC), model, device or person.")
    request_id: str | None = Field(
        None, description="One request's record, with how its cost was computed (`record`). Any period unless `since` is given."
    )


class UsageTotalsOut(Schema):
    requests: int
    errors: int = Field(description="Responses with status >= 400, or a stream that ended in an error event.")
    unpriced_requests: int = Field(description="Requests whose model has no price: their cost is not in `cost`.")
    estimated_requests: int = Field(
        description="Requests priced at an assumed rate, or at the standard rate for a fast request of a model without one."
    )
    input_tokens: int
    output_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    web_search_requests: int
    web_fetch_requests: int
    cost: str = Field(description="USD, a decimal string with 10 decimal places.", examples=["0.0249000000"])


class UsageGroupOut(UsageTotalsOut):
    key: str = Field(description="The day (2026-11-25), hour (2026-11-25T13:00:00Z), model id or device id.")


class UsageFiltersOut(Schema):
    device: str | None
    org: int | None
    person: str | None = None
    model: str | None
    request_id: str | None


class CostLineOut(Schema):
    category: str
    tokens: int
    rate_per_mtok: str = Field(description="USD per million tokens of the price row.")
    amount: str = Field(description="tokens x rate x batch x geo / 1M, unrounded.")


class CostBreakdownOut(Schema):
    request_id: str
    status: str = Field(description="priced, unpriced (no price matched), free, or not recorded (priced before breakdowns).")
    flag: str = Field(description="'' exact, assumed, fallback or unknown.")
    priced_at: str | None = Field(description="The moment whose prices apply (a batch result: its batch's creation).")
    price_row: int | None = Field(description="The ModelPrice row's id.")
    pattern: str | None
    effective_from: str | None
    provenance: str | None
    speed: str | None
    tier: str | None
    multipliers: dict[str, str] = Field(description="batch (0.5 or 1) and geo (the US-only multiplier or 1).")
    lines: list[CostLineOut]
    total: str | None = Field(description="The sum of the lines rounded to 10 places: equals `stored_cost`.")
    stored_cost: str | None
    notes: list[str]


class UsageReportOut(Schema):
    scope: str = Field(
        description="`device` (a wrapper token: only its own usage), `organization` (an organization's operator key) "
        "or `all` (a platform operator)."
    )
    since: dt.datetime
    until: dt.datetime
    filters: UsageFiltersOut
    group_by: GroupBy | None
    totals: UsageTotalsOut
    groups: list[UsageGroupOut]
    record: CostBreakdownOut | None = Field(description="With `request_id`: the record and how its cost was computed.")


@dataclass(frozen=True)
class Reader:
    """A device (device_pk set), one organization's operator (only org_id set) or everyone's (neither)."""

    device_pk: int | None
    device_id: str | None
    org_id: int | None

    @property
    def scope(self) -> str:
        if self.device_pk is not None:
            return "device"
        return "all" if self.org_id is None else "organization"


async def authenticate_usage_reader(request: HttpRequest) -> Reader:
    """A platform operator key, or a session allowed to view usage, reads everything; an
    organization's key its organization; any other bearer is a wrapper token."""
    raw = extract_bearer_token(request.headers)
    if raw is None or raw.startswith(KEY_PREFIX):
        operator = await authenticate_scoped_operator(request)
        if raw is None and not await sync_to_async(can_view_usage)(await request.auser()):
            raise PermissionDenied("Reading usage needs the usage view permission.")
        return Reader(None, None, operator.org_id)
    identity = await authenticate_wrapper_token(raw)
    return Reader(identity.device_pk, identity.device_id, identity.org_id)


def _moment(value: dt.datetime, name: str) -> dt.datetime:
    """The moment, UTC when it has no offset. One outside [1970, 9000) is refused: the period and
    whole days are stepped from it, which near year 1 or 9999 (or across its offset) overflows the
    calendar and would be a server error instead of an answer."""
    aware = value if timezone.is_aware(value) else value.replace(tzinfo=dt.UTC)
    try:
        inside = EARLIEST <= aware.astimezone(dt.UTC) < LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise InvalidRequest(f"{name}: must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} (UTC).")
    return aware


def usage_filter_for(reader: Reader, query: UsageQuery) -> UsageFilter:
    until = timezone.now() if query.until is None else _moment(query.until, "until")
    if query.since is not None:
        since = _moment(query.since, "since")
    else:
        since = EVER if query.request_id else until - DEFAULT_PERIOD
    if since >= until:
        raise InvalidRequest("since must be before until.")
    if reader.device_pk is not None:
        if query.device not in (None, reader.device_id) or query.org not in (None, reader.org_id) or query.person is not None:
            raise PermissionDenied("A device token can only read its own usage.")
        return UsageFilter(since, until, device_pk=reader.device_pk, model=query.model, request_id=query.request_id)
    org_pk: int | None = query.org
    if reader.org_id is not None:
        if query.org not in (None, reader.org_id):
            raise PermissionDenied("This operator API key can only read its own organization's usage.")
        org_pk = reader.org_id
    return UsageFilter(
        since,
        until,
        device_ref=query.device,
        org_pk=org_pk,
        model=query.model,
        request_id=query.request_id,
        person_pks=None if query.person is None else people_named(query.person),
    )


def record_breakdown(usage_filter: UsageFilter) -> dict[str, object]:
    """The one record the filter names, if the reader may see it; anyone else's is not found, as a
    record that does not exist."""
    record = usage_filter.apply(UsageRecord.objects.all()).first()
    if record is None:
        raise UsageRecordNotFound(f"No usage record {usage_filter.request_id} is visible to this credential.")
    return cost_breakdown(record).as_dict()


def build_report(reader: Reader, query: UsageQuery) -> dict[str, object]:
    usage_filter = usage_filter_for(reader, query)
    groups = groups_with_rollups(usage_filter, query.group_by) if query.group_by else []
    return {
        "scope": reader.scope,
        "since": usage_filter.since,
        "until": usage_filter.until,
        "filters": {
            "device": reader.device_id or query.device,
            "org": usage_filter.org_pk or query.org,
            "person": query.person,
            "model": query.model,
            "request_id": query.request_id,
        },
        "group_by": query.group_by,
        "totals": totals_with_rollups(usage_filter).as_dict(),
        "groups": [{"key": group.key, **group.totals.as_dict()} for group in groups],
        "record": record_breakdown(usage_filter) if query.request_id else None,
    }


@router.get(
    "/admin/usage",
    auth=None,
    response=UsageReportOut,
    summary="Usage totals and breakdowns: a device's own (wrapper token) or everyone's (operator API key)",
)
async def admin_usage(request: HttpRequest, query: Query[UsageQuery]) -> dict[str, object]:
    reader = await authenticate_usage_reader(request)
    return await sync_to_async(build_report)(reader, query)


REPRICE_PERMISSION = "usage.change_modelprice"


class RepriceIn(Schema):
    since: dt.datetime = Field(description="Records from this moment on (ISO 8601; UTC when no offset).")
    until: dt.datetime | None = Field(None, description="Up to this moment, exclusive. Default: now.")
    dry_run: bool = Field(True, description="Report the difference only (the default); false writes it.")


class RepriceOut(Schema):
    since: dt.datetime
    until: dt.datetime
    dry_run: bool
    records: int = Field(description="Records checked.")
    changed: int = Field(description="Records whose cost, flag or basis changed (or would, in a dry run).")
    cost_before: str
    cost_after: str
    difference: str = Field(description="cost_after - cost_before, USD.")
    newly_priced: int
    newly_unpriced: int
    by_model: dict[str, str] = Field(description="The difference per model, USD, for models whose cost changed.")
    rollup_buckets: int
    counters_adjusted: int
    summary: list[str] = Field(description="The same lines `manage.py reprice_usage` prints.")


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=dt.UTC)


def run_reprice(body: RepriceIn) -> dict[str, object]:
    since, until = _aware(body.since), (_aware(body.until) if body.until is not None else None)
    if until is not None and since >= until:
        raise InvalidRequest("since must be before until.")
    report = reprice_usage(since=since, until=until, dry_run=body.dry_run)
    return {
        "since": report.since,
        "until": report.until,
        "dry_run": report.dry_run,
        "records": report.records,
        "changed": report.changed,
        "cost_before": f"{report.cost_before:.10f}",
        "cost_after": f"{report.cost_after:.10f}",
        "difference": f"{report.difference:.10f}",
        "newly_priced": report.newly_priced,
        "newly_unpriced": report.newly_unpriced,
        "by_model": {model: f"{delta:.10f}" for model, delta in report.by_model.items()},
        "rollup_buckets": report.rollup_buckets,
        "counters_adjusted": report.counters_adjusted,
        "summary": report.summary_lines(),
    }


@router.post(
    "/admin/usage/reprice",
    auth=None,
    response=RepriceOut,
    summary="Recompute recorded costs, rollups and spend counters from the current prices (operator API key or staff session)",
)
async def reprice(request: HttpRequest, body: RepriceIn) -> dict[str, object]:
    """The same function as `manage.py reprice_usage` and the admin's reprice page; a session also
    needs the permission to change prices (and the CSRF token, as every operator change does)."""
    actor = await authenticate_operator_change(request)
    if actor.startswith(SESSION_ACTOR_PREFIX) and not await sync_to_async((await request.auser()).has_perm)(REPRICE_PERMISSION):
        raise PermissionDenied("Repricing needs the permission to change model prices.")
    return await sync_to_async(run_reprice)(body)
