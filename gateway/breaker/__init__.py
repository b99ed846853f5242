"""The circuit breaker in front of the upstream: the seed's, made so one device cannot open it for everyone.

    closed ──(FAILURE_THRESHOLD consecutive failures, from MIN_DEVICES devices)──▶ open ──(RESET_TIMEOUT s)──▶ half-open
       ▲                                                                          ▲                              │
       └──────────────────────(SUCCESS_THRESHOLD trial successes)─────────────────┼──────────────────────────────┤
                                                                                  └──(failed trials from MIN_DEVICES devices)

Failures are 5xx (529 included), connect errors and timeouts; a 4xx is the request's fault, not
the upstream's, and counts as a success. Half-open admits one trial request at a time (a lease
that expires after RESET_TIMEOUT, so a trial whose process died does not wedge the breaker).

Why devices: a request can make the upstream fail (the bundled fake's `FAKE_FAULT:` prompt does it
on purpose; a body that makes the real API answer 500, or a stream held until it times out, would
too), so one device repeating such a request used to open the breaker for every device. Now the
upstream's breaker counts consecutive failures as the seed does, but opens only once they come
from CIRCUIT_BREAKER_MIN_DEVICES distinct devices (default 2; 1 is the seed's breaker); any
success forgets both count and devices. A failed half-open trial opens it again on the same rule, so one
device cannot hold it open by failing every trial. An outage seen by several devices still
opens it at the 5th failure.

And each device has its own breaker, the same machine with one device: its 5 consecutive failures
make that device (and only it) fail fast for 30 s, then try again. That is what a real outage with
a single active device looks like: the only device there is fails fast after 5 failures, and the
first failure of any other device then opens the upstream's breaker (the streak already counts 5).
A failure of a device whose own breaker was already open (another process admitted it before it
knew) counts for neither breaker, so a device adds at most FAILURE_THRESHOLD failures to a streak.

The state lives in a backend: Redis when configured (one Lua script per step, so every process
sees one breaker, and one hash per device that has failures) or this process. Each process keeps
the last state it saw for CIRCUIT_BREAKER_CACHE_SECONDS, so an ordinary request while the breaker
is closed costs no round trip, and neither does a refusal while it is open; a success is written
only when it changes something (failures to forget, a half-open trial). A device's breaker is
read only by a process that has seen that device fail: the others admit it and learn at its
next failure, one request per process at most.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from django.conf import settings

from gateway.breaker.base import (
    ADMITTED,
    Admission,
    BreakerBackend,
    BreakerConfig,
    BreakerSnapshot,
    BreakerState,
    DeviceBreakers,
)
from gateway.breaker.local import LocalBreakerBackend, LocalDeviceBreakers
from gateway.breaker.redis import RedisBreakerBackend, RedisDeviceBreakers
from gateway.metrics import count_breaker_transition
from proxyproject.lib.backends import Backend, select_backend, shared_state_backend
from proxyproject.lib.errors import refuse_when_shared_state_fails
from proxyproject.lib.logging import log_event
from proxyproject.lib.process_state import register_process_state

__all__ = [
    "Admission",
    "BreakerBackend",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "DeviceBreakers",
    "LocalBreakerBackend",
    "LocalDeviceBreakers",
    "RedisBreakerBackend",
    "RedisDeviceBreakers",
    "get_circuit_breaker",
    "is_failure_status",
]

logger = logging.getLogger("gateway.breaker")
Clock = Callable[[], float]


def is_failure_status(status: int) -> bool:
    """5xx (529 included) is the upstream failing; any 4xx is the request's own fault."""
    return status >= 500


class CircuitBreaker:
    """The breaker as the proxy uses it: `admit` before going upstream, `record` when the outcome is
    known, both for one device. Remembers the last state it saw for `cache_seconds` to spare the
    backend, and the devices it saw fail (only those have a breaker worth reading)."""

    def __init__(
        self,
        backend: BreakerBackend,
        *,
        devices: DeviceBreakers,
        clock: Clock = time.time,
        cache_seconds: float | None = None,
        config: BreakerConfig | None = None,
    ) -> None:
        self.backend = backend
        self.devices = devices
        self._clock = clock
        self._cache_seconds = settings.CIRCUIT_BREAKER_CACHE_SECONDS if cache_seconds is None else cache_seconds
        self._config = config
        self._seen: BreakerSnapshot | None = None
        self._seen_at = 0.0
        self._reading: asyncio.Task[BreakerSnapshot] | None = None
        self._devices_seen: dict[str, tuple[BreakerSnapshot, float]] = {}

    @property
    def config(self) -> BreakerConfig:
        return self._config or BreakerConfig.from_settings()

    def _fresh(self, now: float) -> BreakerSnapshot | None:
        if self._seen is not None and now - self._seen_at < self._cache_seconds:
            return self._seen
        return None

    def _remember(self, before: BreakerSnapshot, after: BreakerSnapshot, now: float, reason: str) -> None:
        self._seen, self._seen_at = after, now
        if before.state is not after.state:
            count_breaker_transition(after.state.value)
            level = logging.WARNING if after.state is BreakerState.OPEN else logging.INFO
            log_event(
                logger,
                "Circuit breaker state changed",
                level,
                fromState=before.state.value,
                toState=after.state.value,
                reason=reason,
                consecutiveFailures=after.failures,
                opens=after.opens,
                devices=len(after.devices),
            )

    def _remember_device(self, device: str, before: BreakerSnapshot, after: BreakerSnapshot, now: float) -> None:
        if after.clean:
            self._devices_seen.pop(device, None)
        else:
            self._devices_seen[device] = (after, now)
        self.devices.settled(device, after)
        if before.state is not after.state:
            log_event(
                logger,
                "Device circuit breaker state changed",
                logging.INFO,
                devicePk=device,
                fromState=before.state.value,
                toState=after.state.value,
                consecutiveFailures=after.failures,
            )

    async def admit(self, device: str) -> Admission:
        """The device's own breaker first, then the upstream's. Raises SharedStateUnavailable when
        the shared state cannot be read: an upstream the other instances have given up on must not
        be sent requests because this one lost Redis. (A device's trial lease taken just before the
        upstream's breaker refuses is not handed back: it expires, and only that device waits.)"""
        now = self._clock()
        own = await self._admit_device(device, now) if device in self._devices_seen else ADMITTED
        if not own.allowed:
            return own
        seen = self._fresh(now)
        if seen is not None and seen.state is BreakerState.CLOSED:
            admission = ADMITTED
        elif (
            seen is None and self._seen is not None and self._seen.state is BreakerState.CLOSED and await self._still_closed(now)
        ):
            admission = ADMITTED
        else:
            admission = await self._admit_upstream(now, seen)
        return replace(admission, device_trial=True) if own.trial and admission.allowed else admission

    async def _still_closed(self, now: float) -> bool:
        """Whether a breaker last seen closed still is, once its cache time is over: one read of the
        backend for every request that finds it stale meanwhile. An admission each sent the
        requests of one burst (256 streams) to Redis at once, every second, each script on a pooled
        connection of its own. A breaker no longer closed is left to each request's own admission:
        a half-open trial is one request's."""
        loop = asyncio.get_running_loop()
        reading = self._reading
        if reading is None or reading.done() or reading.get_loop() is not loop:
            reading = self._reading = loop.create_task(self._read_backend(now))
            reading.add_done_callback(_retrieve_failure)
        with refuse_when_shared_state_fails("circuit_breaker"):
            snapshot = await asyncio.shield(reading)
        return snapshot.state is BreakerState.CLOSED

    async def _read_backend(self, now: float) -> BreakerSnapshot:
        remembered_at = self._seen_at
        snapshot = await self.backend.read()
        if snapshot.state is BreakerState.CLOSED and self._seen_at == remembered_at:  # nothing newer seen meanwhile
            self._seen, self._seen_at = snapshot, now
        return snapshot

    async def _admit_device(self, device: str, now: float) -> Admission:
        config = self.config
        seen, seen_at = self._devices_seen[device]
        if now - seen_at < self._cache_seconds:
            if seen.state is BreakerState.CLOSED:
                return ADMITTED
            if seen.state is BreakerState.OPEN and now < seen.opened_at + config.reset_timeout:
                return Admission(False, retry_after=seen.opened_at + config.reset_timeout - now)
        with refuse_when_shared_state_fails("circuit_breaker"):
            before, after, admission = await self.devices.get(device).admit(now, config.for_one_device())
        self._remember_device(device, before, after, now)
        return admission

    async def _admit_upstream(self, now: float, seen: BreakerSnapshot | None) -> Admission:
        config = self.config
        if seen is not None and seen.state is BreakerState.OPEN and now < seen.opened_at + config.reset_timeout:
            return Admission(False, retry_after=seen.opened_at + config.reset_timeout - now)
        with refuse_when_shared_state_fails("circuit_breaker"):
            before, after, admission = await self.backend.admit(now, config)
        self._remember(before, after, now, "reset timeout elapsed")
        return admission

    async def record(self, admission: Admission, *, device: str, success: bool) -> None:
        now = self._clock()
        if not success or device in self._devices_seen:
            before, after = await self.devices.get(device).record(
                now, success, admission.device_trial, self.config.for_one_device(), device
            )
            self._remember_device(device, before, after, now)
            if not success and before.state is not BreakerState.CLOSED and not admission.trial:
                return  # the device's own breaker had opened: its failures are no news of the upstream (a trial's always is)
        seen = self._seen
        # A success changes nothing in a closed breaker with no failures to forget. The last state
        # seen is trusted here even past the cache time: a failure counted elsewhere meanwhile is
        # forgotten one success later, after this process's next admit re-reads the state.
        if success and not admission.trial and seen is not None and seen.state is BreakerState.CLOSED and not seen.failures:
            return
        before, after = await self.backend.record(now, success, admission.trial, self.config, device)
        self._remember(before, after, now, "trial succeeded" if success else "upstream failure")

    async def reset(self, *, actor: str) -> BreakerSnapshot:
        """Closes the upstream's breaker and every device's (other processes re-read a device's
        within the cache time)."""
        now = self._clock()
        before, after = await self.backend.reset(now)
        await self.devices.reset_all()
        self._devices_seen.clear()
        log_event(logger, "Circuit breaker reset", actor=actor, fromState=before.state.value)
        self._remember(before, after, now, f"reset by {actor}")
        return after

    async def snapshot(self) -> BreakerSnapshot:
        snapshot = await self.backend.read()
        self._seen, self._seen_at = snapshot, self._clock()
        return snapshot

    def forget(self) -> None:
        """Drop the remembered state (tests that change the backend behind this process's back)."""
        self._seen = None


def _new_local_breaker() -> CircuitBreaker:
    return CircuitBreaker(LocalBreakerBackend(), devices=LocalDeviceBreakers())


def _new_redis_breaker() -> CircuitBreaker:
    return CircuitBreaker(RedisBreakerBackend(), devices=RedisDeviceBreakers(settings.CIRCUIT_BREAKER_RESET_TIMEOUT))


_breakers: dict[Backend, CircuitBreaker] = {}


def _retrieve_failure(reading: asyncio.Task[BreakerSnapshot]) -> None:
    """A shared read whose waiters all left still has its failure looked at (asyncio would log it)."""
    if not reading.cancelled():
        reading.exception()


def get_circuit_breaker() -> CircuitBreaker:
    """The Redis-backed breaker when REDIS_URL is set (one for every process), else this process's.
    Made on first use: it reads its settings then."""
    backend = shared_state_backend()
    breaker = _breakers.get(backend)
    if breaker is None:
        breaker = _breakers[backend] = select_backend(local=_new_local_breaker, redis=_new_redis_breaker)()
    return breaker


def forget_circuit_breakers() -> None:
    """A new breaker object on next use; a breaker kept in Redis keeps its shared state."""
    _breakers.clear()


register_process_state("circuit breaker", forget_circuit_breakers)
