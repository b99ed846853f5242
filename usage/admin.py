"""Operators' view of usage: prices (editable: saving one reprices from the next record on), records
and rollups (read-only, CSV export), the dashboard and the live feed; budget alerts and their
webhook deliveries are in `usage.budget_admin`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol, TypeVar, cast

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from proxyproject.lib.admin import CappedCountPaginator, ReadOnlyAdmin
from proxyproject.lib.admin_filters import DateRangeFilter, ExactValueFilter
from tokens.admin import DeviceAdmin
from tokens.identity import DevicePolicy
from tokens.models import Device
from tokens.policy import resolve_policy
from usage.budget_admin import BudgetAlertAdmin, WebhookDeliveryAdmin  # noqa: F401  (they register themselves)
from usage.cost_breakdown import cost_breakdown
from usage.dashboard import PERIODS, build_dashboard
from usage.exports import RECORD_COLUMNS, ROLLUP_COLUMNS, csv_export
from usage.models import ModelPrice, PriceFlag, UsageRecord, UsageRollup
from usage.permissions import can_view_usage
from usage.reports import DeviceSpend, spend_summary_for_devices
from usage.repricing import reprice_usage


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin[ModelPrice]):
    list_display = (
        "model_pattern",
        "label",
        "speed",
        "prompt_tokens_above",
        "effective_from",
        "input_per_mtok",
        "output_per_mtok",
        "cache_write_5m_per_mtok",
        "cache_write_1h_per_mtok",
        "cache_read_per_mtok",
        "us_geo_multiplier",
        "provenance",
    )
    list_filter = ("speed", "provenance")
    search_fields = ("model_pattern", "label")
    readonly_fields = ("updated_at",)
    change_list_template = "admin/usage/modelprice/change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "model_pattern",
                    "label",
                    "speed",
                    "prompt_tokens_above",
                    "effective_from",
                    "provenance",
                    "provenance_note",
                )
            },
        ),
        (
            "USD per million tokens",
            {
                "fields": (
                    ("input_per_mtok", "output_per_mtok"),
                    ("cache_write_5m_per_mtok", "cache_write_1h_per_mtok"),
                    "cache_read_per_mtok",
                )
            },
        ),
        ("Multipliers", {"fields": ("us_geo_multiplier", "updated_at")}),
    )

    def save_model(self, request: HttpRequest, obj: ModelPrice, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        url = reverse("admin:usage_modelprice_reprice") + "?" + urlencode({"since": obj.effective_from.date().isoformat()})
        self.message_user(
            request,
            format_html(
                'New records use this price at once. Records already stored keep their cost until you <a href="{}">reprice them</a>.',
                url,
            ),
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path("reprice/", self.admin_site.admin_view(self.reprice_view), name="usage_modelprice_reprice"),
            *super().get_urls(),
        ]

    def reprice_view(self, request: HttpRequest) -> TemplateResponse:
        """The same repricing as `manage.py reprice_usage`: a dry run by default, then for real."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = RepriceForm(request.POST or None, initial={"since": request.GET.get("since"), "dry_run": True})
        report = None
        if request.method == "POST" and form.is_valid():
            report = reprice_usage(
                since=form.cleaned_data["since"], until=form.cleaned_data["until"], dry_run=form.cleaned_data["dry_run"]
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Reprice recorded usage",
            "form": form,
            "report": report,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/usage/modelprice/reprice.html", context)


class RepriceForm(forms.Form):
    since = forms.DateTimeField(help_text="Records from this moment on (UTC), e.g. the changed price's effective date.")
    until = forms.DateTimeField(required=False, help_text="Up to this moment, exclusive (default: now).")
    dry_run = forms.BooleanField(required=False, help_text="Report the difference only; write nothing.")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since >= until:
            raise forms.ValidationError("since must be before until.")
        return cleaned


_UsageModelT = TypeVar("_UsageModelT", UsageRecord, UsageRollup)


class PricedFilter(admin.SimpleListFilter):
    title = "price"
    parameter_name = "priced"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", "Priced"), ("no", "Unknown model (unpriced)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        if self.value() in ("yes", "no"):
            return queryset.filter(priced=self.value() == "yes")
        return queryset


class PriceFlagFilter(admin.SimpleListFilter):
    """Records whose cost is not certain: an unknown model, or an assumed or fallback rate."""

    title = "price certainty"
    parameter_name = "price_flag"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("flagged", "Any flag"), *[(flag.value, flag.label) for flag in PriceFlag if flag != PriceFlag.EXACT]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        if self.value() == "flagged":
            return queryset.exclude(price_flag=PriceFlag.EXACT)
        if self.value() in PriceFlag.values:
            return queryset.filter(price_flag=self.value())
        return queryset


class ReadOnlyUsageAdmin(ReadOnlyAdmin[_UsageModelT]):
    paginator = CappedCountPaginator
    show_full_result_count = False

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Lists, change pages and CSV exports of records and rollups: all under the one usage rule.
        return can_view_usage(request.user)


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyUsageAdmin[UsageRecord]):
    list_display = (
        "occurred_at",
        "device_ref",
        "model",
        "status",
        "error_type",
        "total_tokens",
        "cost_display",
        "latency_display",
    )
    list_filter = (
        ("occurred_at", DateRangeFilter),
        ("device_ref", ExactValueFilter),
        "organization",
        ("model", ExactValueFilter),
        ("status", ExactValueFilter),
        ("error_type", ExactValueFilter),
        PricedFilter,
        PriceFlagFilter,
        "is_error",
        "streamed",
        "client_disconnected",
        ("service_tier", ExactValueFilter),
    )
    # Typed values rather than Django's list of every value: that list is a SELECT DISTINCT over
    # the whole table on each page view (seconds at ten million records).
    search_fields = ("=request_id", "=upstream_request_id", "=device_ref", "model")
    raw_id_fields = ("device", "organization")
    readonly_fields = ("cost_breakdown",)
    actions = ["export_csv"]

    @admin.display(description="How the cost was computed")
    def cost_breakdown(self, record: UsageRecord) -> str:
        return render_to_string("admin/usage/usagerecord/cost_breakdown.html", {"breakdown": cost_breakdown(record).as_dict()})

    @admin.display(description="Tokens")
    def total_tokens(self, record: UsageRecord) -> str:
        return f"{record.total_tokens:,}"

    @admin.display(description="Latency", ordering="latency_ms")
    def latency_display(self, record: UsageRecord) -> str:
        return f"{record.latency_ms:,.0f} ms"

    @admin.display(description="Cost (USD)", ordering="cost")
    def cost_display(self, record: UsageRecord) -> str:
        if not record.priced:
            return format_html('<span class="usage-unpriced" title="{}">unknown model</span>', "No ModelPrice matches this model")
        if record.price_flag:
            return format_html(
                '{} <span class="usage-estimated" title="{}">{}</span>',
                f"{record.cost:.6f}",
                PriceFlag(record.price_flag).label,
                record.price_flag,
            )
        return f"{record.cost:.6f}"

    @admin.action(description="Export selected records as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> StreamingHttpResponse:
        return csv_export(queryset.order_by("occurred_at"), RECORD_COLUMNS, f"usage-records-{timezone.now():%Y%m%d-%H%M}.csv")

    def get_urls(self) -> list[URLPattern]:
        return [
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="usage_dashboard"),
            path("live/", self.admin_site.admin_view(self.live_view), name="usage_live"),
            *super().get_urls(),
        ]

    def _require_view(self, request: HttpRequest) -> None:
        if not can_view_usage(request.user):
            raise PermissionDenied

    def dashboard_view(self, request: HttpRequest) -> TemplateResponse:
        self._require_view(request)
        dashboard = build_dashboard(request.GET.get("period", ""), timezone.now())
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage dashboard",
            "dashboard": dashboard,
            "periods": list(PERIODS),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/usage/dashboard.html", context)

    def live_view(self, request: HttpRequest) -> TemplateResponse:
        self._require_view(request)
        context = {**self.admin_site.each_context(request), "title": "Live requests", "opts": self.model._meta}
        return TemplateResponse(request, "admin/usage/live.html", context)


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyUsageAdmin[UsageRollup]):
    list_display = (
        "bucket_start",
        "period",
        "device_ref",
        "model",
        "requests",
        "errors",
        "unpriced_requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cost",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
    )
    list_filter = ("period",)
    search_fields = ("=device_ref", "model")
    raw_id_fields = ("device",)
    actions = ["export_csv"]

    @admin.action(description="Export selected rollups as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[UsageRollup]) -> StreamingHttpResponse:
        return csv_export(
            queryset.order_by("bucket_start", "device_ref", "model"),
            ROLLUP_COLUMNS,
            f"usage-rollups-{timezone.now():%Y%m%d-%H%M}.csv",
        )


def _against_cap(spent: Decimal, cap: Decimal | None) -> str:
    return f"${spent:.2f} / {'$' + format(cap, '.2f') if cap is not None else 'no cap'}"


class _DeviceOnPage(Protocol):
    """A device of the list's page, with what `get_changelist_instance` looked up for the whole page."""

    page_spend: DeviceSpend
    page_policy: DevicePolicy


class DeviceWithSpendAdmin(DeviceAdmin):
    """The device pages with spend today and this month against the caps: `tokens` draws the device,
    usage (which owns spend) adds these columns, so `tokens` never imports `usage`."""

    list_display = (*DeviceAdmin.list_display[:-1], "spend_today", "spend_month", DeviceAdmin.list_display[-1])
    state_fields = (*DeviceAdmin.state_fields[:-2], "usage_summary", *DeviceAdmin.state_fields[-2:])

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        """Spend for the whole page in two grouped queries, not two per row."""
        changelist = super().get_changelist_instance(request)
        spend = spend_summary_for_devices([device.pk for device in changelist.result_list])
        for device in changelist.result_list:
            on_page = cast(_DeviceOnPage, device)
            on_page.page_spend = spend[device.pk]
            on_page.page_policy = resolve_policy(device, device.organization, device.person)
        return changelist

    @admin.display(description="Spend today / daily cap")
    def spend_today(self, obj: Device) -> str:
        on_page = cast(_DeviceOnPage, obj)
        return _against_cap(on_page.page_spend.today, on_page.page_policy.device_daily_cap_usd)

    @admin.display(description="Spend this month / monthly cap")
    def spend_month(self, obj: Device) -> str:
        on_page = cast(_DeviceOnPage, obj)
        return _against_cap(on_page.page_spend.month, on_page.page_policy.device_monthly_cap_usd)

    @admin.display(description="Usage")
    def usage_summary(self, obj: Device) -> str:
        if obj.pk is None:
            return "-"
        spend = spend_summary_for_devices([obj.pk])[obj.pk]
        policy = resolve_policy(obj, obj.organization, obj.person)
        url = reverse("admin:usage_usagerecord_changelist") + "?" + urlencode({"device_ref": obj.device_id})
        return format_html(
            'Today {} · this month {} · <a href="{}">usage records</a>',
            _against_cap(spend.today, policy.device_daily_cap_usd),
            _against_cap(spend.month, policy.device_monthly_cap_usd),
            url,
        )


admin.site.unregister(Device)
admin.site.register(Device, DeviceWithSpendAdmin)
