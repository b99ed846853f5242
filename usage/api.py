"""GET /admin/usage (seed path): a device's own usage with its wrapper token, its organization's
with an organization's operator key, everything with a platform operator key or staff session."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema

from proxyproject.lib.errors import InvalidRequest, PermissionDenied
from tokens.authentication import authenticate_wrapper_token, extract_bearer_token
from tokens.operators import KEY_PREFIX, authenticate_scoped_operator
from usage.permissions import can_view_usage
from usage.reports import GroupBy, UsageFilter, usage_groups, usage_totals

router = Router(tags=["usage"])
DEFAULT_PERIOD = dt.timedelta(days=30)


class UsageQuery(Schema):
    since: dt.datetime | None = Field(
        None, description="Start, inclusive (ISO 8601; UTC when no offset). Default: 30 days before `until`."
    )
    until: dt.datetime | None = Field(None, description="End, exclusive. Default: now.")
    device: str | None = Field(None, description="A device_id. A device token may only name itself.")
    org: int | None = Field(None, description="An organization id.")
    model: str | None = Field(None, description="Exact model id as the client sent it.")
    group_by: GroupBy | None = Field(None, description="Also break the totals down by day, hour (UTC), model or device.")


class UsageTotalsOut(Schema):
    requests: int
    errors: int = Field(description="Responses with status >= 400, or a stream that ended in an error event.")
    unpriced_requests: int = Field(description="Requests whose model has no price: their cost is not in `cost`.")
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
    model: str | None


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


def usage_filter_for(reader: Reader, query: UsageQuery) -> UsageFilter:
    until = query.until or timezone.now()
    since = query.since or until - DEFAULT_PERIOD
    until, since = (moment if timezone.is_aware(moment) else moment.replace(tzinfo=dt.timezone.utc) for moment in (until, since))
    if since >= until:
        raise InvalidRequest("since must be before until.")
    if reader.device_pk is not None:
        if query.device not in (None, reader.device_id) or query.org not in (None, reader.org_id):
            raise PermissionDenied("A device token can only read its own usage.")
        return UsageFilter(since, until, device_pk=reader.device_pk, model=query.model)
    if reader.org_id is not None:
        if query.org not in (None, reader.org_id):
            raise PermissionDenied("This operator API key can only read its own organization's usage.")
        return UsageFilter(since, until, device_ref=query.device, org_pk=reader.org_id, model=query.model)
    return UsageFilter(since, until, device_ref=query.device, org_pk=query.org, model=query.model)


def build_report(reader: Reader, query: UsageQuery) -> dict[str, object]:
    usage_filter = usage_filter_for(reader, query)
    groups = usage_groups(usage_filter, query.group_by) if query.group_by else []
    return {
        "scope": reader.scope,
        "since": usage_filter.since,
        "until": usage_filter.until,
        "filters": {"device": reader.device_id or query.device, "org": usage_filter.org_pk or query.org, "model": query.model},
        "group_by": query.group_by,
        "totals": usage_totals(usage_filter).as_dict(),
        "groups": [{"key": group.key, **group.totals.as_dict()} for group in groups],
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
