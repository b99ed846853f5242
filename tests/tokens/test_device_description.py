"""Device name, app name and OS sent at bootstrap: stored, kept when not sent again, and shown and
searchable in the admin."""

from __future__ import annotations

import uuid

import pytest

from tests.tokens.client import bootstrap
from tokens.models import Device

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def open_enrollment(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_MODE = "open"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000


def described(device_id: str) -> tuple[str, str, str, str]:
    device = Device.objects.get(device_id=device_id)
    return device.device_name, device.app_name, device.app_version, device.os


def test_bootstrap_stores_what_the_device_says_it_is(client):
    response = bootstrap(client, "dev-described", "2.0.1", device_name="ada-laptop", app_name="Scribe", os="Linux 6.8")
    assert response.status_code == 200
    assert described("dev-described") == ("ada-laptop", "Scribe", "2.0.1", "Linux 6.8")


def test_a_later_bootstrap_without_a_description_keeps_it(client):
    secret = bootstrap(client, "dev-kept", "1.0", device_name="ada-laptop", app_name="Scribe", os="Linux 6.8").json()[
        "device_secret"
    ]
    assert bootstrap(client, "dev-kept", "1.1", device_secret=secret).status_code == 200
    assert described("dev-kept") == ("ada-laptop", "Scribe", "1.1", "Linux 6.8")


def test_a_later_bootstrap_updates_the_description(client):
    secret = bootstrap(client, "dev-renamed", "1.0", device_name="old-name", os="Linux 6.8").json()["device_secret"]
    bootstrap(client, "dev-renamed", "1.0", device_secret=secret, device_name="new-name", os="Linux 6.9")
    assert described("dev-renamed") == ("new-name", "", "1.0", "Linux 6.9")


def test_admin_lists_and_searches_the_description(client, operator):
    bootstrap(client, "dev-ada", device_name="ada-laptop", app_name="Scribe", os="macOS 15.1")
    bootstrap(client, "dev-bob", device_name="bob-desktop", app_name="Ledger", os="Windows 11")
    client.force_login(operator)
    listing = client.get("/admin/tokens/device/").content.decode()
    assert all(text in listing for text in ("ada-laptop", "Scribe", "macOS 15.1", "bob-desktop", "Ledger", "Windows 11"))
    for query, found, hidden in (
        ("ada-laptop", "dev-ada", "dev-bob"),
        ("Ledger", "dev-bob", "dev-ada"),
        ("Windows", "dev-bob", "dev-ada"),
    ):
        page = client.get("/admin/tokens/device/", {"q": query}).content.decode()
        assert found in page and hidden not in page
