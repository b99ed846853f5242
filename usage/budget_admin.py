"""Operators' view of budget alerts and their webhook deliveries: read-only, like every log; the one
action, Redeliver, posts an alert again through the same service the Celery task uses."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from proxyproject.lib.admin import CappedCountPaginator, ReadOnlyAdmin
from usage.budget_alerts import budget_subject_url
from usage.budget_delivery import deliver_budget_webhook, next_attempt
from usage.models import BudgetAlert, WebhookDelivery


def subject_link(alert: BudgetAlert) -> str:
    url = budget_subject_url(alert)
    return alert.subject if url is None else format_html('<a href="{}">{}</a>', url, alert.subject)


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdmin[BudgetAlert]):
    list_display = ("occurred_at", "subject_display", "period_display", "threshold_display", "spent_display", "deliveries_link")
    list_filter = ("scope", "period", "threshold_percent")
    search_fields = ("subject",)
    list_select_related = ("device", "organization")
    paginator = CappedCountPaginator
    show_full_result_count = False

    @admin.display(description="Device or organization", ordering="subject")
    def subject_display(self, obj: BudgetAlert) -> str:
        return format_html("{} {}", obj.get_scope_display(), subject_link(obj))

    @admin.display(description="Period", ordering="period_start")
    def period_display(self, obj: BudgetAlert) -> str:
        return f"{obj.period} of {obj.period_start:%Y-%m-%d}"

    @admin.display(description="Threshold", ordering="threshold_percent")
    def threshold_display(self, obj: BudgetAlert) -> str:
        return f"{obj.threshold_percent}%"

    @admin.display(description="Spent / cap", ordering="spent")
    def spent_display(self, obj: BudgetAlert) -> str:
        return f"${obj.spent:.2f} / ${obj.cap:.2f}"

    @admin.display(description="Webhooks")
    def deliveries_link(self, obj: BudgetAlert) -> str:
        url = reverse("admin:usage_webhookdelivery_changelist") + f"?alert__id__exact={obj.pk}"
        return format_html('<a href="{}">Deliveries</a>', url)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin[WebhookDelivery]):
    list_display = ("attempted_at", "alert", "target", "attempt", "delivered", "status", "error", "duration")
    list_select_related = ("alert",)
    raw_id_fields = ("alert",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    actions = ["redeliver"]

    @admin.display(description="Status", ordering="status_code")
    def status(self, obj: WebhookDelivery) -> str:
        return "-" if obj.status_code is None else str(obj.status_code)

    @admin.display(description="Time", ordering="duration_ms")
    def duration(self, obj: WebhookDelivery) -> str:
        return f"{obj.duration_ms} ms"

    @admin.action(description="Redeliver the selected deliveries' alerts to their webhooks")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        sent = {(delivery.alert_id, delivery.target): delivery for delivery in queryset.select_related("alert__organization")}
        for delivery in sent.values():
            alert, target = delivery.alert, delivery.target
            again = deliver_budget_webhook(alert=alert, target=target, attempt=next_attempt(alert, target))
            if again is None:
                self.message_user(request, f"{alert}: that webhook is no longer configured.", messages.WARNING)
            elif again.delivered:
                self.message_user(request, f"{alert}: delivered (HTTP {again.status_code}).", messages.SUCCESS)
            else:
                self.message_user(request, f"{alert}: not delivered ({again.error}).", messages.ERROR)
