"""The admin site operators use: the second factor at the door (`second_factor`) and an index that
answers at a glance (`admin_overview`) above Django's list of models."""

from __future__ import annotations

from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from proxyproject.admin_overview import build_admin_overview
from proxyproject.second_factor import ConsoleAdminSite
from usage.permissions import can_view_usage


class GatewayAdminSite(ConsoleAdminSite):
    index_template = "admin/gateway_index.html"

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        overview = build_admin_overview(timezone.now()) if can_view_usage(request.user) else None
        return super().index(request, {"overview": overview, **(extra_context or {})})
