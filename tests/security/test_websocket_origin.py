"""Cross-origin websocket hijacking of the live feed: a page of another origin (another port,
host or scheme) opens the feed with the operator's cookie. Only the gateway's own origin, the
origin the request was made to, or a configured one may open it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from playwright.sync_api import expect

from proxyproject.asgi import application
from tests.security.conftest import log_in_in_browser, needs_chromium

HOST = b"127.0.0.1:4000"


def superuser_cookie() -> bytes:
    client = Client()
    user, _ = get_user_model().objects.get_or_create(username="root", defaults={"is_staff": True, "is_superuser": True})
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def opens(origin: bytes | None, host: bytes = HOST) -> bool:
    cookie = await sync_to_async(superuser_cookie)()
    headers = [(b"host", host), (b"cookie", cookie)] + ([(b"origin", origin)] if origin is not None else [])
    socket = WebsocketCommunicator(application, "/ws/usage/live/", headers=headers)
    connected, _ = await socket.connect()
    if connected:
        await socket.disconnect()
    return connected


async def test_a_page_on_the_gateways_own_origin_opens_the_feed(transactional_db):
    assert await opens(b"http://127.0.0.1:4000") is True
    assert await opens(settings.PROXY_BASE_URL.encode(), host=b"gateway.internal:1") is True


@pytest.mark.parametrize(
    "origin",
    [
        b"http://127.0.0.1:4952",
        b"http://127.0.0.1",
        b"http://localhost:9999",
        b"http://localhost:4000",
        b"https://127.0.0.1",
        b"https://127.0.0.1:4000",
        b"http://evil.example:4000",
        b"null",
        b"http://127.0.0.1:4000/x",
    ],
)
async def test_a_page_of_another_origin_cannot_open_the_feed(transactional_db, origin):
    assert await opens(origin) is False


async def test_a_request_without_origin_cannot_open_the_feed(transactional_db):
    assert await opens(None) is False


async def test_a_host_the_gateway_does_not_serve_is_not_its_own_origin(transactional_db):
    # DNS rebinding: evil.example resolves to the gateway; its page's origin matches the Host header.
    assert await opens(b"http://evil.example:4000", host=b"evil.example:4000") is False


async def test_a_configured_origin_opens_the_feed(transactional_db, settings):
    settings.WEBSOCKET_ALLOWED_ORIGINS = ["https://console.example.com"]
    assert await opens(b"https://console.example.com") is True
    assert await opens(b"https://console.example.com:8443") is False


EVIL_PAGE = """<!doctype html><title>waiting</title><script>
const socket = new WebSocket("ws://127.0.0.1:%d/ws/usage/live/");
socket.onopen = () => { document.title = "opened"; };
socket.onclose = () => { if (document.title !== "opened") document.title = "refused"; };
</script>"""


class EvilPage:
    """Another site on the same host, another port: serves one page that tries the feed."""

    def __init__(self, gateway_port: int) -> None:
        body = (EVIL_PAGE % gateway_port).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/evil.html"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EvilPage:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@needs_chromium
def test_a_browser_page_on_another_port_cannot_read_the_feed_with_the_operators_cookie(live_gateway, browser_page):
    page = browser_page
    log_in_in_browser(page, live_gateway.url)
    page.goto(live_gateway.url + "/admin/usage/usagerecord/live/")
    # A locator waits from Playwright's own utility world: a string predicate would be eval'd in the
    # page, which the console's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
    expect(page.locator("#live-status")).to_have_text("live")

    with EvilPage(live_gateway.port) as evil:
        page.goto(evil.url)
        page.wait_for_function("document.title !== 'waiting'")
        assert page.title() == "refused"
