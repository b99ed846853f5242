"""The breaker's per-process backends (the embedded default): the steps of `gateway.breaker.base`
under a lock, so each is atomic within this process; other processes keep breakers of their own."""

from __future__ import annotations

import threading

from gateway.breaker.base import Admission, BreakerConfig, BreakerSnapshot, admit_step, record_step, reset_step


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

    async def record(
        self, now: float, success: bool, trial: bool, config: BreakerConfig, device: str
    ) -> tuple[BreakerSnapshot, BreakerSnapshot]:
        with self._lock:
            before = self._snapshot
            self._snapshot = record_step(before, now, success, trial, config, device)
            return before, self._snapshot

    async def reset(self, now: float) -> tuple[BreakerSnapshot, BreakerSnapshot]:
        with self._lock:
            before = self._snapshot
            self._snapshot = reset_step(before, now)
            return before, self._snapshot

    async def read(self) -> BreakerSnapshot:
        return self._snapshot


class LocalDeviceBreakers:
    """Each device's breaker in this process. Only devices whose breaker holds something (failures,
    or not closed) are kept: the others would all be a fresh closed breaker."""

    def __init__(self) -> None:
        self._backends: dict[str, LocalBreakerBackend] = {}

    def get(self, device: str) -> LocalBreakerBackend:
        backend = self._backends.get(device)
        if backend is None:
            backend = self._backends[device] = LocalBreakerBackend()
        return backend

    def settled(self, device: str, snapshot: BreakerSnapshot) -> None:
        if snapshot.clean:
            self._backends.pop(device, None)

    async def reset_all(self) -> None:
        self._backends.clear()
