"""The per-process spend backend (the embedded default): counters in a dict of this process."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from proxyproject.lib.logging import log_event
from usage.spend.base import CapCheck, Counter, ReserveOutcome

logger = logging.getLogger("usage.spend")


@dataclass
class _LocalCounter:
    expires_at: float
    settled: int = 0
    reservations: dict[str, tuple[int, float]] = field(default_factory=dict)

    def live_reserved(self, now: float) -> int:
        expired = [rid for rid, (_, until) in self.reservations.items() if until <= now]
        for rid in expired:
            del self.reservations[rid]
        return sum(amount for amount, _ in self.reservations.values())


TotalsLoader = Callable[[], dict[Counter, int]]
LOCAL_RECONCILE_SECONDS = 60.0


def _load_totals_and_close(loader: TotalsLoader) -> dict[Counter, int]:
    try:
        return loader()
    finally:
        close_old_connections()


class LocalSpendBackend:
    """Per process. Each operation is one critical section of dict work with no await inside, so it
    is atomic for the event loop; the lock only guards against the threads of commands and Celery.

    Nothing outside this process can reach its counters (the rollup task runs in Celery's), so with
    a `totals_loader` it raises them to the database's figures itself: before its first reservation
    (a restarted process does not start from zero), then in the background once a minute (what
    other processes spent arrives that way). One query per minute per process, never per request.
    """

    def __init__(self, totals_loader: TotalsLoader | None = None) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, _LocalCounter] = {}
        self.totals_loader = totals_loader
        self.loaded_at: float | None = None
        self.refresh: asyncio.Task[None] | None = None

    async def _load_from_database(self, loader: TotalsLoader) -> None:
        try:
            totals = await sync_to_async(_load_totals_and_close, thread_sensitive=False)(loader)
        except Exception as exc:  # database away: enforce on what this process knows, retry in a minute
            log_event(
                logger, "Spend counters not refreshed from the database", logging.WARNING, error=f"{type(exc).__name__}: {exc}"
            )
        else:
            self.raise_settled_to(totals)
        self.loaded_at = time.monotonic()

    async def keep_in_step_with_database(self) -> None:
        loader = self.totals_loader
        if loader is None:
            return
        if self.loaded_at is None:
            await self._load_from_database(loader)
        elif time.monotonic() - self.loaded_at >= LOCAL_RECONCILE_SECONDS and (self.refresh is None or self.refresh.done()):
            self.refresh = asyncio.get_running_loop().create_task(self._load_from_database(loader))

    def _counter(self, counter: Counter, now: float) -> _LocalCounter:
        if len(self.counters) > 10_000:
            for name in [name for name, c in self.counters.items() if c.expires_at <= now]:
                del self.counters[name]
        return self.counters.setdefault(counter.name, _LocalCounter(counter.expires_at))

    async def reserve(
        self, checks: list[CapCheck], nanos: int, request_id: str, now: float, ttl_seconds: float, *, floor: int | None = None
    ) -> ReserveOutcome:
        await self.keep_in_step_with_database()
        floor = nanos if floor is None else floor
        with self.lock:
            states = [self._counter(check.counter, now) for check in checks]
            held = states[0].reservations.get(request_id)
            if held is not None:
                return ReserveOutcome(held[0])
            granted = nanos
            if floor >= 0:
                for index, (check, state) in enumerate(zip(checks, states)):
                    reserved = state.live_reserved(now)
                    room = check.cap_nanos - state.settled - reserved
                    if room < floor:
                        return ReserveOutcome(None, index, state.settled, reserved)
                    granted = min(granted, room)
            for state in states:
                state.reservations[request_id] = (granted, now + ttl_seconds)
            return ReserveOutcome(granted)

    async def finish(
        self, counters: tuple[Counter, ...], request_id: str, actual_nanos: int | None, now: float
    ) -> tuple[int, ...]:
        settled = []
        with self.lock:
            for counter in counters:
                state = self._counter(counter, now)
                state.reservations.pop(request_id, None)
                if actual_nanos is not None:
                    state.settled += actual_nanos
                settled.append(state.settled)
        return tuple(settled)

    def raise_settled_to(self, totals: dict[Counter, int]) -> None:
        now = time.time()
        with self.lock:
            for counter, total in totals.items():
                state = self._counter(counter, now)
                state.settled = max(state.settled, total)
        self.loaded_at = time.monotonic()

    def adjust_settled(self, deltas: dict[Counter, int]) -> None:
        with self.lock:
            for counter, delta in deltas.items():
                state = self.counters.get(counter.name)
                if state is not None:
                    state.settled = max(state.settled + delta, 0)

    def snapshot(self, counter: Counter, now: float) -> tuple[int, int]:
        with self.lock:
            state = self.counters.get(counter.name)
            return (0, 0) if state is None else (state.settled, state.live_reserved(now))
