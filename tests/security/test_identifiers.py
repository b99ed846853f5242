"""Identifiers that look like something else: control and bidi characters, untrimmed or
unnormalised spellings and case variants of one device id, and model names that would forge log
lines. Refused with 400 invalid_request_error naming the field, or folded into the one device."""

from __future__ import annotations

import uuid

import orjson
import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from tests.gateway.conftest import bearer, call_gateway
from tests.tokens.client import bootstrap, error_of, jwt_parts
from tokens.models import Device


@pytest.fixture(autouse=True)
def open_enrollment(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_MODE = "open"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000


def _message(response) -> str:
    return orjson.loads(response.content)["error"]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("device_id", "code_point", "position"),
    [
        ("RT-DEV-1\u202e", "202E", 8),  # right-to-left override
        ("\u202aRT-DEV-1", "202A", 0),  # left-to-right embedding
        ("RT\u2066-DEV-1", "2066", 2),  # left-to-right isolate
        ("RT-DEV-1\u2069x", "2069", 8),  # pop directional isolate
        ("RT-\u200eDEV-1", "200E", 3),  # left-to-right mark
        ("RT-\u200fDEV-1", "200F", 3),  # right-to-left mark
        ("RT-\u200bDEV-1", "200B", 3),  # zero-width space
        ("RT-\ufeffDEV-1", "FEFF", 3),  # zero-width no-break space
        ("RT\u00a0DEV-1", "00A0", 2),  # no-break space
    ],
)
def test_device_id_with_bidi_or_invisible_characters_is_refused_naming_the_field(client, device_id, code_point, position):
    response = bootstrap(client, device_id)

    assert error_of(response) == (400, "invalid_request_error", "invalid_request")
    assert (
        _message(response)
        == f"device_id: must not contain control or invisible characters (U+{code_point} at position {position})."
    )
    assert Device.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("device_id", ["rt-dev-1\n", "rt\x00dev", "rt\x1bdev", "rt\u0085dev"])
def test_device_id_with_control_characters_is_refused_naming_the_field(client, device_id):
    response = bootstrap(client, device_id)
    assert error_of(response) == (400, "invalid_request_error", "invalid_request")
    assert _message(response) == "device_id: must not contain control characters."


@pytest.mark.django_db
def test_app_version_with_a_right_to_left_override_is_refused_naming_the_field(client):
    response = bootstrap(client, "laptop-1", app_version="1.0\u202e0.2")
    assert error_of(response) == (400, "invalid_request_error", "invalid_request")
    assert _message(response) == "app_version: must not contain control or invisible characters (U+202E at position 3)."


@pytest.mark.django_db
@pytest.mark.parametrize("look_alike", ["rt-dev-1 ", " RT-DEV-1", "rt-dev-1", "Rt-Dev-1  "])
def test_look_alike_device_id_is_the_same_device_not_a_new_one(client, look_alike):
    owner = bootstrap(client, "RT-DEV-1").json()

    stranger = bootstrap(client, look_alike)

    assert error_of(stranger) == (401, "authentication_error", "device_secret_invalid")
    assert list(Device.objects.values_list("device_id", flat=True)) == ["RT-DEV-1"]
    returning = bootstrap(client, look_alike, device_secret=owner["device_secret"])
    assert returning.status_code == 200
    assert jwt_parts(returning.json()["wrapper_token"])[1]["sub"] == "RT-DEV-1"


@pytest.mark.django_db
def test_decomposed_spelling_of_a_device_id_is_the_same_device(client):
    bootstrap(client, "caf\u00e9-laptop")
    assert error_of(bootstrap(client, "cafe\u0301-laptop"))[2] == "device_secret_invalid"
    assert Device.objects.count() == 1


@pytest.mark.django_db
def test_user_label_with_a_right_to_left_override_is_refused_in_the_admin(admin_client):
    device = Device.objects.create(device_id="labelled")
    response = admin_client.post(
        f"/admin/tokens/device/{device.pk}/change/",
        {"device_id": "labelled", "user_label": "Ada\u202e", "app_version": "", "status": "active", "allowed_models": ""},
    )
    assert response.status_code == 200
    assert "Must not contain control or invisible characters (U+202E at position 3)." in response.content.decode()
    device.refresh_from_db()
    assert device.user_label == ""


@pytest.mark.django_db
def test_device_id_differing_only_in_case_cannot_be_added_in_the_admin(admin_client):
    Device.objects.create(device_id="RT-DEV-1")
    response = admin_client.post("/admin/tokens/device/add/", {"device_id": "rt-dev-1", "status": "active"})
    assert response.status_code == 200
    assert "A device with this device id (ignoring case) already exists." in response.content.decode()
    assert Device.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "claude-sonnet-4-5\nINFO forged log line",
            "model: must not contain control or invisible characters (U+000A at position 17).",
        ),
        ("claude-sonnet-4-5\x00", "model: must not contain control or invisible characters (U+0000 at position 17)."),
        ("claude-\u202e5-4-tennos", "model: must not contain control or invisible characters (U+202E at position 7)."),
    ],
)
def test_model_name_with_control_characters_is_refused_at_the_gateway(model, message):
    token = bootstrap(Client(), f"model-{uuid.uuid4().hex[:8]}").json()["wrapper_token"]
    body = orjson.dumps({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})

    answer = async_to_sync(call_gateway)("POST", "/v1/messages", headers=bearer(token), body=body)

    assert answer.status == 400
    error = orjson.loads(answer.body)["error"]
    assert (error["type"], error["message"]) == ("invalid_request_error", message)
