"""The shared rate limiter: one Lua call per decision, so every instance sharing Redis sees one limit.

A limit is one hash whose fields are its window buckets: a bucket older than the previous window is
deleted when the limit is next counted, and the hash expires two windows after its last count. The
checks of one decision must share a hash tag on a Redis Cluster (`proxyproject.lib.redis.slot_tag`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from proxyproject.lib.ratelimit.base import Clock, LimitCheck, LimitDecision, decide
from proxyproject.lib.redis import redis_key, require_async_redis
from proxyproject.lib.resp_client import LeanScript, get_resp_client


def _now_ms_from_argv(index: int) -> str:
    """The Lua that sets `now_ms` from ARGV[index], or from Redis's clock when that is ''."""
    return f"""local now_ms = tonumber(ARGV[{index}])
if not now_ms then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end"""


# KEYS: one hash per check, its fields the window buckets (window index -> count), so the script
# declares every key it touches (a Redis Cluster routes on them) and still takes the window from
# Redis's clock. ARGV: now_ms ('' = Redis server time), then limit, window_ms, cost per check.
# Returns, per check: allowed (0/1), estimate * 1000 (integer), window_start_ms, previous.
_HIT_SCRIPT = (
    _now_ms_from_argv(1)
    + """
local out = {}
local all_ok = true
local starts = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local window = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local index = math.floor(now_ms / window)
  local start = index * window
  local counts = redis.call('HMGET', key, index, index - 1)
  local current = tonumber(counts[1] or '0')
  local previous = tonumber(counts[2] or '0')
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
      redis.call('HINCRBY', key, starts[i], cost)
      redis.call('HDEL', key, starts[i] - 2)
      redis.call('PEXPIRE', key, window * 2 + 1000)
    end
  end
end
table.insert(out, now_ms)
return out
"""
)

# KEYS[1]: the limit's hash. ARGV: window_ms, amount, now_ms ('' = Redis server time).
_ADD_SCRIPT = (
    _now_ms_from_argv(3)
    + """
local window = tonumber(ARGV[1])
local index = math.floor(now_ms / window)
redis.call('HINCRBY', KEYS[1], index, tonumber(ARGV[2]))
redis.call('HDEL', KEYS[1], index - 2)
redis.call('PEXPIRE', KEYS[1], window * 2 + 1000)
return 1
"""
)

# KEYS[1]: the limit's hash. ARGV: now_ms ('' = Redis server time), limit, window_ms, the units
# wanted, then the bucket and units of a lapsed lease to hand back (0 units: none). Grants what fits,
# up to the units wanted: returns granted, estimate * 1000 (before the grant), window index,
# window_start_ms, previous, now_ms.
_LEASE_SCRIPT = (
    _now_ms_from_argv(1)
    + """
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local returned = tonumber(ARGV[6])
if returned > 0 then
  local held = tonumber(redis.call('HGET', KEYS[1], ARGV[5]) or '0')
  if held > 0 then
    redis.call('HINCRBY', KEYS[1], ARGV[5], -math.min(held, returned))
  end
end
local index = math.floor(now_ms / window)
local start = index * window
local counts = redis.call('HMGET', KEYS[1], index, index - 1)
local current = tonumber(counts[1] or '0')
local previous = tonumber(counts[2] or '0')
local estimate = previous * (1 - (now_ms - start) / window) + current
local granted = math.min(wanted, math.floor(limit - estimate))
if granted < 1 then
  granted = 0
else
  redis.call('HINCRBY', KEYS[1], index, granted)
  redis.call('HDEL', KEYS[1], index - 2)
  redis.call('PEXPIRE', KEYS[1], window * 2 + 1000)
end
return {granted, math.floor(estimate * 1000), index, start, previous, now_ms}
"""
)


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """What one lease script answered: `granted` units (0: no room), counted in window `bucket`."""

    granted: int
    estimate: float
    bucket: int
    window_start_ms: float
    previous: int
    now_ms: float


_HIT = LeanScript(_HIT_SCRIPT)
_ADD = LeanScript(_ADD_SCRIPT)
_LEASE = LeanScript(_LEASE_SCRIPT)


class RedisRateLimiter:
    """Shared backend: one Lua call per decision, so every instance sharing Redis sees one limit."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock
        self._registered: dict[tuple[int, str], AsyncScript] = {}

    async def _run(self, script: LeanScript, keys: list[str], args: list[str | int]) -> Any:
        """On a single Redis through the lean client (every request pays this call), else redis-py's
        (a Cluster), by SHA after the first call either way."""
        lean = get_resp_client()
        if lean is not None:
            return await lean.run_script(script, keys, args)
        client = require_async_redis()
        registered = self._registered.get((id(client), script.sha))
        if registered is None:
            registered = self._registered[(id(client), script.sha)] = client.register_script(script.source)
        return await registered(keys=keys, args=args)

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    async def hit(self, checks: Sequence[LimitCheck]) -> list[LimitDecision]:
        keys = [redis_key("rl", check.key) for check in checks]
        args: list[str | int] = [self._now_arg()]
        for check in checks:
            args += [check.limit, check.window_ms, check.cost]
        raw = await self._run(_HIT, keys, args)
        now_ms = float(raw[-1])
        decisions = []
        for i, check in enumerate(checks):
            _, estimate_milli, window_start, previous = raw[i * 4 : i * 4 + 4]
            decisions.append(
                decide(
                    check.limit,
                    check.window_ms,
                    check.cost,
                    int(estimate_milli) / 1000.0,
                    float(window_start),
                    int(previous),
                    now_ms,
                )
            )
        return decisions

    async def add(self, key: str, window_ms: int, amount: int) -> None:
        await self._run(_ADD, [redis_key("rl", key)], [window_ms, amount, self._now_arg()])

    async def lease(self, check: LimitCheck, wanted: int, returned_bucket: int, returned: int) -> LeaseGrant:
        """Up to `wanted` units of `check`'s limit in one script, handing back `returned` units
        counted in `returned_bucket` (`proxyproject.lib.ratelimit.leases`)."""
        raw = await self._run(
            _LEASE,
            [redis_key("rl", check.key)],
            [self._now_arg(), check.limit, check.window_ms, wanted, returned_bucket, returned],
        )
        granted, estimate_milli, bucket, window_start, previous, now_ms = raw
        return LeaseGrant(
            int(granted), int(estimate_milli) / 1000.0, int(bucket), float(window_start), int(previous), float(now_ms)
        )
