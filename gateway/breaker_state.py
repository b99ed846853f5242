"""The breaker's state machine and its per-process backend (see `gateway.breaker` for the rules).

The steps are pure functions of a snapshot, so the local backend, the Redis script that mirrors
them and the tests all agree on one definition.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from enum import Enum
from typing import Protocol

from django.conf import settings


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int
    reset_timeout: float
    success_threshold: int

    @classmethod
    def from_settings(cls) -> "BreakerConfig":
        return cls(settings.CIRCUIT_BREAKER_FAILURE_THRESHOLD, settings.CIRCUIT_BREAKER_RESET_TIMEOUT, settings.CIRCUIT_BREAKER_SUCCESS_THRESHOLD)


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # consecutive, while closed
    successes: int = 0  # trial successes, while half-open
    opened_at: float = 0.0
    changed_at: float = 0.0
    trial_until: float = 0.0  # a half-open trial's lease
    opens: int = 0  # times opened since the record began

    def retry_after(self, now: float, config: BreakerConfig) -> float:
        if self.state is BreakerState.OPEN:
            return max(self.opened_at + config.reset_timeout - now, 0.0)
        if self.state is BreakerState.HALF_OPEN:
            return max(self.trial_until - now, 0.0)
        return 0.0


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    trial: bool = False
    retry_after: float = 0.0


ADMITTED = Admission(True)


def admit_step(snapshot: BreakerSnapshot, now: float, config: BreakerConfig) -> tuple[BreakerSnapshot, Admission]:
    """The state machine's admission step (the Redis script below mirrors it)."""
    if snapshot.state is BreakerState.CLOSED:
        return snapshot, ADMITTED
    if snapshot.state is BreakerState.OPEN:
        if now < snapshot.opened_at + config.reset_timeout:
            return snapshot, Admission(False, retry_after=snapshot.opened_at + config.reset_timeout - now)
        snapshot = replace(snapshot, state=BreakerState.HALF_OPEN, successes=0, trial_until=0.0, changed_at=now)
    if snapshot.trial_until > now:
        return snapshot, Admission(False, retry_after=snapshot.trial_until - now)
    return replace(snapshot, trial_until=now + config.reset_timeout), Admission(True, trial=True)


def record_step(snapshot: BreakerSnapshot, now: float, success: bool, trial: bool, config: BreakerConfig) -> BreakerSnapshot:
    """The state machine's outcome step. Outcomes of requests admitted under an earlier state
    (not trials) change nothing once the breaker has left `closed`."""
    state = snapshot.state
    if state is BreakerState.CLOSED:
        if success:
            return replace(snapshot, failures=0) if snapshot.failures else snapshot
        failures = snapshot.failures + 1
        if failures >= config.failure_threshold:
            return replace(snapshot, state=BreakerState.OPEN, failures=failures, opened_at=now, changed_at=now, opens=snapshot.opens + 1)
        return replace(snapshot, failures=failures)
    if state is BreakerState.HALF_OPEN and trial:
        if not success:
            return replace(snapshot, state=BreakerState.OPEN, successes=0, trial_until=0.0, opened_at=now, changed_at=now, opens=snapshot.opens + 1)
        successes = snapshot.successes + 1
        if successes >= config.success_threshold:
            return replace(snapshot, state=BreakerState.CLOSED, failures=0, successes=0, trial_until=0.0, changed_at=now)
        return replace(snapshot, successes=successes, trial_until=0.0)
    return snapshot


def reset_step(snapshot: BreakerSnapshot, now: float) -> BreakerSnapshot:
    return BreakerSnapshot(changed_at=now, opens=snapshot.opens)


class BreakerBackend(Protocol):
    async def admit(self, now: float, config: BreakerConfig) -> tuple[BreakerSnapshot, BreakerSnapshot, Admission]: ...

    async def record(self, now: float, success: bool, trial: bool, config: BreakerConfig) -> tuple[BreakerSnapshot, BreakerSnapshot]: ...

    async def reset(self, now: float) -> tuple[BreakerSnapshot, BreakerSnapshot]: ...

    async def read(self) -> BreakerSnapshot: ...


class LocalBreakerBackend:
    """This process only (the embedded default). Steps return (before, after)."""

    def __init__(self) -> None:
        self._snapshot = BreakerSnapshot()
        self._lock = threading.Lock()

    async def admit(self, now: float, config: BreakerConfig) -> tuple[BreakerSnapshot, BreakerSnapshot, Admission]:
        with self._lock:
            before = self._snapshot
            self._snapshot, admission = admit_step(before, now, config)
            return before, self._snapshot, admission

    async def record(self, now: float, success: bool, trial: bool, config: BreakerConfig) -> tuple[BreakerSnapshot, BreakerSnapshot]:
        with self._lock:
            before = self._snapshot
            self._snapshot = record_step(before, now, success, trial, config)
            return before, self._snapshot

    async def reset(self, now: float) -> tuple[BreakerSnapshot, BreakerSnapshot]:
        with self._lock:
            before = self._snapshot
            self._snapshot = reset_step(before, now)
            return before, self._snapshot

    async def read(self) -> BreakerSnapshot:
        return self._snapshot
