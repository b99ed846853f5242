"""Sliding-window rate limiting with one atomic step per request.

Each limit keeps two fixed buckets (the current window and the previous one) and estimates the
count over the last `window_ms` as `previous * (1 - elapsed/window) + current`. This holds the
seed's "100 requests per minute" without the double burst a fixed window allows at its boundary.

Several checks (requests per minute, tokens per minute, ...) are decided together: all pass and
are counted, or none is counted. With Redis the decision is one Lua script call, so instances
sharing Redis enforce one global limit with no race; without Redis a per-process backend does the
same with no await between reading and writing. Redis uses its own clock unless one is injected,
so hosts with drifting clocks still agree on the window.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from proxyproject.lib.redis import get_async_redis, redis_configured, redis_key

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


def _estimate(previous: int, current: int, elapsed_ms: float, window_ms: int) -> float:
    return previous * (1.0 - elapsed_ms / window_ms) + current


def _decide(limit: int, window_ms: int, cost: int, estimate: float, window_start_ms: float, previous: int, now_ms: float) -> LimitDecision:
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
                estimate = _estimate(previous, current, now_ms - window_start, check.window_ms)
                decisions.append(_decide(check.limit, check.window_ms, check.cost, estimate, window_start, previous, now_ms))
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


# KEYS: one per check. ARGV: now_ms ('' = Redis server time), then limit, window_ms, cost per check.
# Returns, per check: allowed (0/1), estimate * 1000 (integer), window_start_ms, previous.
_HIT_SCRIPT = """
local now_ms = tonumber(ARGV[1])
if not now_ms then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local out = {}
local all_ok = true
local starts = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local window = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local index = math.floor(now_ms / window)
  local start = index * window
  local current = tonumber(redis.call('GET', key .. ':' .. index) or '0')
  local previous = tonumber(redis.call('GET', key .. ':' .. (index - 1)) or '0')
  local estimate = previous * (1 - (now_ms - start) / window) + current
  local ok
  if cost > 0 then ok = estimate + cost <= limit else ok = estimate < limit end
  if not ok then all_ok = false end
  starts[i] = index
  table.insert(out, ok and 1 or 0)
  table.insert(out, math.floor(estimate * 1000))
  table.insert(out, start)
  table.insert(out, previous)
end
if all_ok then
  for i, key in ipairs(KEYS) do
    local window = tonumber(ARGV[3 + (i - 1) * 3])
    local cost = tonumber(ARGV[4 + (i - 1) * 3])
    if cost > 0 then
      local bucket = key .. ':' .. starts[i]
      redis.call('INCRBY', bucket, cost)
      redis.call('PEXPIRE', bucket, window * 2 + 1000)
    end
  end
end
table.insert(out, now_ms)
return out
"""

_ADD_SCRIPT = """
local now_ms = tonumber(ARGV[3])
if not now_ms then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[1])
local bucket = KEYS[1] .. ':' .. math.floor(now_ms / window)
redis.call('INCRBY', bucket, tonumber(ARGV[2]))
redis.call('PEXPIRE', bucket, window * 2 + 1000)
return 1
"""


class RedisRateLimiter:
    """Shared backend: one Lua call per decision, so every instance sharing Redis sees one limit."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock
        self._scripts: dict[int, tuple[AsyncScript, AsyncScript]] = {}

    def _scripts_for(self, client: Redis) -> tuple[AsyncScript, AsyncScript]:
        """Scripts run by SHA (EVALSHA) after the first call, so each decision sends only its arguments."""
        scripts = self._scripts.get(id(client))
        if scripts is None:
            scripts = (client.register_script(_HIT_SCRIPT), client.register_script(_ADD_SCRIPT))
            self._scripts[id(client)] = scripts
        return scripts

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    async def hit(self, checks: Sequence[LimitCheck]) -> list[LimitDecision]:
        client = get_async_redis()
        keys = [redis_key("rl", check.key) for check in checks]
        args: list[object] = [self._now_arg()]
        for check in checks:
            args += [check.limit, check.window_ms, check.cost]
        hit_script, _ = self._scripts_for(client)
        raw = await hit_script(keys=keys, args=args)
        now_ms = float(raw[-1])
        decisions = []
        for i, check in enumerate(checks):
            _, estimate_milli, window_start, previous = raw[i * 4: i * 4 + 4]
            decisions.append(_decide(check.limit, check.window_ms, check.cost, int(estimate_milli) / 1000.0, float(window_start), int(previous), now_ms))
        return decisions

    async def add(self, key: str, window_ms: int, amount: int) -> None:
        client = get_async_redis()
        _, add_script = self._scripts_for(client)
        await add_script(keys=[redis_key("rl", key)], args=[window_ms, amount, self._now_arg()])


_local_limiter = LocalRateLimiter()
_redis_limiter = RedisRateLimiter()


def get_rate_limiter() -> RateLimiter:
    """The Redis backend when REDIS_URL is set, else this process's local one."""
    return _redis_limiter if redis_configured() else _local_limiter
