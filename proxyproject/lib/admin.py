"""Admin building blocks every app's admin uses for its big, append-only tables."""

from __future__ import annotations

from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows: an exact count of millions of tokens or audit rows is a full scan
    on PostgreSQL, paid on every page view. Unordered: any CAP rows will do, no sort needed."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return int(self.object_list.order_by().values("pk")[: self.CAP + 1].count())


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
