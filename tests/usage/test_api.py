"""GET /admin/usage through the real HTTP surface: a device token sees its own usage, an operator
key or staff session everything; filters, grouping and totals; documented in the OpenAPI page."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from tests.usage.cast import usage_event
from tokens.device_state import forget_device_states
from tokens.models import Device, Organization
from tokens.operators import create_operator_api_key
from tokens.signing_keys import forget_keyring
from usage.models import ModelPrice, UsageRecord
from usage.writer import drain_usage_queue, submit_usage

pytestmark = pytest.mark.usefixtures("live_prices")


@pytest.fixture(autouse=True)
def isolated_token_state(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_MODE = "open"
    forget_keyring()
    forget_device_states()
    yield
    forget_keyring()
    forget_device_states()


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def fleet(client):
    """Two enrolled devices of one organization and a third outside it, each with usage yesterday."""
    org = Organization.objects.create(name="Acme")
    tokens = {}
    for device_id in ("laptop-ada", "laptop-bob", "kiosk-cy"):
        response = client.post("/bootstrap", data={"device_id": device_id, "app_version": "1.0"}, content_type="application/json")
        assert response.status_code == 200, response.content
        tokens[device_id] = response.json()["wrapper_token"]
    Device.objects.filter(device_id__in=["laptop-ada", "laptop-bob"]).update(organization=org)
    devices = {device.device_id: device for device in Device.objects.all()}
    day = (timezone.now() - dt.timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)

    def use(device_id: str, at: dt.datetime, **fields: object) -> None:
        device = devices[device_id]
        submit_usage(
            usage_event(occurred_at=at, device_id=device_id, device_pk=device.pk, org_id=device.organization_id, **fields)
        )

    # Sonnet 4.5 at 1000 in / 500 out = 0.0105; Haiku 4.5 at 1000 in / 500 out = 0.0035
    use("laptop-ada", day, input_tokens=1000, output_tokens=500, cache_read_tokens=3000)
    use("laptop-ada", day + dt.timedelta(hours=2), model="claude-haiku-4-5", input_tokens=1000, output_tokens=500)
    use("laptop-ada", day + dt.timedelta(hours=2, minutes=5), status=529, error_type="overloaded_error")
    use(
        "laptop-bob",
        day + dt.timedelta(hours=1),
        input_tokens=1000,
        output_tokens=500,
        cache_write_5m_tokens=100,
        cache_write_1h_tokens=10,
    )
    use("kiosk-cy", day, model="gpt-unknown", input_tokens=77, output_tokens=7)
    drain_usage_queue()
    return {"org": org, "tokens": tokens, "devices": devices, "day": day}


def get_usage(client: Client, token: str | None = None, **params: object):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return client.get("/admin/usage", params, headers=headers)


def test_a_device_token_reads_only_its_own_usage(client, fleet):
    response = get_usage(client, fleet["tokens"]["laptop-ada"])
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["scope"] == "device"
    assert body["filters"] == {"device": "laptop-ada", "org": None, "person": None, "model": None, "request_id": None}
    # 0.0105 + 0.0009 (3000 cache reads at 0.30) + 0.0035
    assert body["totals"] == {
        "requests": 3,
        "errors": 1,
        "unpriced_requests": 0,
        "estimated_requests": 0,
        "input_tokens": 2000,
        "output_tokens": 1000,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 3000,
        "web_search_requests": 0,
        "web_fetch_requests": 0,
        "cost": "0.0149000000",
    }
    assert body["groups"] == []
    assert body["record"] is None


def test_a_device_token_cannot_name_another_device(client, fleet):
    response = get_usage(client, fleet["tokens"]["laptop-ada"], device="laptop-bob")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_an_operator_key_reads_everything(client, fleet):
    _, secret = create_operator_api_key(name="finance", created_by=None)
    body = get_usage(client, secret).json()
    assert body["scope"] == "all"
    # bob: 0.0105 + 100*3.75 + 10*6 = 0.010935; cy is unpriced
    assert (body["totals"]["requests"], body["totals"]["unpriced_requests"], body["totals"]["cost"]) == (5, 1, "0.0258350000")
    assert body["totals"]["input_tokens"] == 3077


def test_a_staff_session_that_may_view_usage_reads_everything(client, fleet):
    staff = get_user_model().objects.create(username="ops", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    client.force_login(staff)
    assert get_usage(client).json()["totals"]["requests"] == 5


def test_without_credentials_the_answer_is_401(client, fleet):
    response = get_usage(client)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert get_usage(client, "not-a-token").status_code == 401


def test_filters_by_period_device_org_and_model(client, fleet):
    _, secret = create_operator_api_key(name="finance", created_by=None)
    day = fleet["day"]
    by_org = get_usage(client, secret, org=fleet["org"].pk).json()["totals"]
    assert (by_org["requests"], by_org["cost"]) == (4, "0.0258350000")
    by_device = get_usage(client, secret, device="laptop-bob").json()["totals"]
    assert (by_device["requests"], by_device["cache_write_5m_tokens"], by_device["cache_write_1h_tokens"]) == (1, 100, 10)
    by_model = get_usage(client, secret, model="claude-haiku-4-5").json()["totals"]
    assert (by_model["requests"], by_model["cost"]) == (1, "0.0035000000")
    since, until = day + dt.timedelta(minutes=30), day + dt.timedelta(hours=2)
    window = get_usage(client, secret, since=since.isoformat(), until=until.isoformat())
    assert window.json()["totals"]["requests"] == 1  # bob's, at 10:00


def test_group_by_hour_day_model_and_device(client, fleet):
    _, secret = create_operator_api_key(name="finance", created_by=None)
    day = fleet["day"]
    hours = get_usage(client, secret, group_by="hour").json()["groups"]
    assert [(g["key"], g["requests"]) for g in hours] == [
        (day.strftime("%Y-%m-%dT09:00:00Z"), 2),
        (day.strftime("%Y-%m-%dT10:00:00Z"), 1),
        (day.strftime("%Y-%m-%dT11:00:00Z"), 2),
    ]
    days = get_usage(client, secret, group_by="day").json()["groups"]
    assert [(g["key"], g["requests"], g["errors"]) for g in days] == [(day.strftime("%Y-%m-%d"), 5, 1)]
    models = get_usage(client, secret, group_by="model").json()["groups"]
    assert [(g["key"], g["cost"]) for g in models] == [
        ("claude-sonnet-4-5-20250929", "0.0223350000"),
        ("claude-haiku-4-5", "0.0035000000"),
        ("gpt-unknown", "0.0000000000"),
    ]
    devices = get_usage(client, fleet["tokens"]["laptop-ada"], group_by="device").json()["groups"]
    assert [(g["key"], g["requests"]) for g in devices] == [("laptop-ada", 3)]


def test_bad_parameters_are_400(client, fleet):
    _, secret = create_operator_api_key(name="finance", created_by=None)
    assert get_usage(client, secret, group_by="week").status_code == 400
    assert get_usage(client, secret, since="2026-11-02T00:00:00Z", until="2026-11-01T00:00:00Z").status_code == 400


def test_the_report_is_documented_in_the_openapi_page(client):
    schema = orjson.loads(client.get("/api/openapi.json").content)
    operation = schema["paths"]["/admin/usage"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {
        "since",
        "until",
        "device",
        "org",
        "person",
        "model",
        "group_by",
        "request_id",
    }
    report = schema["components"]["schemas"]["UsageReportOut"]
    assert set(report["properties"]) == {"scope", "since", "until", "filters", "group_by", "totals", "groups", "record"}
    totals = schema["components"]["schemas"]["UsageTotalsOut"]["properties"]
    assert totals["cost"]["type"] == "string"


def recorded_request_id(device_id: str, model: str) -> str:
    return UsageRecord.objects.get(device_ref=device_id, model=model, status=200).request_id


def test_a_device_token_reads_how_its_own_record_was_costed(client, fleet):
    request_id = recorded_request_id("laptop-bob", "claude-sonnet-4-5-20250929")
    body = get_usage(client, fleet["tokens"]["laptop-bob"], request_id=request_id).json()
    record = body["record"]
    row = ModelPrice.objects.get(model_pattern="claude-sonnet-4-5*", prompt_tokens_above=0)
    assert (record["status"], record["flag"], record["price_row"], record["pattern"]) == (
        "priced",
        "",
        row.pk,
        "claude-sonnet-4-5*",
    )
    assert record["effective_from"] == "2020-01-01T00:00:00+00:00"
    assert record["multipliers"] == {"batch": "1", "geo": "1"}
    assert [(line["category"], line["tokens"], line["rate_per_mtok"], line["amount"]) for line in record["lines"]] == [
        ("Input", 1000, "3", "0.003"),
        ("Output", 500, "15", "0.0075"),
        ("Cache write (5m)", 100, "3.75", "0.000375"),
        ("Cache write (1h)", 10, "6", "0.00006"),
        ("Cache read", 0, "0.3", "0"),
    ]
    assert record["total"] == record["stored_cost"] == "0.0109350000"
    assert body["totals"]["requests"] == 1


def test_a_device_token_cannot_read_another_devices_record(client, fleet):
    request_id = recorded_request_id("laptop-bob", "claude-sonnet-4-5-20250929")
    response = get_usage(client, fleet["tokens"]["laptop-ada"], request_id=request_id)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    missing = get_usage(client, fleet["tokens"]["laptop-ada"], request_id="req_gw_nothing")
    assert (missing.status_code, missing.json()["error"]["message"]) == (
        404,
        response.json()["error"]["message"].replace(request_id, "req_gw_nothing"),
    )


def test_an_operator_reads_any_record_and_an_unpriced_one_says_so(client, fleet):
    _, secret = create_operator_api_key(name="finance", created_by=None)
    request_id = recorded_request_id("kiosk-cy", "gpt-unknown")
    record = get_usage(client, secret, request_id=request_id).json()["record"]
    assert (record["status"], record["flag"], record["total"], record["lines"]) == ("unpriced", "unknown", None, [])
