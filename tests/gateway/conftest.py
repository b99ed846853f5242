"""The gateway's test cast: the fake Anthropic upstream on a real socket, and a driver that speaks
raw ASGI to the gateway in this process. (Constants and enrolling: `tests.support`.)"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import unquote

import pytest

from fake_anthropic import FakeAnthropic
from gateway import breaker as breaker_module
from gateway.upstream import close_upstream_client
from proxyproject.lib.backends import shared_state_backend
from tests.support import MASTER_KEY, enroll_device


@pytest.fixture
def fake_upstream(settings):
    """A fresh fake upstream per test, and this process's gateway pointed at it."""
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        settings.ANTHROPIC_BASE_URL = fake.base_url
        settings.ANTHROPIC_API_KEY = MASTER_KEY
        yield fake


@pytest.fixture(autouse=True)
async def fresh_breaker_and_pool():
    """Each test starts and ends with a closed breaker (on Redis it is shared with every process of
    this run), and leaves no upstream pool open on its loop."""
    breaker_module.forget_circuit_breakers()
    shared = shared_state_backend() == "redis"
    if shared:
        await breaker_module.get_circuit_breaker().reset(actor="test")
    yield
    if shared:
        await breaker_module.get_circuit_breaker().reset(actor="test")
    await close_upstream_client()


@pytest.fixture
def usage_events(monkeypatch: pytest.MonkeyPatch) -> list:
    """The usage events the proxy hands to `usage` (`usage.accounting`, its boundary), in order.
    Streams' checkpoints are dropped: with their final records captured here instead of queued,
    they would linger in the session's queue and become `gateway_crashed` records in a later test."""
    events: list = []
    monkeypatch.setattr("usage.accounting.submit_usage", events.append)
    monkeypatch.setattr("gateway.stream_checkpoints.submit_stream_checkpoint", lambda event, sequence: None)
    return events


@pytest.fixture
async def token(transactional_db) -> str:
    return await enroll_device()


@dataclass
class Answer:
    status: int
    raw_headers: list[tuple[bytes, bytes]]
    chunks: list[bytes] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {name.decode(): value.decode() for name, value in self.raw_headers}

    def all(self, name: str) -> list[str]:
        return [value.decode() for key, value in self.raw_headers if key.decode() == name]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


async def call_gateway(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | list[tuple[str, str]] = (),
    body: bytes | list[bytes] = b"",
    query: bytes = b"",
    leave_after_first_chunk: bool = False,
) -> Answer:
    """One request through the project's ASGI application, in this process. `path` is sent as the
    raw path; the scope's `path` is its percent-decoded form, as ASGI servers give it."""
    from proxyproject.asgi import application

    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in pairs],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    parts = body if isinstance(body, list) else [body]
    incoming = [{"type": "http.request", "body": part, "more_body": index < len(parts) - 1} for index, part in enumerate(parts)]
    gone = asyncio.Event()
    answer = Answer(0, [])

    async def receive():
        if incoming:
            return incoming.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer.status, answer.raw_headers = message["status"], list(message["headers"])
        elif message.get("body"):
            answer.chunks.append(message["body"])
            if leave_after_first_chunk:
                gone.set()

    await asyncio.wait_for(application(scope, receive, send), timeout=20)
    return answer


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json", "anthropic-version": "2023-06-01", **extra}
