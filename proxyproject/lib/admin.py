"""Admin building blocks every app's admin uses for its big, append-only tables."""

from __future__ import annotations

from functools import cached_property
from typing import Any, TypeVar

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest

_ModelT = TypeVar("_ModelT", bound=Model)


class CappedCountPaginator(Paginator[Any]):
    """Counts at most CAP rows: an exact count of millions of tokens or audit rows is a full scan
    on PostgreSQL, paid on every page view. Unordered: any CAP rows will do, no sort needed."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if not isinstance(rows, QuerySet):  # the admin pages querysets; a list is counted as it is
            return len(rows)
        return int(rows.order_by().values("pk")[: self.CAP + 1].count())


class ReadOnlyAdmin(admin.ModelAdmin[_ModelT]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
