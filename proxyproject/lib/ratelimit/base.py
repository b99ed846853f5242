"""The rate limiter's interface and the sliding-window arithmetic both backends share."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """`cost` is what this request adds; cost 0 only asks whether the window is still under the limit."""

    key: str
    limit: int
    window_ms: int
    cost: int = 1


@dataclass(frozen=True, slots=True)
class LimitDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    retry_after: float


class RateLimiter(Protocol):
    async def hit(self, checks: Sequence[LimitCheck]) -> list[LimitDecision]: ...

    async def add(self, key: str, window_ms: int, amount: int) -> None: ...


def estimate_count(previous: int, current: int, elapsed_ms: float, window_ms: int) -> float:
    return previous * (1.0 - elapsed_ms / window_ms) + current


def decide(
    limit: int, window_ms: int, cost: int, estimate: float, window_start_ms: float, previous: int, now_ms: float
) -> LimitDecision:
    fits = estimate + cost <= limit if cost else estimate < limit
    remaining = max(0, math.floor(limit - estimate - (cost if fits else 0)))
    reset_at = (window_start_ms + window_ms) / 1000.0
    if fits:
        return LimitDecision(True, limit, remaining, reset_at, 0.0)
    # The estimate falls as the previous bucket's weight decays; when it cannot fall far enough
    # within this window, the next window start (where `current` becomes `previous`) is the bound.
    needed = estimate + max(cost, 1) - limit
    if previous > 0 and needed <= previous * (window_start_ms + window_ms - now_ms) / window_ms:
        wait_ms = needed * window_ms / previous
    else:
        wait_ms = window_start_ms + window_ms - now_ms
    return LimitDecision(False, limit, remaining, reset_at, max(wait_ms / 1000.0, 0.001))
