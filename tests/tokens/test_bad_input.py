"""Bad /bootstrap and /refresh bodies get invalid_request_error naming the field at fault."""

from __future__ import annotations

import orjson
import pytest

from tests.tokens.client import error_of
from tokens.models import Device

pytestmark = pytest.mark.django_db


def _post_json(client, path: str, body: object):
    return client.post(path, data=orjson.dumps(body), content_type="application/json")


@pytest.mark.parametrize(
    "body, message",
    [
        ({"app_version": "1.0"}, "device_id: required."),
        ({"device_id": None}, "device_id: required."),
        ({"device_id": ""}, "device_id: must not be empty."),
        ({"device_id": "   "}, "device_id: must not be empty."),
        ({"device_id": 12345}, "device_id: must be a string."),
        ({"device_id": ["a"]}, "device_id: must be a string."),
        ({"device_id": "d" * 129}, "device_id: must be at most 128 characters."),
        ({"device_id": "dev\n1"}, "device_id: must not contain control characters."),
        ({"device_id": "dev\x00"}, "device_id: must not contain control characters."),
        ({"device_id": "dev\u0085"}, "device_id: must not contain control characters."),
        ({"device_id": "ok", "app_version": 2}, "app_version: must be a string."),
        ({"device_id": "ok", "app_version": "v" * 65}, "app_version: must be at most 64 characters."),
        ({"device_id": "ok", "device_secret": "short"}, "device_secret: must be at least 32 characters."),
        ({"device_id": "ok", "device_secret": 123}, "device_secret: must be a string."),
        (["device_id", "ok"], "body: must be a JSON object."),
        ("ok", "body: must be a JSON object."),
    ],
)
def test_bootstrap_field_errors_name_the_field(client, body, message):
    response = _post_json(client, "/bootstrap", body)
    assert error_of(response) == (400, "invalid_request_error", "invalid_request")
    assert response.json()["error"]["message"] == message
    assert not Device.objects.exists()


def test_device_id_of_exactly_128_characters_is_accepted(client):
    assert _post_json(client, "/bootstrap", {"device_id": "d" * 128}).status_code == 200


def test_malformed_json_is_named(client):
    response = client.post("/bootstrap", data=b'{"device_id": "x",', content_type="application/json")
    assert error_of(response)[0:2] == (400, "invalid_request_error")
    assert response.json()["error"]["message"].startswith("body: malformed JSON")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_named(client, content_type):
    response = client.post("/bootstrap", data=b'{"device_id": "x"}', content_type=content_type)
    assert error_of(response)[0:2] == (400, "invalid_request_error")
    assert response.json()["error"]["message"] == f"content-type: must be application/json, not {content_type}."


def test_empty_bootstrap_body_is_named(client):
    response = client.post("/bootstrap", data=b"", content_type="application/json")
    assert response.json()["error"]["message"] == "body: a JSON object is required."


@pytest.mark.parametrize("path", ["/bootstrap", "/refresh"])
def test_body_over_64_kb_is_refused_as_too_large(client, path):
    body = orjson.dumps({"device_id": "x", "padding": "p" * (64 * 1024)})
    response = client.post(path, data=body, content_type="application/json")
    assert error_of(response) == (413, "request_too_large", "request_too_large")
    assert response.json()["error"]["message"] == "body: over 65536 bytes, the limit for this endpoint."


@pytest.mark.parametrize(
    "body, message",
    [
        ({"refresh_token": 5}, "refresh_token: must be a string."),
        ({"refresh_token": ""}, "refresh_token: must not be empty."),
        ({"refresh_token": "a\tb"}, "refresh_token: must not contain control characters."),
        ({"refresh_token": "t" * 4097}, "refresh_token: must be at most 4096 characters."),
    ],
)
def test_refresh_field_errors_name_the_field(client, body, message):
    response = _post_json(client, "/refresh", body)
    assert error_of(response)[0:2] == (400, "invalid_request_error")
    assert response.json()["error"]["message"] == message


def test_refresh_with_a_non_json_body_is_named(client):
    response = client.post("/refresh", data=b"refresh_token=abc", content_type="application/x-www-form-urlencoded")
    assert response.json()["error"]["message"] == "content-type: must be application/json, not application/x-www-form-urlencoded."


def test_bootstrap_accepts_only_post(client):
    assert client.get("/bootstrap").status_code == 405
