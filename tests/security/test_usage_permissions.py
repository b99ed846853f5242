"""A staff user without the usage view permission must not read usage data on any surface: the
live-feed websocket, GET /admin/usage with a session, the dashboard, the live page, the usage
lists and the CSV export. The same user with the permission (the control) gets each of them."""

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
from usage.models import UsageRecord
from usage.writer import drain_usage_queue, submit_usage

PAGES = [
    "/admin/usage/usagerecord/dashboard/",
    "/admin/usage/usagerecord/live/",
    "/admin/usage/usagerecord/",
    "/admin/usage/usagerollup/",
]


def staff_client(*, may_view_usage: bool) -> Client:
    user = get_user_model().objects.create(username=f"staff-{may_view_usage}", is_staff=True)
    # A permission on the console that is not about usage: staff with something to do in the admin.
    user.user_permissions.add(Permission.objects.get(codename="view_device"))
    if may_view_usage:
        user.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def a_record(db) -> UsageRecord:
    submit_usage(usage_event(request_id="req_secret_1", device_id="victim-laptop", input_tokens=1000))
    drain_usage_queue()
    return UsageRecord.objects.get(request_id="req_secret_1")


@pytest.mark.parametrize("path", PAGES)
def test_staff_without_usage_permission_is_refused_each_usage_page(a_record, path):
    assert staff_client(may_view_usage=False).get(path).status_code == 403
    assert staff_client(may_view_usage=True).get(path).status_code == 200


def test_staff_without_usage_permission_cannot_export_csv(a_record):
    form = {"action": "export_csv", "_selected_action": [a_record.pk]}
    refused = staff_client(may_view_usage=False).post("/admin/usage/usagerecord/", form)
    assert (refused.status_code, refused["Content-Type"]) == (403, "text/html; charset=utf-8")
    allowed = staff_client(may_view_usage=True).post("/admin/usage/usagerecord/", form)
    assert allowed["Content-Type"] == "text/csv; charset=utf-8"
    assert "req_secret_1" in b"".join(allowed.streaming_content).decode()


def test_staff_session_without_usage_permission_cannot_read_admin_usage(a_record):
    refused = staff_client(may_view_usage=False).get("/admin/usage", {"group_by": "device"})
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert refused.json()["error"]["details"]["error_code"] == "permission_denied"
    allowed = staff_client(may_view_usage=True).get("/admin/usage", {"group_by": "device"})
    assert allowed.status_code == 200
    assert [group["key"] for group in allowed.json()["groups"]] == ["victim-laptop"]


def session_cookie(*, may_view_usage: bool) -> bytes:
    client = staff_client(may_view_usage=may_view_usage)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def open_live_feed(cookie: bytes) -> tuple[bool, int | None]:
    socket = WebsocketCommunicator(
        application,
        "/ws/usage/live/",
        headers=[
            (b"origin", settings.PROXY_BASE_URL.encode()),
            (b"cookie", cookie),
        ],
    )
    connected, code = await socket.connect()
    if connected:
        await socket.disconnect()
    return connected, code


async def test_staff_without_usage_permission_cannot_open_the_live_feed(transactional_db):
    refused = await sync_to_async(session_cookie)(may_view_usage=False)
    assert await open_live_feed(refused) == (False, REFUSED)
    allowed = await sync_to_async(session_cookie)(may_view_usage=True)
    assert (await open_live_feed(allowed))[0] is True
