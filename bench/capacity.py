"""The capacity workload: many slow streams held open while new streams start.

The held streams are opened a few dozen at a time (a server's listen backlog is finite), only
their first byte is awaited, and they are closed once the probe (a closed loop of new streams)
is done; the phase times let the runner read the proxy's memory while the streams are held.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bench.loadgen import Endpoint, Samples, Workload, run_closed_loop


@dataclass(frozen=True, slots=True)
class CapacityWorkload:
    """`held` slow streams opened (at most `open_parallel` connecting at once) and held open while
    `probe` runs; then the held streams are closed."""

    slow_request: bytes
    held: int
    probe: Workload
    open_parallel: int = 64
    open_timeout: float = 30.0
    settle: float = 0.5


@dataclass(slots=True)
class CapacitySamples:
    held_opened: int = 0
    held_errors: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # time.monotonic() of each phase start
    probe: Samples = field(default_factory=Samples)

    def as_json(self) -> dict:
        return {
            "held_opened": self.held_opened,
            "held_errors": self.held_errors,
            "phases": self.phases,
            "probe": self.probe.as_json(),
        }


class HeldStream(asyncio.Protocol):
    """A slow stream kept open: only its first byte is awaited; the rest is read and dropped."""

    def __init__(self, loop: asyncio.AbstractEventLoop, request: bytes) -> None:
        self.request = request
        self.first_byte: asyncio.Future = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.status = b""
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.first_byte.done():
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end >= 0 and len(self._head) > end + 4:
            self.status = self._head[9:12]
            self.first_byte.set_result(self.status == b"200")
            self._head = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first_byte.done():
            self.first_byte.set_result(False)


async def open_held_stream(endpoint: Endpoint, request: bytes, gate: asyncio.Semaphore, timeout: float) -> HeldStream:
    loop = asyncio.get_running_loop()
    async with gate:
        _, stream = await asyncio.wait_for(
            loop.create_connection(lambda: HeldStream(loop, request), endpoint.host, endpoint.port), timeout
        )
        if not await asyncio.wait_for(asyncio.shield(stream.first_byte), timeout):
            raise ConnectionError(f"held stream answered {stream.status.decode() or 'nothing'}")
        return stream


async def run_capacity(endpoint: Endpoint, workload: CapacityWorkload) -> CapacitySamples:
    """Open the held streams, pause `settle` seconds (memory is read then), run the probe, close."""
    result = CapacitySamples()
    result.phases["open"] = time.monotonic()
    gate = asyncio.Semaphore(workload.open_parallel)
    attempts = [open_held_stream(endpoint, workload.slow_request, gate, workload.open_timeout) for _ in range(workload.held)]
    held: list[HeldStream] = []
    for outcome in await asyncio.gather(*attempts, return_exceptions=True):
        if isinstance(outcome, BaseException):
            kind = type(outcome).__name__
            result.held_errors[kind] = result.held_errors.get(kind, 0) + 1
        else:
            held.append(outcome)
    result.held_opened = len(held)
    result.phases["held"] = time.monotonic()
    await asyncio.sleep(workload.settle)
    result.phases["probe"] = time.monotonic()
    result.probe = await run_closed_loop(endpoint, workload.probe)
    result.phases["close"] = time.monotonic()
    for stream in held:
        if stream.transport is not None:
            stream.transport.abort()
    return result
