"""The load generator: raw HTTP/1.1 keep-alive over asyncio protocols on uvloop.

Every connection is a closed loop driven from `data_received`: when a response ends, the next
request is written at once, with no task switch in between, so one Python process drives far more
requests per second than any proxy under test (the run measures and reports that ceiling against
the direct upstream). Responses are parsed only as far as framing needs (status, Content-Length or
chunked), the first body byte is timed, and a stream counts as good only when it reached
`message_stop` without an `event: error`.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from bench.cpu_watch import PROXY_GROUP_PREFIX, WatchedGroups, established_connections, snapshot, spent_seconds

STREAM_END_MARK = b"event: message_stop"
STREAM_ERROR_MARK = b"event: error"
MARK_OVERLAP = max(len(STREAM_END_MARK), len(STREAM_ERROR_MARK))
LOAD_GENERATOR_GROUP = "load generator"
END_CHECK_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Workload:
    """A closed loop: `concurrency` connections send `request` back to back for `duration`
    seconds after `warmup` seconds, at most `max_requests` in all.

    The measured window stretches past `duration` (up to `max_duration`) until `min_completed`
    responses ended in it: a proxy whose streams take longer than the window would otherwise
    show no throughput at all, rather than a low one."""

    request: bytes
    concurrency: int
    duration: float
    warmup: float = 0.3
    max_requests: int = 1_000_000
    streaming: bool = False
    timeout: float = 10.0
    min_completed: int = 0
    max_duration: float = 0.0  # 0: `duration`
    watch: WatchedGroups = ()  # processes whose CPU time over the measured window is reported
    proxy_port: int = 0  # when set, the connections each watched proxy process holds are counted


@dataclass(slots=True)
class Samples:
    """What a workload measured. Times in seconds; `window` is the measured span."""

    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    window: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per watched group, over `cpu_span`
    cpu_span: float = 0.0  # wall seconds between the two CPU readings (the measured window)
    connections: dict[str, int] = field(default_factory=dict)  # per proxy process, as the window closes

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def as_json(self) -> dict:
        return {
            "latencies": self.latencies,
            "first_bytes": self.first_bytes,
            "completed": self.completed,
            "errors": self.errors,
            "window": self.window,
            "cpu_seconds": self.cpu_seconds,
            "cpu_span": self.cpu_span,
            "connections": self.connections,
        }


class ResponseParser:
    """Incremental HTTP/1.1 response framing; `feed` returns True when the response is complete."""

    __slots__ = (
        "status",
        "body_started",
        "ended_well",
        "errored",
        "_buffer",
        "_in_body",
        "_remaining",
        "_chunked",
        "_chunk_left",
        "_final",
        "_tail",
        "_watch_stream",
    )

    def __init__(self, watch_stream: bool) -> None:
        self._watch_stream = watch_stream
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.body_started = False
        self.ended_well = not self._watch_stream
        self.errored = False
        self._buffer = b""
        self._in_body = False
        self._remaining = 0
        self._chunked = False
        self._chunk_left = 0
        self._final = False
        self._tail = b""

    def feed(self, data: bytes) -> bool:
        if not self._in_body:
            self._buffer += data
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = self._buffer[:end].lower()
            data = self._buffer[end + 4 :]
            self._buffer = b""
            self._in_body = True
            self.status = int(head[9:12])
            if b"\r\ntransfer-encoding: chunked" in head:
                self._chunked = True
            else:
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    raise ValueError("response has neither Content-Length nor chunked encoding")
                line_end = head.find(b"\r\n", at + 2)
                self._remaining = int(head[at + 17 : line_end if line_end > 0 else None])
                if self._remaining == 0:
                    return True
            if not data:
                return False
        self.body_started = True
        if self._watch_stream:
            self._watch(data)
        if not self._chunked:
            self._remaining -= len(data)
            return self._remaining <= 0
        return self._feed_chunked(data)

    def _watch(self, data: bytes) -> None:
        window = self._tail + data
        if STREAM_ERROR_MARK in window:
            self.errored = True
        if STREAM_END_MARK in window:
            self.ended_well = True
        self._tail = window[-MARK_OVERLAP:]

    def _feed_chunked(self, data: bytes) -> bool:
        buffer = self._buffer + data if self._buffer else data
        position = 0
        size = len(buffer)
        while position < size:
            if self._chunk_left:
                step = min(self._chunk_left, size - position)
                self._chunk_left -= step
                position += step
                continue
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                break
            if self._final:  # the blank line after the last chunk (trailers are not expected)
                self._buffer = b""
                return True
            chunk_size = int(buffer[position:line_end].split(b";", 1)[0], 16)
            position = line_end + 2
            if chunk_size == 0:
                self._final = True
            else:
                self._chunk_left = chunk_size + 2  # data and its CRLF
        self._buffer = buffer[position:]
        return False


class LoopConnection(asyncio.Protocol):
    """One keep-alive connection that sends `request` again as soon as a response ends."""

    def __init__(self, run: ClosedLoop) -> None:
        self.run = run
        self.parser = ResponseParser(run.workload.streaming)
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.first_byte_at = 0.0
        self.busy = False
        self.done: asyncio.Future = run.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send_next()

    def send_next(self) -> None:
        if not self.run.may_start():
            self.finish()
            return
        self.parser.reset()
        self.busy = True
        self.first_byte_at = 0.0
        self.sent_at = time.perf_counter()
        self.transport.write(self.run.workload.request)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            return
        try:
            complete = self.parser.feed(data)
        except ValueError:
            self.run.record_error("bad-response")
            self.busy = False
            self.transport.abort()
            return
        if not self.first_byte_at and self.parser.body_started:
            self.first_byte_at = time.perf_counter()
        if complete:
            self.busy = False
            self.run.record(self, time.perf_counter())
            self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.busy = False
            self.run.record_error("connection-lost")
        self.finish()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def cut(self, now: float, overdue_after: float) -> None:
        """Close at the end of the run; a response still awaited then is dropped unmeasured, and
        counts as an error only if it was already overdue."""
        if self.busy:
            self.busy = False
            if now - self.sent_at >= overdue_after:
                self.run.record_error("timeout")
        if self.transport is not None:
            self.transport.abort()
        self.finish()


class ClosedLoop:
    """The shared state of one workload run: the clock, the request budget and the samples."""

    def __init__(self, loop: asyncio.AbstractEventLoop, workload: Workload) -> None:
        self.loop = loop
        self.workload = workload
        self.samples = Samples()
        self.started = 0
        now = time.perf_counter()
        self.measure_from = now + workload.warmup
        self.stop_at = self.measure_from + workload.duration
        self.hard_stop = self.measure_from + max(workload.max_duration, workload.duration)

    def open_window(self, cpu: WindowCpu) -> None:
        """Start reading the CPU as the measured window opens. A loop held up past the window's start
        opens it late (by 70 ms in the harness test after the tests before it): the window is moved
        to start then and still lasts its duration, so the CPU read and the responses counted cover
        the same span (responses recorded in between, if any, still count)."""
        late = time.perf_counter() - self.measure_from
        if late > 0:
            self.measure_from += late
            self.stop_at += late
            self.hard_stop += late
        cpu.start()

    def window_is_short(self) -> bool:
        return self.samples.completed < self.workload.min_completed

    def is_over(self, now: float) -> bool:
        return now >= self.stop_at and (now >= self.hard_stop or not self.window_is_short())

    def may_start(self) -> bool:
        if self.started >= self.workload.max_requests or self.is_over(time.perf_counter()):
            return False
        self.started += 1
        return True

    def record(self, connection: LoopConnection, ended_at: float) -> None:
        parser = connection.parser
        if parser.status != 200:
            self.record_error(f"http-{parser.status}")
            return
        if parser.errored or not parser.ended_well:
            self.record_error("stream-error" if parser.errored else "stream-truncated")
            return
        if ended_at < self.measure_from:
            return
        if ended_at > self.stop_at:
            if ended_at > self.hard_stop or not self.window_is_short():
                return
            self.stop_at = ended_at
        samples = self.samples
        samples.completed += 1
        samples.latencies.append(ended_at - connection.sent_at)
        if self.workload.streaming:
            samples.first_bytes.append(connection.first_byte_at - connection.sent_at)

    def record_error(self, kind: str) -> None:
        self.samples.count_error(kind)


class WindowCpu:
    """The watched processes' CPU time at the start and at the end of the measured window; the
    load generator's own process is always one of them."""

    def __init__(self, watch: WatchedGroups, proxy_port: int) -> None:
        self.groups: WatchedGroups = (*watch, (LOAD_GENERATOR_GROUP, (os.getpid(),))) if watch else ()
        self.proxy_port = proxy_port
        self.started_at = 0.0
        self.before: dict[str, int] = {}

    def start(self) -> None:
        self.started_at = time.perf_counter()
        self.before = snapshot(self.groups)

    def finish(self, samples: Samples) -> None:
        if self.before:
            # Read as the window closes: a busy server may not have accepted every connection yet
            # when it opens.
            samples.connections = {
                name: established_connections(pids, self.proxy_port)
                for name, pids in self.groups
                if self.proxy_port and name.startswith(PROXY_GROUP_PREFIX)
            }
            samples.cpu_seconds = spent_seconds(self.before, snapshot(self.groups))
            samples.cpu_span = time.perf_counter() - self.started_at


async def open_connection(loop: asyncio.AbstractEventLoop, endpoint: Endpoint, factory) -> asyncio.Protocol:
    _, protocol = await loop.create_connection(factory, endpoint.host, endpoint.port)
    return protocol


async def run_closed_loop(endpoint: Endpoint, workload: Workload) -> Samples:
    """Run `workload` against `endpoint`; connection failures count as errors, never raise."""
    loop = asyncio.get_running_loop()
    run = ClosedLoop(loop, workload)
    cpu = WindowCpu(workload.watch, workload.proxy_port)
    window_opens = loop.call_later(max(0.0, run.measure_from - time.perf_counter()), run.open_window, cpu) if cpu.groups else None
    connections: list[LoopConnection] = []
    attempts = [open_connection(loop, endpoint, lambda: LoopConnection(run)) for _ in range(workload.concurrency)]
    for result in await asyncio.gather(*attempts, return_exceptions=True):
        if isinstance(result, BaseException):
            run.record_error("connect-failed")
        else:
            connections.append(result)
    pending = [connection.done for connection in connections]
    # Responses still in flight when the window closes are cut rather than awaited: a slow proxy
    # with hundreds of streams open would otherwise take longer to drain than to measure.
    while pending and not run.is_over(time.perf_counter()):
        _, still = await asyncio.wait(pending, timeout=END_CHECK_SECONDS)
        pending = list(still)
    if window_opens is not None:
        window_opens.cancel()  # a run that ended before its window opened measured no CPU
    cpu.finish(run.samples)
    now = time.perf_counter()
    # With nothing completed at all, whatever is still in flight is a hang, not a slow tail.
    overdue_after = workload.timeout if run.samples.completed else 0.0
    for connection in connections:
        connection.cut(now, overdue_after)
    run.samples.window = run.stop_at - run.measure_from
    return run.samples


def build_request(endpoint: Endpoint, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 POST, built once and sent as is for every request of a workload."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {endpoint.host}:{endpoint.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
