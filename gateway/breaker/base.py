"""The breaker's state machine and the interfaces of its backends (see `gateway.breaker` for the rules).

The steps are pure functions of a snapshot, so the local backend, the Redis script that mirrors
them and the tests all agree on one definition. The upstream's breaker and each device's own run
the same machine; a device's needs one device to open (`min_devices` 1).
"""

from __future__ import annotations

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
    min_devices: int = 1  # distinct devices whose failures it takes to open (1: the seed's breaker)

    @classmethod
    def from_settings(cls) -> BreakerConfig:
        return cls(
            settings.CIRCUIT_BREAKER_FAILURE_THRESHOLD,
            settings.CIRCUIT_BREAKER_RESET_TIMEOUT,
            settings.CIRCUIT_BREAKER_SUCCESS_THRESHOLD,
            settings.CIRCUIT_BREAKER_MIN_DEVICES,
        )

    def for_one_device(self) -> BreakerConfig:
        return replace(self, min_devices=1)


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # consecutive, while closed
    successes: int = 0  # trial successes, while half-open
    opened_at: float = 0.0
    changed_at: float = 0.0
    trial_until: float = 0.0  # a half-open trial's lease
    opens: int = 0  # times opened since the record began
    devices: tuple[str, ...] = ()  # devices of the failures since the last success (at most min_devices kept)

    @property
    def clean(self) -> bool:
        """Nothing worth keeping: a device's breaker in this state is forgotten."""
        return self.state is BreakerState.CLOSED and not self.failures

    def retry_after(self, now: float, config: BreakerConfig) -> float:
        if self.state is BreakerState.OPEN:
            return max(self.opened_at + config.reset_timeout - now, 0.0)
        if self.state is BreakerState.HALF_OPEN:
            return max(self.trial_until - now, 0.0)
        return 0.0


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    trial: bool = False  # the upstream breaker's half-open trial
    retry_after: float = 0.0
    device_trial: bool = False  # the device's own breaker's half-open trial


ADMITTED = Admission(True)


def admit_step(snapshot: BreakerSnapshot, now: float, config: BreakerConfig) -> tuple[BreakerSnapshot, Admission]:
    """The state machine's admission step (the Redis script below mirrors it)."""
    if snapshot.state is BreakerState.CLOSED:
        return snapshot, ADMITTED
    if snapshot.state is BreakerState.OPEN:
        if now < snapshot.opened_at + config.reset_timeout:
            return snapshot, Admission(False, retry_after=snapshot.opened_at + config.reset_timeout - now)
        snapshot = replace(snapshot, state=BreakerState.HALF_OPEN, successes=0, trial_until=0.0, changed_at=now, devices=())
    if snapshot.trial_until > now:
        return snapshot, Admission(False, retry_after=snapshot.trial_until - now)
    return replace(snapshot, trial_until=now + config.reset_timeout), Admission(True, trial=True)


def with_device(devices: tuple[str, ...], device: str, config: BreakerConfig) -> tuple[str, ...]:
    if device in devices or len(devices) >= config.min_devices:
        return devices
    return (*devices, device)


def record_step(
    snapshot: BreakerSnapshot, now: float, success: bool, trial: bool, config: BreakerConfig, device: str
) -> BreakerSnapshot:
    """The state machine's outcome step. Outcomes of requests admitted under an earlier state
    (not trials) change nothing once the breaker has left `closed`. Failures open it (or open it
    again from half-open) only once they come from `min_devices` distinct devices; a success
    forgets them."""
    state = snapshot.state
    if state is BreakerState.CLOSED:
        if success:
            return replace(snapshot, failures=0, devices=()) if snapshot.failures else snapshot
        failures = snapshot.failures + 1
        devices = with_device(snapshot.devices, device, config)
        if failures >= config.failure_threshold and len(devices) >= config.min_devices:
            return replace(
                snapshot,
                state=BreakerState.OPEN,
                failures=failures,
                devices=devices,
                opened_at=now,
                changed_at=now,
                opens=snapshot.opens + 1,
            )
        return replace(snapshot, failures=failures, devices=devices)
    if state is BreakerState.HALF_OPEN and trial:
        if not success:
            devices = with_device(snapshot.devices, device, config)
            if len(devices) >= config.min_devices:
                return replace(
                    snapshot,
                    state=BreakerState.OPEN,
                    successes=0,
                    trial_until=0.0,
                    devices=devices,
                    opened_at=now,
                    changed_at=now,
                    opens=snapshot.opens + 1,
                )
            return replace(snapshot, trial_until=0.0, devices=devices)
        successes = snapshot.successes + 1
        if successes >= config.success_threshold:
            return replace(
                snapshot, state=BreakerState.CLOSED, failures=0, successes=0, trial_until=0.0, changed_at=now, devices=()
            )
        return replace(snapshot, successes=successes, trial_until=0.0, devices=())
    return snapshot


def reset_step(snapshot: BreakerSnapshot, now: float) -> BreakerSnapshot:
    return BreakerSnapshot(changed_at=now, opens=snapshot.opens)


class BreakerBackend(Protocol):
    async def admit(self, now: float, config: BreakerConfig) -> tuple[BreakerSnapshot, BreakerSnapshot, Admission]: ...

    async def record(
        self, now: float, success: bool, trial: bool, config: BreakerConfig, device: str
    ) -> tuple[BreakerSnapshot, BreakerSnapshot]: ...

    async def reset(self, now: float) -> tuple[BreakerSnapshot, BreakerSnapshot]: ...

    async def read(self) -> BreakerSnapshot: ...


class DeviceBreakers(Protocol):
    """Each device's own breaker, one backend per device."""

    def get(self, device: str) -> BreakerBackend: ...

    def settled(self, device: str, snapshot: BreakerSnapshot) -> None: ...

    async def reset_all(self) -> None: ...
