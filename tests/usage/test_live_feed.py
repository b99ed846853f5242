"""The admin's live feed: a channels websocket that sessions allowed to view usage open, fed by the usage writer."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from proxyproject.asgi import application
from tests.usage.cast import usage_event
from usage.consumers import REFUSED
from usage.writer import flush_usage, stop_usage_writer, submit_usage

pytestmark = pytest.mark.usefixtures("live_prices")
PATH = "/ws/usage/live/"


def session_cookie(*, may_view_usage: bool = False, **user_fields: object) -> bytes:
    user = get_user_model().objects.create(**user_fields)
    if may_view_usage:
        user.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def communicator(cookie: bytes | None) -> WebsocketCommunicator:
    headers = [(b"origin", settings.PROXY_BASE_URL.encode())] + ([(b"cookie", cookie)] if cookie else [])
    return WebsocketCommunicator(application, PATH, headers=headers)


async def test_a_session_that_may_view_usage_sees_each_record_as_it_is_written():
    cookie = await sync_to_async(session_cookie)(username="ops", is_staff=True, may_view_usage=True)
    socket = communicator(cookie)
    connected, _ = await socket.connect()
    assert connected
    try:
        submit_usage(usage_event(request_id="req_live_1", device_id="ada", input_tokens=1000, output_tokens=500))
        submit_usage(
            usage_event(
                request_id="req_live_2", device_id="bob", model="gpt-x", status=500, error_type="api_error", input_tokens=10
            )
        )
        assert await flush_usage() == 2
        message = await socket.receive_json_from(timeout=5)
    finally:
        await socket.disconnect()
        await stop_usage_writer()
    records = {record["request_id"]: record for record in message["records"]}
    assert set(records) == {"req_live_1", "req_live_2"}
    ok, failed = records["req_live_1"], records["req_live_2"]
    assert (ok["device"], ok["cost"], ok["input_tokens"]) == ("ada", "0.0105000000", 1000)
    assert (failed["cost"], failed["status"], failed["error_type"]) == (None, 500, "api_error")


@pytest.mark.parametrize(
    "user_fields", [None, {"username": "visitor"}, {"username": "former", "is_staff": True, "is_active": False}]
)
async def test_anyone_but_active_staff_is_refused(user_fields):
    cookie = await sync_to_async(session_cookie)(**user_fields) if user_fields else None
    socket = communicator(cookie)
    connected, code = await socket.connect()
    assert (connected, code) == (False, REFUSED)
