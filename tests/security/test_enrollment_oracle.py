"""Who is enrolled must not leak from /bootstrap: in `secret` and `approval` modes a bootstrap
without a valid enrollment credential gets the same answer (status, body, headers, and about the
same time) for a known device as for an unknown one."""

from __future__ import annotations

import statistics
import time
import uuid

import orjson
import pytest
from django.test import Client

from tests.tokens.client import bootstrap
from tokens.models import Device, DeviceStatus
from tokens.revocation import block_device

BOOTSTRAP_SECRET = "bootstrap-secret-for-the-oracle-test"


@pytest.fixture(autouse=True)
def isolated(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000
    settings.BOOTSTRAP_SECRET = BOOTSTRAP_SECRET


def _enrolled(client: Client, settings, device_id: str, status: str = DeviceStatus.ACTIVE) -> None:
    mode = settings.ENROLLMENT_MODE
    settings.ENROLLMENT_MODE = "open"
    assert bootstrap(client, device_id).status_code == 200
    settings.ENROLLMENT_MODE = mode
    device = Device.objects.get(device_id=device_id)
    if status == DeviceStatus.BLOCKED:
        block_device(device=device, actor="test")
    elif status == DeviceStatus.PENDING:
        Device.objects.filter(pk=device.pk).update(status=status)


def _answer(response) -> tuple[int, dict, dict]:
    """Status, body and headers, with what is fresh on every answer (the request id, a device secret)
    replaced by its length."""
    body = orjson.loads(response.content)
    request_id = body.pop("request_id")
    details = body["error"]["details"]
    if "device_secret" in details:
        details["device_secret"] = len(details["device_secret"])
    headers = {name.lower(): len(value) if value == request_id else value for name, value in response.headers.items()}
    return response.status_code, body, headers


@pytest.mark.django_db
@pytest.mark.parametrize("presented", [None, "wrong-bootstrap-secret"])
@pytest.mark.parametrize("status", [DeviceStatus.ACTIVE, DeviceStatus.BLOCKED])
def test_secret_mode_answers_known_and_unknown_devices_alike_without_the_bootstrap_secret(client, settings, presented, status):
    settings.ENROLLMENT_MODE = "secret"
    _enrolled(client, settings, "known-laptop", status)
    headers = {"x-bootstrap-secret": presented} if presented else {}

    known = bootstrap(client, "known-laptop", headers=headers)
    unknown = bootstrap(client, "unknown-laptop", headers=headers)

    assert _answer(known) == _answer(unknown)
    assert known.status_code == 401
    assert Device.objects.filter(device_id="unknown-laptop").count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("status", [DeviceStatus.ACTIVE, DeviceStatus.PENDING, DeviceStatus.BLOCKED])
@pytest.mark.parametrize("presented", [None, "w" * 43])
def test_approval_mode_answers_a_known_device_without_its_secret_as_an_unknown_one(client, settings, status, presented):
    settings.ENROLLMENT_MODE = "approval"
    _enrolled(client, settings, "known-laptop", status)
    fields = {"device_secret": presented} if presented else {}

    known = bootstrap(client, "known-laptop", **fields)
    unknown = bootstrap(client, f"unknown-laptop-{status}", **fields)

    assert _answer(known) == _answer(unknown)
    assert _answer(known)[:2] == (
        403,
        {
            "type": "error",
            "error": {
                "type": "permission_error",
                "message": orjson.loads(known.content)["error"]["message"],
                "details": {"error_code": "device_pending_approval", "device_secret": 43},
            },
        },
    )
    assert Device.objects.get(device_id="known-laptop").status == status


@pytest.mark.django_db
def test_approval_mode_answers_known_and_unknown_devices_in_similar_time(client, settings):
    settings.ENROLLMENT_MODE = "approval"
    _enrolled(client, settings, "known-laptop")

    def median_seconds(device_ids: list[str]) -> float:
        durations = []
        for device_id in device_ids:
            started = time.perf_counter()
            assert bootstrap(client, device_id).status_code == 403
            durations.append(time.perf_counter() - started)
        return statistics.median(durations)

    known = median_seconds(["known-laptop"] * 21)
    unknown = median_seconds([f"unknown-{index}" for index in range(21)])
    assert 1 / 3 < known / unknown < 3, (known, unknown)
