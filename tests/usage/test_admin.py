"""The operators' usage pages in the Django admin: the dashboard with its SVG charts, prices edited
in the admin, unpriced records flagged, CSV exports, and the device list's spend summary."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.usage.cast import usage_event
from usage.models import ModelPrice, UsageRecord, UsageRollup
from usage.pricing import price_usage
from usage.reports import DeviceSpend, spend_summary_for_devices
from usage.writer import drain_usage_queue, submit_usage

pytestmark = pytest.mark.usefixtures("prices")
DASHBOARD = "/admin/usage/usagerecord/dashboard/"


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create(username="ops", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def recent_usage():
    now = timezone.now()
    rows = [
        ("req_a1", "ada", "claude-sonnet-4-5", 200, 1000, 500),  # 0.0105
        ("req_a2", "ada", "claude-sonnet-4-5", 529, 0, 0),
        ("req_b1", "bob", "claude-haiku-4-5", 200, 2000, 100),  # 0.0025
        ("req_c1", "cy", '=HYPERLINK("x")', 200, 10, 1),  # unknown model, unpriced
    ]
    for index, (request_id, device, model, status, tokens_in, tokens_out) in enumerate(rows):
        submit_usage(
            usage_event(
                request_id=request_id,
                occurred_at=now - dt.timedelta(minutes=10 + index),
                device_id=device,
                device_pk=index + 1,
                model=model,
                status=status,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                latency_ms=100.0 * (index + 1),
            )
        )
    drain_usage_queue()
    return now


def test_the_dashboard_draws_real_charts_and_numbers(operator, recent_usage):
    response = operator.get(DASHBOARD)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="usage-chart"') == 3
    assert "<title>Requests</title>" in html and "<title>Tokens</title>" in html and "<title>Spend (USD)</title>" in html
    assert '<div class="value" id="tile-requests">4</div>' in html
    assert '<div class="value" id="tile-errors">25.0%</div>' in html
    assert '<div class="value" id="tile-tokens">3,611</div>' in html
    assert '<div class="value" id="tile-spend">$0.0130</div>' in html
    assert '<div class="value" id="tile-unpriced">1</div>' in html
    assert 'class="breaker-closed">closed</span>' in html
    top_devices = html.split('id="top-devices"')[1].split("</table>")[0]
    assert top_devices.index("<td>ada</td>") < top_devices.index("<td>bob</td>")
    assert "<td>0.010500</td>" in top_devices


def test_the_dashboard_escapes_what_clients_send(operator, recent_usage):
    html = operator.get(DASHBOARD).content.decode()
    assert "=HYPERLINK(&quot;x&quot;)" in html
    assert '=HYPERLINK("x")' not in html


def test_the_dashboard_periods(operator, recent_usage):
    week = operator.get(DASHBOARD, {"period": "7d"}).content.decode()
    assert "<strong>7d</strong>" in week
    assert week.split("<h2>Requests</h2>")[1].split("</svg>")[0].count("<rect") >= 2


def test_the_dashboard_is_for_staff_only(recent_usage):
    client = Client()
    assert client.get(DASHBOARD).status_code == 302
    client.force_login(get_user_model().objects.create(username="visitor"))
    assert client.get(DASHBOARD).status_code == 302


def test_a_price_edited_in_the_admin_applies_to_the_next_record(operator):
    price = ModelPrice.objects.get(model_pattern="claude-haiku-4-5*")
    page = operator.get(f"/admin/usage/modelprice/{price.pk}/change/")
    assert page.status_code == 200
    form = {
        "model_pattern": "claude-haiku-4-5*",
        "label": "Haiku 4.5",
        "speed": "standard",
        "prompt_tokens_above": "0",
        "effective_from_0": "2020-01-01",
        "effective_from_1": "00:00:00",
        "input_per_mtok": "1",
        "output_per_mtok": "4.5",
        "cache_write_5m_per_mtok": "1.25",
        "cache_write_1h_per_mtok": "2",
        "cache_read_per_mtok": "0.1",
        "us_geo_multiplier": "1",
        "provenance": "published",
        "provenance_note": "",
    }
    response = operator.post(f"/admin/usage/modelprice/{price.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert price_usage(usage_event(model="claude-haiku-4-5-20251001", output_tokens=1_000_000)) == Decimal("4.5")


def test_unpriced_records_are_flagged_and_filterable(operator, recent_usage):
    html = operator.get("/admin/usage/usagerecord/", {"priced": "no"}).content.decode()
    assert "req_c1" in html and "req_a1" not in html
    assert "unknown model" in html


def test_requests_priced_at_an_assumed_or_fallback_rate_are_counted_and_filterable(operator, recent_usage):
    submit_usage(
        usage_event(
            request_id="req_fast_fallback",
            occurred_at=recent_usage - dt.timedelta(minutes=2),
            speed="fast",
            input_tokens=10,
            output_tokens=10,
        )
    )
    submit_usage(
        usage_event(
            request_id="req_fast_assumed",
            occurred_at=recent_usage - dt.timedelta(minutes=3),
            model="claude-opus-5-5",
            speed="fast",
            input_tokens=10,
            cache_read_tokens=10,
        )
    )
    drain_usage_queue()
    assert dict(UsageRecord.objects.exclude(price_flag="").values_list("request_id", "price_flag")) == {
        "req_fast_fallback": "fallback",
        "req_fast_assumed": "assumed",
        "req_c1": "unknown",
    }
    flagged = operator.get("/admin/usage/usagerecord/", {"price_flag": "flagged"}).content.decode()
    assert all(request_id in flagged for request_id in ("req_fast_fallback", "req_fast_assumed", "req_c1"))
    assert "req_a1" not in flagged
    assumed = operator.get("/admin/usage/usagerecord/", {"price_flag": "assumed"}).content.decode()
    assert "req_fast_assumed" in assumed and "req_fast_fallback" not in assumed
    dashboard = operator.get(DASHBOARD).content.decode()
    assert '<div class="value" id="tile-estimated">2</div>' in dashboard
    assert '<div class="value" id="tile-unpriced">1</div>' in dashboard


def test_the_record_page_shows_how_the_cost_was_computed(operator, prices):
    submit_usage(
        usage_event(
            request_id="req_costed",
            model="claude-opus-4-6",
            service_tier="batch",
            inference_geo="us",
            input_tokens=1000,
            output_tokens=500,
            cache_read_tokens=4000,
            cache_write_1h_tokens=3000,
        )
    )
    drain_usage_queue()
    record = UsageRecord.objects.get(request_id="req_costed")
    # (1000*5 + 500*25 + 3000*10 + 4000*0.50) * 0.5 * 1.1 = 27,225 per million
    assert record.cost == Decimal("0.027225")
    html = operator.get(f"/admin/usage/usagerecord/{record.pk}/change/").content.decode()
    row = ModelPrice.objects.get(model_pattern="claude-opus-4-[6-8]*")
    assert f"Price row <strong>#{row.pk}</strong> <code>claude-opus-4-[6-8]*</code>" in html
    assert "<td>Cache read</td><td>4000</td><td>0.5</td>\n          <td>0.5</td><td>1.1</td><td>0.0011</td>" in html
    assert '<th id="cost-breakdown-total">0.0272250000</th>' in html


def csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_records_export_as_csv(operator, recent_usage):
    ids = list(UsageRecord.objects.order_by("occurred_at").values_list("pk", flat=True))
    response = operator.post("/admin/usage/usagerecord/", {"action": "export_csv", "_selected_action": ids})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = csv_rows(response)
    header = rows[0]
    assert header[:3] == ["occurred_at", "request_id", "upstream_request_id"]
    by_id = {row[1]: dict(zip(header, row)) for row in rows[1:]}
    assert list(by_id) == ["req_c1", "req_b1", "req_a2", "req_a1"]
    a1 = by_id["req_a1"]
    assert (a1["cost"], a1["priced"], a1["input_tokens"]) == ("0.0105000000", "True", "1000")
    assert (by_id["req_c1"]["cost"], by_id["req_c1"]["priced"]) == ("", "False")
    assert by_id["req_c1"]["model"] == '\'=HYPERLINK("x")'  # a formula is never live in a spreadsheet


def test_rollups_export_as_csv(operator, recent_usage):
    since = (recent_usage - dt.timedelta(hours=1)).isoformat()
    call_command("rollup_usage", since=since, until=recent_usage.isoformat(), stdout=io.StringIO(), stderr=io.StringIO())
    ids = list(UsageRollup.objects.filter(period="hour").values_list("pk", flat=True))
    rows = csv_rows(operator.post("/admin/usage/usagerollup/", {"action": "export_csv", "_selected_action": ids}))
    assert rows[0][:7] == ["period", "bucket_start", "device_ref", "device_pk", "org_pk", "model", "requests"]
    assert rows[0][16] == "cost"
    per_device: dict[str, tuple[int, Decimal]] = {}
    for row in rows[1:]:
        requests, cost = per_device.get(row[2], (0, Decimal(0)))
        per_device[row[2]] = (requests + int(row[6]), cost + Decimal(row[16]))
    assert per_device == {"ada": (2, Decimal("0.0105")), "bob": (1, Decimal("0.0025")), "cy": (1, Decimal(0))}
    assert all(len(row[16].split(".")[1]) == 10 for row in rows[1:])


def test_spend_summary_for_the_device_list():
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    for request_id, at, pk, tokens_out in (
        ("req_today", now - dt.timedelta(hours=1), 41, 100_000),  # 1.50
        ("req_earlier", now - dt.timedelta(days=3), 41, 20_000),  # 0.30
        ("req_last_month", now - dt.timedelta(days=30), 41, 20_000),
        ("req_other", now - dt.timedelta(hours=2), 42, 10_000),  # 0.15
    ):
        submit_usage(usage_event(request_id=request_id, occurred_at=at, device_pk=pk, output_tokens=tokens_out))
    drain_usage_queue()
    assert spend_summary_for_devices([41, 42, 43], now=now) == {
        41: DeviceSpend(Decimal("1.5"), Decimal("1.8")),
        42: DeviceSpend(Decimal("0.15"), Decimal("0.15")),
        43: DeviceSpend(Decimal(0), Decimal(0)),
    }


@pytest.mark.parametrize(
    "path", ["/admin/usage/", "/admin/usage/modelprice/", "/admin/usage/usagerecord/", "/admin/usage/usagerollup/"]
)
def test_every_usage_admin_list_renders(operator, recent_usage, path):
    assert operator.get(path).status_code == 200


def test_the_live_page_opens_the_staff_websocket(operator):
    html = operator.get("/admin/usage/usagerecord/live/").content.decode()
    assert '<script src="/static/usage/live.js" defer></script>' in html
    assert 'id="live-table"' in html


def test_usage_records_filter_by_date_range_device_model_status_and_error_code(db, client):
    from django.contrib.auth import get_user_model

    from usage.models import UsageRecord

    client.force_login(get_user_model().objects.create_superuser("filters", password="filters-password-123"))
    rows = [
        ("a", "2026-03-01T10:00:00+00:00", "laptop-ada", "claude-sonnet-4-5", 200, ""),
        ("b", "2026-03-02T23:59:00+00:00", "laptop-ada", "claude-haiku-4-5", 429, "spend_cap_reached"),
        ("c", "2026-03-03T00:00:00+00:00", "laptop-bob", "claude-sonnet-4-5", 401, "invalid_token"),
    ]
    for request_id, occurred_at, device_ref, model, status, error_type in rows:
        UsageRecord.objects.create(
            request_id=request_id,
            occurred_at=occurred_at,
            endpoint="/v1/messages",
            method="POST",
            device_ref=device_ref,
            model=model,
            status=status,
            error_type=error_type,
            priced=False,
        )

    def shown(query: str) -> list[str]:
        response = client.get("/admin/usage/usagerecord/?" + query)
        assert response.status_code == 200, query
        return sorted(record.request_id for record in response.context["cl"].result_list)

    assert shown("occurred_at__from=2026-03-01&occurred_at__to=2026-03-02") == ["a", "b"]
    assert shown("occurred_at__from=2026-03-03") == ["c"]
    assert shown("device_ref=laptop-ada&model=claude-haiku-4-5") == ["b"]
    assert shown("status__exact=401") == ["c"]
    assert shown("error_type=spend_cap_reached") == ["b"]
    page = client.get("/admin/usage/usagerecord/?device_ref=laptop-ada").content.decode()
    assert '<input type="hidden" name="device_ref" value="laptop-ada">' in page  # the date form keeps the other filters
    assert (
        client.get("/admin/usage/usagerecord/?occurred_at__from=yesterday").status_code == 302
    )  # invalid: back to the list (Django's ?e=1)


def test_the_dashboard_lists_budgets_past_a_threshold_this_period(operator):
    from tokens.models import Device
    from usage.budget_alerts import Crossing, record_budget_alerts
    from usage.periods import period_start

    device = Device.objects.create(device_id="laptop-<b>ada</b>")
    today = period_start("day", timezone.now())
    record_budget_alerts([Crossing("device", device.pk, "day", today, 80, Decimal("1.00"), Decimal("0.85"))])
    dashboard = operator.get(DASHBOARD).content.decode()
    assert (
        f'<tr><td><a href="/admin/tokens/device/{device.pk}/change/">Device laptop-&lt;b&gt;ada&lt;/b&gt;</a></td>'
        "<td>day</td><td>80%</td><td>$0.85 / $1.00</td></tr>"
    ) in dashboard
