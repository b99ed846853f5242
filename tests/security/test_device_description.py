"""What a device says about itself (device_name, app_name, os) is an attacker's text: bounded,
printable and free of markup before it reaches the admin, the logs or an export."""

from __future__ import annotations

import uuid

import orjson
import pytest

from tests.tokens.client import bootstrap, error_of
from tokens.models import Device

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def open_enrollment(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_MODE = "open"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000


def refused_with(response) -> str:
    assert error_of(response) == (400, "invalid_request_error", "invalid_request")
    return orjson.loads(response.content)["error"]["message"]


def test_megabyte_device_name_is_refused_before_it_is_parsed(client):
    response = bootstrap(client, "dev-huge", device_name="x" * 1_000_000)
    assert error_of(response)[:2] == (413, "request_too_large")
    assert not Device.objects.filter(device_id="dev-huge").exists()


def test_device_name_over_its_length_cap_is_refused(client):
    assert refused_with(bootstrap(client, "dev-long", device_name="x" * 101)) == "device_name: must be at most 100 characters."
    assert bootstrap(client, "dev-long", device_name="x" * 100).status_code == 200


def test_os_and_app_name_over_their_length_cap_are_refused(client):
    assert refused_with(bootstrap(client, "dev-long-os", os="x" * 65)) == "os: must be at most 64 characters."
    assert refused_with(bootstrap(client, "dev-long-app", app_name="x" * 65)) == "app_name: must be at most 64 characters."


@pytest.mark.parametrize(
    "value", ["laptop\nINFO forged log line", "laptop\r", "lap\x00top", "lap\x1btop", "RT\u202eDEV", "a\u200bb"]
)
def test_control_and_invisible_characters_in_a_description_are_refused(client, value):
    assert refused_with(bootstrap(client, "dev-ctl", device_name=value)).startswith("device_name: must not contain control")
    assert not Device.objects.filter(device_id="dev-ctl").exists()


@pytest.mark.parametrize("value", ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "`id`"])
def test_markup_in_a_description_is_refused(client, value):
    assert refused_with(bootstrap(client, "dev-html", app_name=value)).startswith("app_name: must not contain ")
    assert not Device.objects.filter(device_id="dev-html").exists()


@pytest.mark.parametrize("value", ["=1+1", "+1+1", "-2", "@SUM(A1)"])
def test_spreadsheet_formula_as_a_description_is_refused(client, value):
    assert refused_with(bootstrap(client, "dev-formula", device_name=value)) == "device_name: must not start with = + - or @."


def test_non_string_description_is_refused(client):
    assert refused_with(bootstrap(client, "dev-typed", device_name={"nested": "object"})) == "device_name: must be a string."
