"""The circuit breaker in front of the upstream, exactly as the seed specifies.

    closed ──(FAILURE_THRESHOLD consecutive failures)──▶ open ──(RESET_TIMEOUT s)──▶ half-open
       ▲                                                  ▲                              │
       └──────────(SUCCESS_THRESHOLD trial successes)─────┼──────────────────────────────┤
                                                          └─────────(a trial fails)──────┘

Failures are 5xx (529 included), connect errors and timeouts; a 4xx is the request's fault, not
the upstream's, and counts as a success. Half-open admits one trial request at a time (a lease
that expires after RESET_TIMEOUT, so a trial whose process died does not wedge the breaker).

The state lives in a backend: Redis when configured (one Lua script per step, so every process
sees one breaker) or this process. Each process keeps the last state it saw for
CIRCUIT_BREAKER_CACHE_SECONDS, so an ordinary request while the breaker is closed costs no round
trip, and neither does a refusal while it is open; a success is written only when it changes
something (failures to forget, a half-open trial).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from django.conf import settings

from gateway.breaker_redis import RedisBreakerBackend
from gateway.breaker_state import ADMITTED, Admission, BreakerBackend, BreakerConfig, BreakerSnapshot, BreakerState, LocalBreakerBackend
from gateway.errors import refuse_when_shared_state_fails
from gateway.metrics import count_breaker_transition
from proxyproject.logging import log_event
from proxyproject.redis import get_async_redis, redis_configured

logger = logging.getLogger("gateway.breaker")
Clock = Callable[[], float]


def is_failure_status(status: int) -> bool:
    """5xx (529 included) is the upstream failing; any 4xx is the request's own fault."""
    return status >= 500


class CircuitBreaker:
    """The breaker as the proxy uses it: `admit` before going upstream, `record` when the outcome is
    known. Remembers the last state it saw for `cache_seconds` to spare the backend."""

    def __init__(self, backend: BreakerBackend, *, clock: Clock = time.time, cache_seconds: float | None = None, config: BreakerConfig | None = None) -> None:
        self.backend = backend
        self._clock = clock
        self._cache_seconds = settings.CIRCUIT_BREAKER_CACHE_SECONDS if cache_seconds is None else cache_seconds
        self._config = config
        self._seen: BreakerSnapshot | None = None
        self._seen_at = 0.0

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
            log_event(logger, "Circuit breaker state changed", level, fromState=before.state.value, toState=after.state.value,
                      reason=reason, consecutiveFailures=after.failures, opens=after.opens)

    async def admit(self) -> Admission:
        """Raises SharedStateUnavailable when the shared state cannot be read: an upstream the other
        instances have given up on must not be sent requests because this one lost Redis."""
        now = self._clock()
        config = self.config
        seen = self._fresh(now)
        if seen is not None:
            if seen.state is BreakerState.CLOSED:
                return ADMITTED
            if seen.state is BreakerState.OPEN and now < seen.opened_at + config.reset_timeout:
                return Admission(False, retry_after=seen.opened_at + config.reset_timeout - now)
        with refuse_when_shared_state_fails("circuit_breaker"):
            before, after, admission = await self.backend.admit(now, config)
        self._remember(before, after, now, "reset timeout elapsed")
        return admission

    async def record(self, admission: Admission, *, success: bool) -> None:
        now = self._clock()
        seen = self._seen
        # A success changes nothing in a closed breaker with no failures to forget. The last state
        # seen is trusted here even past the cache time: a failure counted elsewhere meanwhile is
        # forgotten one success later, after this process's next admit re-reads the state.
        if success and not admission.trial and seen is not None and seen.state is BreakerState.CLOSED and not seen.failures:
            return
        before, after = await self.backend.record(now, success, admission.trial, self.config)
        self._remember(before, after, now, "trial succeeded" if success else "upstream failure")

    async def reset(self, *, actor: str) -> BreakerSnapshot:
        now = self._clock()
        before, after = await self.backend.reset(now)
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


_local_breaker: CircuitBreaker | None = None
_redis_breaker: CircuitBreaker | None = None


def get_circuit_breaker() -> CircuitBreaker:
    """The Redis-backed breaker when REDIS_URL is set (one for every process), else this process's."""
    global _local_breaker, _redis_breaker
    if redis_configured():
        if _redis_breaker is None:
            _redis_breaker = CircuitBreaker(RedisBreakerBackend())
        return _redis_breaker
    if _local_breaker is None:
        _local_breaker = CircuitBreaker(LocalBreakerBackend())
    return _local_breaker
