"""The budget alert pages in a real browser (Debian's Chromium, headless): the organization's alert
settings with its write-only secret and its list's cap columns, the alerts list, and the delivery
log with Redeliver. Screenshots go to test-artifacts/admin/."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.proxyproject.test_admin_browser import CHROMIUM, browser_page, shot  # noqa: F401  (the browser fixture)
from tests.servers import gateway_process
from tests.usage.webhook_receiver import WebhookReceiver, signature_is_valid
from tokens.models import Device, Organization
from usage.budget_alerts import Crossing, record_budget_alerts
from usage.budget_delivery import deliver_budget_webhook
from usage.models import BudgetAlert, WebhookDelivery
from usage.periods import period_start

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (.ci/run installs it)")
SECRET = "budget-webhook-secret-" + "b" * 16
PASSWORD = "operator-password-123"


@pytest.fixture
def receiver(settings):
    with WebhookReceiver() as receiver:
        settings.BUDGET_WEBHOOK_URL, settings.BUDGET_WEBHOOK_SECRET = receiver.url, SECRET
        yield receiver


@pytest.fixture
def admin_server(transactional_db, settings, receiver):
    """The gateway process serving the admin, posting webhooks to the test's receiver."""
    get_user_model().objects.create_superuser("operator", password=PASSWORD)
    server = gateway_process(
        REDIS_KEY_PREFIX=settings.REDIS_KEY_PREFIX, BUDGET_WEBHOOK_URL=receiver.url, BUDGET_WEBHOOK_SECRET=SECRET
    ).start()
    yield server
    server.stop()


def log_in(page, server) -> None:
    page.goto(server.url + "/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(server.url + "/admin/")


def alerts_for(device: Device) -> None:
    today = period_start("day", timezone.now())
    record_budget_alerts(
        [Crossing("device", device.pk, "day", today, percent, Decimal("1.00"), Decimal("0.85")) for percent in (50, 80)]
    )


def test_operator_sets_an_organizations_alerts_and_sees_its_caps_in_the_list(admin_server, browser_page):
    server, page = admin_server, browser_page
    Organization.objects.create(name="Acme", weekly_spend_cap_usd=Decimal("25.00"), spend_cap_enforcement="soft")
    log_in(page, server)
    page.goto(server.url + "/admin/tokens/organization/")
    page.click("#result_list a:text-is('Acme')")
    page.fill("#id_budget_alert_thresholds", "75, 90")
    page.fill("#id_budget_webhook_url", "https://hooks.acme.example/budget")
    page.fill("#id_budget_webhook_secret", SECRET)
    page.fill("#id_budget_alert_emails", "finance@acme.example")
    page.click("input[name=_continue]")
    assert "was changed successfully" in page.locator("ul.messagelist").inner_text()
    assert page.locator(".field-webhook_secret_state").inner_text().endswith("set (stored encrypted, never shown)")
    assert page.locator("#id_budget_webhook_secret").input_value() == ""
    assert SECRET not in page.content()
    assert "Budget alert thresholds (%)\t75, 90\torganization Acme" in page.locator(".field-effective_policy").inner_text()
    shot(page, "21-organization-budget-alerts")

    page.goto(server.url + "/admin/tokens/organization/")
    row = page.locator("#result_list tbody tr", has_text="Acme").inner_text()
    assert "$25.00" in row and "soft" in row
    visible = page.locator("#changelist .results").bounding_box()
    for column in ("daily_cap", "weekly_cap", "monthly_cap", "enforcement", "tokens_revoked_before"):
        box = page.locator(f"#result_list thead th.column-{column}").bounding_box()
        # The columns fit 1400 px: inside the list's visible area, no horizontal scrolling.
        assert box is not None and visible is not None and box["x"] + box["width"] <= visible["x"] + visible["width"] + 1, column
    shot(page, "22-organization-list")


def test_operator_sees_the_budget_alerts_and_opens_the_device_from_one(admin_server, browser_page):
    server, page = admin_server, browser_page
    device = Device.objects.create(device_id="laptop-ada", daily_spend_cap_usd=Decimal("1.00"))
    alerts_for(device)
    log_in(page, server)
    assert "Device laptop-ada is past 80% of its daily cap" in page.locator("#overview-attention").inner_text()
    page.goto(server.url + "/admin/usage/budgetalert/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert "80%" in rows.first.inner_text() and "$0.85 / $1.00" in rows.first.inner_text()
    visible = page.locator("#changelist .results").bounding_box()
    for column in ("subject_display", "period_display", "threshold_display", "spent_display", "deliveries_link"):
        box = page.locator(f"#result_list thead th.column-{column}").bounding_box()
        assert box is not None and visible is not None and box["x"] + box["width"] <= visible["x"] + visible["width"] + 1, column
    shot(page, "23-budget-alerts")
    rows.first.locator("a:text-is('laptop-ada')").click()
    page.wait_for_url(f"{server.url}/admin/tokens/device/{device.pk}/change/")


def test_operator_redelivers_a_failed_webhook_from_the_delivery_log(admin_server, browser_page, receiver):
    server, page = admin_server, browser_page
    device = Device.objects.create(device_id="laptop-ada")
    alerts_for(device)
    receiver.statuses = [500]
    alert = BudgetAlert.objects.get(threshold_percent=80)
    failed = deliver_budget_webhook(alert=alert, target="setting", attempt=1)
    assert failed is not None and failed.status_code == 500
    log_in(page, server)
    page.goto(server.url + "/admin/usage/webhookdelivery/")
    row = page.locator("#result_list tbody tr").first
    assert "HTTP 500" in row.inner_text()
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "redeliver")
    page.click("button[name=index]")
    assert "delivered (HTTP 200)" in page.locator("ul.messagelist").inner_text()
    assert page.locator("#result_list tbody tr").count() == 2
    visible = page.locator("#changelist .results").bounding_box()
    for column in ("attempt", "delivered", "status", "error", "duration"):
        box = page.locator(f"#result_list thead th.column-{column}").bounding_box()
        assert box is not None and visible is not None and box["x"] + box["width"] <= visible["x"] + visible["width"] + 1, column
    shot(page, "24-webhook-deliveries")
    assert [signature_is_valid(r, SECRET) for r in receiver.received] == [True, True]
    assert list(WebhookDelivery.objects.order_by("attempt").values_list("attempt", "delivered")) == [(1, False), (2, True)]
