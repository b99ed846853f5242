"""Budget alerts through the real surface: requests through the gateway (in process) to the bundled
fake upstream move a device's spend across its thresholds; each threshold is posted once to a
receiving server on 127.0.0.1, signed, retried after a 500, logged, and emailed."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from decimal import Decimal

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool  # noqa: F401
from tests.support import enroll_device
from tests.usage.webhook_receiver import signature_is_valid
from tokens.budget_webhooks import set_organization_webhook_secret
from tokens.models import Device, Organization
from usage.budget_alerts import Crossing, record_budget_alerts
from usage.budget_sweep import sweep_budget_alerts
from usage.budget_tasks import deliver_budget_webhook_task, retry_delay_seconds
from usage.models import BudgetAlert, UsageRecord, WebhookDelivery
from usage.periods import period_start

SECRET = "budget-webhook-secret-" + "s" * 16
SONNET = "claude-sonnet-4-5"


def body(max_tokens: int = 64) -> bytes:
    return orjson.dumps({"model": SONNET, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hi"}]})


def usage(input_tokens: int, output_tokens: int) -> dict[str, str]:
    """Sonnet 4.5 is $3 / $15 per million input / output tokens."""
    return {"x-fake-usage": orjson.dumps({"input_tokens": input_tokens, "output_tokens": output_tokens}).decode()}


async def wait_for(count, expected: int) -> None:
    """The settle runs as the response ends; poll (with a deadline) until its alerts are in."""
    deadline = time.monotonic() + 15
    while await sync_to_async(count)() < expected:
        assert time.monotonic() < deadline, f"still {await sync_to_async(count)()} of {expected}"
        await asyncio.sleep(0.05)


@pytest.fixture
def alerting(settings, webhook_receiver, tasks_run_in_process):
    settings.BUDGET_WEBHOOK_URL = webhook_receiver.url
    settings.BUDGET_WEBHOOK_SECRET = SECRET
    settings.BUDGET_ALERT_EMAILS = ("ops@example.com",)
    return webhook_receiver


pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_prices")]


async def test_a_one_dollar_daily_cap_sends_one_signed_webhook_per_threshold_retrying_after_a_500(
    fake_upstream, alerting, mailoutbox
):
    receiver = alerting
    receiver.statuses = [500]  # the first attempt fails, its retry is delivered
    token = await enroll_device(daily_spend_cap_usd=Decimal("1.00"))
    for used in (usage(150_000, 10_000), usage(50_000, 5_000), usage(1_000, 100)):  # $0.60, $0.225, $0.0045
        answer = await call_gateway("POST", "/v1/messages", headers=bearer(token, **used), body=body())
        assert answer.status == 200, answer.body
    await wait_for(lambda: WebhookDelivery.objects.filter(delivered=True).count(), 2)

    device_id = await sync_to_async(lambda: Device.objects.get().device_id)()
    alerts = await sync_to_async(lambda: list(BudgetAlert.objects.order_by("threshold_percent")))()
    assert [(a.scope, a.subject, a.period, a.threshold_percent, a.cap, a.spent) for a in alerts] == [
        ("device", device_id, "day", 50, Decimal("1.00"), Decimal("0.600000000")),
        ("device", device_id, "day", 80, Decimal("1.00"), Decimal("0.825000000")),
    ]
    assert [(r.payload["threshold_percent"], signature_is_valid(r, SECRET)) for r in receiver.received] == [
        (50, True),
        (50, True),
        (80, True),
    ]
    first = receiver.received[0].payload
    today = timezone.now().strftime("%Y-%m-%dT00:00:00Z")
    assert {k: v for k, v in first.items() if k not in ("id", "occurred_at")} == {
        "event": "budget.threshold_crossed",
        "scope": "device",
        "subject": device_id,
        "period": "day",
        "period_start": today,
        "threshold_percent": 50,
        "cap": "1.00",
        "spent": "0.6",
    }
    assert first["id"] == str(alerts[0].uuid) == receiver.received[1].payload["id"]
    deliveries = await sync_to_async(
        lambda: list(WebhookDelivery.objects.order_by("alert__threshold_percent", "attempt").select_related("alert"))
    )()
    assert [(d.alert.threshold_percent, d.attempt, d.delivered, d.status_code, d.error) for d in deliveries] == [
        (50, 1, False, 500, "HTTP 500"),
        (50, 2, True, 200, ""),
        (80, 1, True, 200, ""),
    ]
    assert sorted(message.subject for message in mailoutbox) == [
        f"Budget alert: device {device_id} reached 50% of its daily cap",
        f"Budget alert: device {device_id} reached 80% of its daily cap",
    ]
    assert all(message.to == ["ops@example.com"] for message in mailoutbox)
    assert await sync_to_async(BudgetAlert.objects.filter(dispatched_at__isnull=True).count)() == 0


async def test_a_soft_cap_is_a_budget_served_past_100_percent_that_only_alerts(fake_upstream, alerting):
    token = await enroll_device(daily_spend_cap_usd=Decimal("1.00"), spend_cap_enforcement="soft")
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token, **usage(300_000, 30_000)), body=body())
    assert answer.status == 200  # $1.35 against a $1.00 budget
    second = await call_gateway("POST", "/v1/messages", headers=bearer(token, **usage(1_000, 100)), body=body())
    assert second.status == 200
    await wait_for(lambda: BudgetAlert.objects.count(), 3)
    assert await sync_to_async(lambda: sorted(BudgetAlert.objects.values_list("threshold_percent", flat=True)))() == [
        50,
        80,
        100,
    ]


async def test_an_organization_cap_alerts_the_organizations_own_webhook_and_recipients(
    fake_upstream, settings, webhook_receiver, tasks_run_in_process, mailoutbox
):
    def make_organization() -> Organization:
        organization = Organization.objects.create(
            name="Acme",
            weekly_spend_cap_usd=Decimal("2.00"),
            budget_alert_thresholds="25",
            budget_webhook_url=webhook_receiver.url,
            budget_alert_emails="finance@acme.example, cto@acme.example",
        )
        set_organization_webhook_secret(organization=organization, secret="acme-" + SECRET)
        return organization

    organization = await sync_to_async(make_organization)()
    token = await enroll_device()
    await sync_to_async(lambda: Device.objects.update(organization=organization))()
    from tokens.device_state import invalidate_all_devices

    await sync_to_async(invalidate_all_devices)()
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token, **usage(150_000, 10_000)), body=body())
    assert answer.status == 200
    await wait_for(lambda: WebhookDelivery.objects.count(), 2)
    # The device inherits the organization's weekly cap and thresholds, so both cross 25 % of $2.00.
    device_id = await sync_to_async(lambda: Device.objects.get().device_id)()
    week_start = period_start("week", timezone.now()).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sorted(
        (r.payload["scope"], r.payload["subject"], r.payload["period"], r.payload["period_start"], r.payload["threshold_percent"])
        for r in webhook_receiver.received
    ) == [("device", device_id, "week", week_start, 25), ("org", "Acme", "week", week_start, 25)]
    assert all(signature_is_valid(r, "acme-" + SECRET) and not signature_is_valid(r, SECRET) for r in webhook_receiver.received)
    assert sorted((message.subject, tuple(message.to)) for message in mailoutbox) == [
        (f"Budget alert: device {device_id} reached 25% of its weekly cap", ("finance@acme.example", "cto@acme.example")),
        ("Budget alert: organization Acme reached 25% of its weekly cap", ("finance@acme.example", "cto@acme.example")),
    ]


def _crossing(threshold: int = 50) -> Crossing:
    device = Device.objects.create(device_id=f"laptop-{threshold}")
    start = period_start("day", timezone.now())
    return Crossing("device", device.pk, "day", start, threshold, Decimal("1.00"), Decimal("0.5"))


def test_a_threshold_recorded_twice_is_one_alert():
    crossing = _crossing()
    assert len(record_budget_alerts([crossing])) == 1
    assert record_budget_alerts([crossing]) == []
    assert BudgetAlert.objects.count() == 1


def test_the_sweep_records_a_threshold_that_no_settle_saw_once(settings):
    """Spend recorded without a settle (a process died, a batch): the rollup task's sweep finds it."""
    device = Device.objects.create(device_id="laptop-sweep", daily_spend_cap_usd=Decimal("2.00"))
    UsageRecord.objects.create(
        request_id="r-1",
        occurred_at=timezone.now(),
        endpoint="/v1/messages",
        method="POST",
        status=200,
        device_pk=device.pk,
        device_ref=device.device_id,
        cost=Decimal("1.70"),
        priced=True,
    )
    assert sweep_budget_alerts() == 2
    assert sweep_budget_alerts() == 0
    assert sorted(BudgetAlert.objects.values_list("threshold_percent", "spent")) == [
        (50, Decimal("1.700000000")),
        (80, Decimal("1.700000000")),
    ]


def test_the_sweep_queues_again_an_alert_whose_queueing_failed(settings, webhook_receiver, tasks_run_in_process):
    settings.BUDGET_WEBHOOK_URL, settings.BUDGET_WEBHOOK_SECRET = webhook_receiver.url, SECRET
    crossing = _crossing()
    [alert] = record_budget_alerts([crossing], now=timezone.now() - dt.timedelta(minutes=5))
    BudgetAlert.objects.filter(pk=alert.pk).update(dispatched_at=None)  # as if the broker had been away
    webhook_receiver.received.clear()
    sweep_budget_alerts()
    assert [r.payload["id"] for r in webhook_receiver.received] == [str(alert.uuid)]
    assert BudgetAlert.objects.get().dispatched_at is not None


def test_a_webhook_that_keeps_failing_is_given_up_after_the_configured_attempts(settings, webhook_receiver, tasks_run_in_process):
    settings.BUDGET_WEBHOOK_URL, settings.BUDGET_WEBHOOK_SECRET = webhook_receiver.url, SECRET
    settings.BUDGET_WEBHOOK_MAX_ATTEMPTS = 3
    webhook_receiver.statuses = [503] * 10
    record_budget_alerts([_crossing()])
    assert list(WebhookDelivery.objects.order_by("attempt").values_list("attempt", "status_code")) == [
        (1, 503),
        (2, 503),
        (3, 503),
    ]
    assert len(webhook_receiver.received) == 3


def test_retries_back_off_exponentially(settings):
    settings.BUDGET_WEBHOOK_RETRY_SECONDS = 30.0
    assert [retry_delay_seconds(n) for n in range(4)] == [30.0, 60.0, 120.0, 240.0]


def test_redeliver_in_the_admin_posts_the_alert_again_and_logs_the_attempt(client, settings, webhook_receiver):
    from django.contrib.auth import get_user_model

    settings.BUDGET_WEBHOOK_URL, settings.BUDGET_WEBHOOK_SECRET = webhook_receiver.url, SECRET
    webhook_receiver.statuses = [500]
    [alert] = record_budget_alerts([_crossing()])  # not eager: queued to the broker, not sent here
    from usage.budget_delivery import deliver_budget_webhook

    failed = deliver_budget_webhook(alert=alert, target="setting", attempt=1)
    assert (failed.delivered, failed.status_code) == (False, 500)
    client.force_login(get_user_model().objects.create_superuser("ops", password="ops-password-123"))
    answer = client.post("/admin/usage/webhookdelivery/", {"action": "redeliver", "_selected_action": [failed.pk]}, follow=True)
    assert "delivered (HTTP 200)" in answer.content.decode()
    assert list(WebhookDelivery.objects.order_by("attempt").values_list("attempt", "delivered")) == [(1, False), (2, True)]
    assert [signature_is_valid(r, SECRET) for r in webhook_receiver.received] == [True, True]


def test_a_celery_worker_delivers_a_webhook_through_the_real_broker(redis_required, settings, webhook_receiver):
    from tests import servers

    [alert] = record_budget_alerts([_crossing()])
    worker = servers.celery_worker_process(BUDGET_WEBHOOK_URL=webhook_receiver.url, BUDGET_WEBHOOK_SECRET=SECRET)
    try:
        deliver_budget_webhook_task.delay(alert.pk, "setting")
        deadline = time.monotonic() + 30
        while not WebhookDelivery.objects.filter(delivered=True).exists():
            assert time.monotonic() < deadline, "the worker did not deliver the webhook in time"
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    [received] = webhook_receiver.received
    assert signature_is_valid(received, SECRET) and received.payload["id"] == str(alert.uuid)
