"""The admin index opens on the overview: the dashboard link first, the last 24 hours, and what
needs attention, each with its link."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from gateway.upstream_keys import add_upstream_key, flag_upstream_key
from tokens.models import Device, DeviceStatus
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db


def record(request_id: str, *, hours_ago: float, status: int = 200, cost: str = "0.50") -> None:
    UsageRecord.objects.create(
        request_id=request_id,
        occurred_at=timezone.now() - dt.timedelta(hours=hours_ago),
        endpoint="/v1/messages",
        method="POST",
        status=status,
        is_error=status >= 400,
        cost=Decimal(cost),
        priced=True,
    )


def test_the_index_starts_with_the_dashboard_and_the_last_24_hours(operator_client):
    record("r1", hours_ago=1)
    record("r2", hours_ago=2, status=529, cost="0.25")
    record("old", hours_ago=30, cost="9.00")
    html = operator_client.get("/admin/").content.decode()
    dashboard_link = html.index('<a href="/admin/usage/usagerecord/dashboard/">Dashboard</a>')
    assert dashboard_link < html.index('class="app-tokens module')  # before the first app's models
    assert '<div class="value" id="overview-requests">2</div>' in html
    assert '<div class="value" id="overview-errors">1</div>' in html
    assert '<div class="value" id="overview-spend">$0.75</div>' in html
    assert "Nothing: the breaker is closed" in html


def test_flagged_keys_and_pending_devices_are_listed_with_their_links(operator_client):
    key = add_upstream_key(name="prod-1", secret="sk-ant-api03-" + "p" * 40, actor="test")
    flag_upstream_key(key_id=key.pk, reason="Upstream answered 401")
    Device.objects.create(device_id="waiting-1", status=DeviceStatus.PENDING)
    Device.objects.create(device_id="waiting-2", status=DeviceStatus.PENDING)
    html = operator_client.get("/admin/").content.decode()
    assert (
        '<a class="console-alert" href="/admin/gateway/upstreamkey/?flagged_at__isnull=False">Upstream keys out of rotation: prod-1</a>'
        in html
    )
    assert (
        '<a class="console-alert" href="/admin/tokens/device/?status__exact=pending">2 devices waiting for approval</a>' in html
    )


def test_a_user_without_usage_permission_sees_no_overview(client):
    user = get_user_model().objects.create_user("clerk", password="clerk-password-123", is_staff=True)
    client.force_login(user)
    html = client.get("/admin/").content.decode()
    assert "admin-overview" not in html


def test_budgets_past_a_threshold_this_period_are_listed_with_links_to_them(operator_client):
    from tokens.models import Organization
    from usage.budget_alerts import Crossing, record_budget_alerts
    from usage.periods import period_start

    device = Device.objects.create(device_id="laptop-ada")
    organization = Organization.objects.create(name="Acme")
    now = timezone.now()
    today, month = period_start("day", now), period_start("month", now)
    record_budget_alerts(
        [
            Crossing("device", device.pk, "day", today, 50, Decimal("1.00"), Decimal("0.85")),
            Crossing("device", device.pk, "day", today, 80, Decimal("1.00"), Decimal("0.85")),
            Crossing("org", organization.pk, "month", month, 100, Decimal("50.00"), Decimal("51")),
            Crossing("device", device.pk, "day", today - dt.timedelta(days=1), 100, Decimal("1.00"), Decimal("1.2")),
        ]
    )
    html = operator_client.get("/admin/").content.decode()
    org_link = f'<a class="console-alert" href="/admin/tokens/organization/{organization.pk}/change/">'
    device_link = f'<a class="console-alert" href="/admin/tokens/device/{device.pk}/change/">'
    assert org_link + "Organization Acme is past 100% of its monthly cap</a>" in html
    assert device_link + "Device laptop-ada is past 80% of its daily cap</a>" in html
    assert "past 50%" not in html  # only the highest threshold of each budget
    assert html.index("Organization Acme") < html.index("Device laptop-ada")  # yesterday's 100 % is not listed
