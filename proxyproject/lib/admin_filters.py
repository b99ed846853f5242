"""List filters for big tables whose values are too many to list: a date range and an exact value,
typed into plain GET forms. No script: the CSP allows none inline, and none is needed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import QuerySet
from django.http import HttpRequest


def _other_parameters(changelist: Any, mine: list[str | None]) -> list[tuple[str, str]]:
    """The rest of the list's query (other filters, search, ordering) for hidden fields, so
    applying this filter keeps them."""
    kept = []
    for name, values in changelist.params.items():
        if name in mine:
            continue
        for value in values if isinstance(values, list) else [values]:
            kept.append((name, value))
    return kept


class DateRangeFilter(admin.FieldListFilter):
    """From and to (UTC days, both included) on a date-time field."""

    template = "admin/filters/date_range.html"

    def __init__(
        self, field: Any, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any, field_path: str
    ) -> None:
        self.since_parameter = f"{field_path}__from"
        self.until_parameter = f"{field_path}__to"
        super().__init__(field, request, params, model, model_admin, field_path)

    def expected_parameters(self) -> list[str | None]:
        return [self.since_parameter, self.until_parameter]

    def _day(self, parameter: str) -> dt.date | None:
        values = self.used_parameters.get(parameter)
        value = values[-1] if isinstance(values, list) else values
        if not value:
            return None
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError as exc:
            raise IncorrectLookupParameters(f"{parameter}: {value!r} is not a date (YYYY-MM-DD).") from exc

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        since, until = self._day(self.since_parameter), self._day(self.until_parameter)
        if since is not None:
            queryset = queryset.filter(**{f"{self.field_path}__gte": dt.datetime.combine(since, dt.time.min, tzinfo=dt.UTC)})
        if until is not None:
            if until == dt.date.max:  # the day after it is past the calendar (OverflowError, a server error)
                raise IncorrectLookupParameters(f"{self.until_parameter}: {until} is the calendar's last day.")
            next_day = dt.datetime.combine(until + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
            queryset = queryset.filter(**{f"{self.field_path}__lt": next_day})
        return queryset

    # django-stubs types choices as the stock filters' {selected, query_string, display}; each dict is
    # this filter's own template's context.
    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        since, until = self._day(self.since_parameter), self._day(self.until_parameter)
        yield {
            "since_parameter": self.since_parameter,
            "until_parameter": self.until_parameter,
            "since": since.isoformat() if since else "",
            "until": until.isoformat() if until else "",
            "hidden": _other_parameters(changelist, self.expected_parameters()),
        }


class ExactValueFilter(admin.FieldListFilter):
    """One typed value matched exactly (a device id, a model, an error code)."""

    template = "admin/filters/exact_value.html"

    def __init__(
        self, field: Any, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any, field_path: str
    ) -> None:
        self.parameter = field_path
        super().__init__(field, request, params, model, model_admin, field_path)

    def expected_parameters(self) -> list[str | None]:
        return [self.parameter]

    def _value(self) -> str:
        values = self.used_parameters.get(self.parameter)
        return str(values[-1] if isinstance(values, list) else values or "")

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self._value()
        return queryset.filter(**{self.parameter: value}) if value else queryset

    # django-stubs types choices as the stock filters' {selected, query_string, display}; each dict is
    # this filter's own template's context.
    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        yield {"parameter": self.parameter, "value": self._value(), "hidden": _other_parameters(changelist, [self.parameter])}
