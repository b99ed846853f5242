"""The Celery side of budget alerts: queueing a new alert's webhooks and email, and the tasks that
send them. A webhook is retried with exponential backoff (BUDGET_WEBHOOK_RETRY_SECONDS doubled per
retry) until it is delivered or BUDGET_WEBHOOK_MAX_ATTEMPTS attempts have failed."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.utils import timezone

from proxyproject.lib.logging import log_event
from usage.budget_delivery import alert_recipients, deliver_budget_webhook, send_budget_alert_email, webhook_targets
from usage.models import BudgetAlert

logger = logging.getLogger("usage.budget_alerts")


def retry_delay_seconds(retries_so_far: int) -> float:
    return settings.BUDGET_WEBHOOK_RETRY_SECONDS * 2.0**retries_so_far


def _alert(alert_id: int) -> BudgetAlert | None:
    return BudgetAlert.objects.select_related("organization").filter(pk=alert_id).first()


@shared_task(bind=True, name="usage.deliver_budget_webhook", max_retries=None)
def deliver_budget_webhook_task(self: Task[Any, Any], alert_id: int, target: str) -> bool:
    alert = _alert(alert_id)
    if alert is None:
        return False
    attempt = self.request.retries + 1
    delivery = deliver_budget_webhook(alert=alert, target=target, attempt=attempt)
    if delivery is None or delivery.delivered:
        return delivery is not None
    if attempt >= settings.BUDGET_WEBHOOK_MAX_ATTEMPTS:
        log_event(logger, "Budget webhook given up", logging.WARNING, alert=str(alert.uuid), target=target, attempts=attempt)
        return False
    raise self.retry(countdown=retry_delay_seconds(self.request.retries))


@shared_task(name="usage.send_budget_alert_email")
def send_budget_alert_email_task(alert_id: int) -> int:
    alert = _alert(alert_id)
    return 0 if alert is None else send_budget_alert_email(alert=alert)


def dispatch_budget_alert(alert_id: int) -> bool:
    """Queue the alert's webhooks and email, then mark it dispatched. With the broker away it stays
    undispatched and the rollup task's sweep queues it later; returns whether it was queued."""
    alert = _alert(alert_id)
    if alert is None:
        return False
    try:
        for target in webhook_targets(alert):
            deliver_budget_webhook_task.delay(alert_id, target)
        if alert_recipients(alert):
            send_budget_alert_email_task.delay(alert_id)
    except Exception as exc:  # the broker is away: the sweep tries again
        log_event(logger, "Budget alert not queued", logging.WARNING, alert=str(alert.uuid), error=f"{type(exc).__name__}: {exc}")
        return False
    BudgetAlert.objects.filter(pk=alert_id).update(dispatched_at=timezone.now())
    return True
