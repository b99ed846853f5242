"""CSV exports of usage records and rollups, streamed so an export of a month of traffic never
sits in memory."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse

from usage.counts import COUNT_FIELDS

RECORD_COLUMNS = (
    "occurred_at",
    "request_id",
    "upstream_request_id",
    "device_ref",
    "device_pk",
    "org_pk",
    "person_pk",
    "session_id",
    "model",
    "endpoint",
    "method",
    "status",
    "error_type",
    "is_error",
    "streamed",
    "client_disconnected",
    *COUNT_FIELDS,
    "service_tier",
    "speed",
    "inference_geo",
    "latency_ms",
    "ttfb_ms",
    "upstream_key_name",
    "cost",
    "priced",
    "price_flag",
)
ROLLUP_COLUMNS = (
    "period",
    "bucket_start",
    "device_ref",
    "device_pk",
    "org_pk",
    "model",
    "requests",
    "errors",
    "unpriced_requests",
    *COUNT_FIELDS,
    "cost",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
)


class _Echo:
    def write(self, value: str) -> str:
        return value


# OWASP CSV injection: a spreadsheet may read a cell starting with one of these as a formula (TAB
# and CR because some strip them and read on); a leading quote makes it plain text.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """Neutralise text a spreadsheet would run as a formula; render decimals and times as text."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    if isinstance(value, Decimal):
        return format(value, "f")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return "" if value is None else value


def _lines(queryset: QuerySet[Any], columns: Sequence[str]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(columns)
    for row in queryset.values_list(*columns).iterator(chunk_size=2000):
        yield writer.writerow([_cell(value) for value in row])


def csv_export(queryset: QuerySet[Any], columns: Sequence[str], filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_lines(queryset, columns), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
