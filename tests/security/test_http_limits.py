"""HTTP limits at the server (proxyproject/http_limits.py), attacked with raw sockets against a live
gateway process started as production starts it (proxyproject/server.py), on `/v1` and on a Django
path alike: huge or numerous headers, an over-long request line, clients stalled in their headers,
in their body or idle, and many idle connections. A slow upstream stream must still complete."""

from __future__ import annotations

import select
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import orjson
import pytest

from fake_anthropic import FakeAnthropic
from tests.servers import ServerProcess, gateway_process

MASTER_KEY = "sk-ant-test-master-http-limits-0001"
HEADER_TIMEOUT = 3.0
BODY_IDLE_TIMEOUT = 2.0
KEEP_ALIVE_TIMEOUT = 1.0
SLACK = 1.0  # "within the timeout plus a second"
MESSAGES = "/v1/messages"
PATHS = [MESSAGES, "/healthz"]
MEBIBYTE = 1024 * 1024


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        yield fake


@pytest.fixture(scope="module")
def module_gateway(django_db_setup, upstream) -> Iterator[ServerProcess]:
    """One worker process (its RSS is the server's), short timeouts, the default size limits."""
    server = gateway_process(
        ANTHROPIC_BASE_URL=upstream.base_url,
        ANTHROPIC_API_KEY=MASTER_KEY,
        ENROLLMENT_MODE="open",
        ENROLLMENT_RATE_LIMIT_MAX="100000",
        WEB_CONCURRENCY="1",
        HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        HTTP_BODY_IDLE_TIMEOUT_SECONDS=str(BODY_IDLE_TIMEOUT),
        HTTP_KEEP_ALIVE_TIMEOUT_SECONDS=str(int(KEEP_ALIVE_TIMEOUT)),
    ).start()
    yield server
    server.stop()


@pytest.fixture
def gateway(module_gateway, transactional_db) -> ServerProcess:
    return module_gateway


@pytest.fixture
def token(gateway) -> str:
    response = httpx.post(
        gateway.url + "/bootstrap", json={"device_id": f"limits-{uuid.uuid4().hex}", "app_version": "1.0"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["wrapper_token"]


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n").encode()


def request_headers(path: str, token: str) -> dict[str, str]:
    """What a real client sends to `path`: on /v1 a valid token, so only the limits can refuse it."""
    if path == MESSAGES:
        return {"Authorization": f"Bearer {token}", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    return {}


def message_body(text: str = "Say hello", *, stream: bool = False) -> bytes:
    return orjson.dumps(
        {
            "model": "claude-sonnet-4-5-20250929",
            "max_tokens": 64,
            "stream": stream,
            "messages": [{"role": "user", "content": text}],
        }
    )


def complete_request(path: str, token: str) -> bytes:
    if path == MESSAGES:
        body = message_body()
        return head("POST", path, {**request_headers(path, token), "Content-Length": str(len(body))}) + b"\r\n" + body
    return head("GET", path, {}) + b"\r\n"


def send_until_answered(sock: socket.socket, prefix: bytes, filler: bytes, total: int) -> bytes:
    """Sends `prefix`, then `filler` up to `total` bytes, stopping as soon as the server answers or
    closes (a refusing server stops reading); then reads the answer to its end."""
    sock.sendall(prefix)
    sent = len(prefix)
    while sent < total:
        if readable([sock]):
            break
        try:
            sock.sendall(filler)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(filler)
    return read_to_close(sock)


def readable(sockets: list[socket.socket]) -> list[int]:
    """File numbers with something to read (an answer, or the server's close), without waiting;
    poll, not select: a full test run holds descriptors above select's 1024."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLIN)
    return [fd for fd, _ in poller.poll(0)]


def read_to_close(sock: socket.socket, deadline: float = 10.0) -> bytes:
    chunks = []
    sock.settimeout(deadline)
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), orjson.loads(body)


def seconds_until_closed(sock: socket.socket, started: float, limit: float) -> tuple[float, bytes]:
    """How long after `started` the server closed the connection (polled up to `limit` seconds), and what it sent."""
    received = b""
    while (remaining := started + limit - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return time.monotonic() - started, received
        if not chunk:
            return time.monotonic() - started, received
        received += chunk
    pytest.fail(f"the connection was still open {limit}s later (received {received[:200]!r})")


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def warm(server: ServerProcess, token: str) -> None:
    """Both paths answered once, so what they load on first use is not counted as growth."""
    for path in PATHS:
        with connect(server) as sock:
            sock.sendall(complete_request(path, token).replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
            assert read_to_close(sock).startswith(b"HTTP/1.1 200"), path


@pytest.mark.parametrize("path", PATHS)
def test_four_megabyte_header_is_refused_without_growing_the_worker(gateway, token, path):
    warm(gateway, token)
    before = resident_bytes(gateway.process.pid)
    with connect(gateway) as sock:
        prefix = head("POST" if path == MESSAGES else "GET", path, request_headers(path, token)) + b"X-Padding: "
        answer = send_until_answered(sock, prefix, b"a" * 65536, 4 * MEBIBYTE)
    status, body = status_and_body(answer)
    assert status == 431
    assert body["error"]["details"]["error_code"] == "request_headers_too_large"
    assert b"\r\nconnection: close\r\n" in answer
    # Half the header: a worker that buffered it would grow by 4 MiB or more; a warm worker's own
    # background threads (pool refresh, usage writer) move its RSS by up to about 1 MiB meanwhile.
    assert resident_bytes(gateway.process.pid) - before < 2 * MEBIBYTE


@pytest.mark.parametrize("path", PATHS)
def test_two_hundred_thousand_headers_are_refused(gateway, token, path):
    warm(gateway, token)
    before = resident_bytes(gateway.process.pid)
    header = b"X-Many: a\r\n"
    with connect(gateway) as sock:
        prefix = head("POST" if path == MESSAGES else "GET", path, request_headers(path, token))
        answer = send_until_answered(sock, prefix, header * 5000, len(prefix) + 200_000 * len(header))
    status, body = status_and_body(answer)
    assert status == 431
    assert body["error"]["details"]["error_code"] == "request_headers_too_large"
    assert resident_bytes(gateway.process.pid) - before < MEBIBYTE


@pytest.mark.parametrize("path", PATHS)
def test_overlong_request_line_is_refused(gateway, token, path):
    with connect(gateway) as sock:
        sock.sendall(head("GET", f"{path}?q={'a' * 65536}", {}) + b"\r\n")
        answer = read_to_close(sock)
    status, body = status_and_body(answer)
    assert status == 414
    assert body["error"]["details"]["error_code"] == "request_line_too_long"


@pytest.mark.parametrize("path", PATHS)
def test_client_stalled_in_its_headers_is_cut_off(gateway, token, path):
    with connect(gateway) as sock:
        started = time.monotonic()
        sock.sendall(head("POST" if path == MESSAGES else "GET", path, request_headers(path, token)) + b"X-Slow: a")
        elapsed, received = seconds_until_closed(sock, started, HEADER_TIMEOUT + SLACK)
    assert received == b""
    assert elapsed >= HEADER_TIMEOUT - 0.1


def test_connection_that_never_sends_is_cut_off_at_the_header_timeout(gateway):
    with connect(gateway) as sock:
        elapsed, received = seconds_until_closed(sock, time.monotonic(), HEADER_TIMEOUT + SLACK)
    assert received == b""
    assert elapsed >= HEADER_TIMEOUT - 0.1


@pytest.mark.parametrize("path", PATHS)
def test_client_stalled_mid_body_is_cut_off(gateway, token, path):
    body = message_body()
    with connect(gateway) as sock:
        method = "POST" if path == MESSAGES else "GET"
        sock.sendall(head(method, path, {**request_headers(path, token), "Content-Length": str(len(body))}) + b"\r\n")
        sock.sendall(body[:10])
        started = time.monotonic()
        elapsed, received = seconds_until_closed(sock, started, BODY_IDLE_TIMEOUT + SLACK)
    assert received == b""
    assert elapsed >= BODY_IDLE_TIMEOUT - 0.1


@pytest.mark.parametrize("path", PATHS)
def test_body_trickled_faster_than_the_idle_timeout_is_answered(gateway, token, path):
    body = message_body()
    pieces = [body[:20], body[20:40], body[40:]]
    with connect(gateway) as sock:
        method = "POST" if path == MESSAGES else "GET"
        sock.sendall(
            head(method, path, {**request_headers(path, token), "Content-Length": str(len(body)), "Connection": "close"})
            + b"\r\n"
        )
        started = time.monotonic()
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(BODY_IDLE_TIMEOUT * 0.6)  # paced sending is what this test is about
        answer = read_to_close(sock)
    assert time.monotonic() - started > BODY_IDLE_TIMEOUT
    assert answer.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("path", PATHS)
def test_idle_keep_alive_connection_is_closed(gateway, token, path):
    with connect(gateway) as sock:
        sock.sendall(complete_request(path, token))
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head_bytes, _, body = answer.partition(b"\r\n\r\n")
        length = int(
            next(line.split(b":", 1)[1] for line in head_bytes.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        )
        while len(body) < length:
            body += sock.recv(65536)
        started = time.monotonic()
        assert head_bytes.startswith(b"HTTP/1.1 200 ")
        elapsed, received = seconds_until_closed(sock, started, KEEP_ALIVE_TIMEOUT + SLACK)
    assert received == b""
    assert elapsed >= KEEP_ALIVE_TIMEOUT - 0.1


@pytest.mark.parametrize("path", PATHS)
def test_thousand_idle_connections_do_not_delay_a_normal_request(gateway, token, path):
    with ExitStack() as stack:
        opened = time.monotonic()
        idle = [stack.enter_context(connect(gateway)) for _ in range(1000)]
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            started = time.monotonic()
            if path == MESSAGES:
                response = client.post(path, content=message_body(), headers=request_headers(path, token))
            else:
                response = client.get(path)
            took = time.monotonic() - started
        assert time.monotonic() - opened < HEADER_TIMEOUT, "the idle connections were cut before the request was measured"
        assert readable(idle) == []  # all still open and idle
    assert response.status_code == 200
    assert took < 1.0


def test_slow_upstream_stream_outlasting_every_timeout_completes(gateway, token):
    started = time.monotonic()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        response = client.post(
            MESSAGES, content=message_body("FAKE_FAULT:slow-stream=700", stream=True), headers=request_headers(MESSAGES, token)
        )
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert "event: message_stop" in response.text
    assert elapsed > HEADER_TIMEOUT + BODY_IDLE_TIMEOUT + KEEP_ALIVE_TIMEOUT
