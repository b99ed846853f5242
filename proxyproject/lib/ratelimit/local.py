"""The per-process rate limiter: no await between reading and writing a window, so it is atomic
within one process (the embedded default), and knows nothing of other processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from proxyproject.lib.ratelimit.base import Clock, LimitCheck, LimitDecision, decide, estimate_count


class LocalRateLimiter:
    """Per-process backend: correct within one process (the embedded default), not across processes."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def _counts(self, key: str, window_ms: int, window_index: int) -> tuple[int, int]:
        index, current, previous = self._buckets.get(key, (window_index, 0, 0))
        if index == window_index:
            return current, previous
        if index == window_index - 1:
            return 0, current
        return 0, 0

    async def hit(self, checks: Sequence[LimitCheck]) -> list[LimitDecision]:
        now_ms = self._clock() * 1000.0
        with self._lock:
            decisions = []
            for check in checks:
                window_index = int(now_ms // check.window_ms)
                window_start = window_index * check.window_ms
                current, previous = self._counts(check.key, check.window_ms, window_index)
                estimate = estimate_count(previous, current, now_ms - window_start, check.window_ms)
                decisions.append(decide(check.limit, check.window_ms, check.cost, estimate, window_start, previous, now_ms))
            if all(decision.allowed for decision in decisions):
                for check in checks:
                    window_index = int(now_ms // check.window_ms)
                    current, previous = self._counts(check.key, check.window_ms, window_index)
                    self._buckets[check.key] = (window_index, current + check.cost, previous)
            return decisions

    async def add(self, key: str, window_ms: int, amount: int) -> None:
        now_ms = self._clock() * 1000.0
        window_index = int(now_ms // window_ms)
        with self._lock:
            current, previous = self._counts(key, window_ms, window_index)
            self._buckets[key] = (window_index, current + amount, previous)
