"""What tests across packages share: the constants of the fake upstream's cast, one way to wait for
something that happens off the request path, and one way to enroll a device.

Waiting: `poll_until` (and `apoll_until` inside an event loop) asks again until the condition holds
or the deadline passes, then fails the test saying what it waited for; never a bare sleep.

Enrolling: a device enrolls as a real one does, through POST /bootstrap, on the gateway in this
process (`enroll_device`) or on a gateway server of its own (`enroll`); policy fields are then set
as an operator would, through `policy_changed` so every cached copy of the device forgets it.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import httpx
from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction
from django.test import AsyncClient

from tokens.models import Device
from tokens.revocation import policy_changed

MASTER_KEY = "sk-ant-test-master-" + "k" * 20 + "MK42"
"""The upstream key the fake Anthropic API accepts in the gateway tests."""
MESSAGE_BODY = b'{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}'
STREAM_BODY = b'{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Say hello"}]}'

OPERATOR_PASSWORD = "ops-password-123"

T = TypeVar("T")


def poll_until(
    condition: Callable[[], T],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    interval: float = 0.05,
    context: Callable[[], str] | None = None,
) -> T:
    """The condition's first truthy answer; the test fails once `timeout` seconds pass without one,
    with what `context` tells then (a server's log, say)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}" + (
            f"\n{context()}" if context else ""
        )
        time.sleep(interval)
    return result


async def apoll_until(
    condition: Callable[[], T | Awaitable[T]], timeout: float = 10.0, what: str = "the condition", *, interval: float = 0.02
) -> T:
    """`poll_until` for async tests: the condition may be a coroutine function, and the loop keeps
    running between tries."""
    deadline = time.monotonic() + timeout
    while True:
        answer = condition()
        result = await answer if inspect.isawaitable(answer) else answer
        if result:
            return result  # type: ignore[return-value]
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(interval)


class HasUrl(Protocol):
    @property
    def url(self) -> str: ...


def new_device_id(prefix: str = "dev") -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def set_device_policy(device_id: str, policy: dict[str, object]) -> None:
    with transaction.atomic():
        device = Device.objects.get(device_id=device_id)
        for name, value in policy.items():
            setattr(device, name, value)
        device.save()
        policy_changed(device=device)


def _bootstrap_body(device_id: str) -> dict[str, str]:
    return {"device_id": device_id, "app_version": "1.0.0"}


async def enroll_device(*, device_id: str | None = None, **policy: object) -> str:
    """A wrapper token for a new device enrolled on the gateway in this process."""
    device_id = device_id or new_device_id()
    response = await AsyncClient().post("/bootstrap", _bootstrap_body(device_id), content_type="application/json")
    assert response.status_code == 200, response.content
    if policy:
        await sync_to_async(set_device_policy)(device_id, policy)
    return response.json()["wrapper_token"]


def enroll(server: HasUrl, *, device_id: str | None = None, **policy: object) -> str:
    """A wrapper token for a new device enrolled on a gateway server (`tests.servers`)."""
    device_id = device_id or new_device_id("live")
    answer = httpx.post(server.url + "/bootstrap", json=_bootstrap_body(device_id), timeout=10)
    assert answer.status_code == 200, answer.text
    if policy:
        async_to_sync(sync_to_async(set_device_policy))(device_id, policy)
    return answer.json()["wrapper_token"]
