"""The Redis spend backend: every check-and-reserve, settle and reconciliation is one Lua script,
so all gateway processes sharing the Redis see one set of counters and no race can slip between a
check and its reservation."""

from __future__ import annotations

from proxyproject.lib.redis import AsyncRedis, SyncRedis, get_async_redis, get_sync_redis, redis_key, slot_tag
from usage.spend.base import CapCheck, Counter, ReserveOutcome

RESERVE_SCRIPT = """
-- KEYS: one hash per counter. ARGV: nanos, request id, now ms, reservation expiry ms, floor nanos
-- (negative: never refuse), then per counter: cap nanos, counter expiry (epoch s). A hash holds
-- `settled`, `reserved`, `r:<id>` amounts and `x:<id>` expiries; expired reservations are dropped
-- before the check. Reserves `nanos`, or the least room left when that is at least the floor.
-- Returns {granted, 0, 0, 0} or {-1, failed counter (1-based), its settled, its reserved}.
local nanos, id, now, expires, floor = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
for i, key in ipairs(KEYS) do
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    local name = fields[j]
    if string.sub(name, 1, 2) == 'x:' and tonumber(fields[j + 1]) <= now then
      local rid = string.sub(name, 3)
      local amount = redis.call('HGET', key, 'r:' .. rid)
      if amount then redis.call('HINCRBY', key, 'reserved', -tonumber(amount)) end
      redis.call('HDEL', key, 'r:' .. rid, name)
    end
  end
end
local held = redis.call('HGET', KEYS[1], 'r:' .. id)
if held then
  return {tonumber(held), 0, 0, 0}
end
local granted = nanos
if floor >= 0 then
  for i, key in ipairs(KEYS) do
    local cap = tonumber(ARGV[4 + 2 * i])
    local settled = tonumber(redis.call('HGET', key, 'settled') or '0')
    local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
    local room = cap - settled - reserved
    if room < floor then
      return {-1, i, settled, reserved}
    end
    if room < granted then granted = room end
  end
end
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'reserved', granted)
  redis.call('HSET', key, 'r:' .. id, granted, 'x:' .. id, expires)
  redis.call('EXPIREAT', key, ARGV[5 + 2 * i])
end
return {granted, 0, 0, 0}
"""

FINISH_SCRIPT = """
-- KEYS: the reservation's counters. ARGV: request id, actual nanos or '' (release), then per counter its expiry.
-- Returns each counter's settled total after.
local settled = {}
for i, key in ipairs(KEYS) do
  local amount = redis.call('HGET', key, 'r:' .. ARGV[1])
  if amount then
    redis.call('HINCRBY', key, 'reserved', -tonumber(amount))
    redis.call('HDEL', key, 'r:' .. ARGV[1], 'x:' .. ARGV[1])
  end
  if ARGV[2] ~= '' then
    redis.call('HINCRBY', key, 'settled', ARGV[2])
    redis.call('EXPIREAT', key, ARGV[2 + i])
  end
  settled[i] = tonumber(redis.call('HGET', key, 'settled') or '0')
end
return settled
"""

RAISE_SCRIPT = """
-- KEYS: counters. ARGV: per counter, database total nanos and expiry.
for i, key in ipairs(KEYS) do
  local total = tonumber(ARGV[2 * i - 1])
  if tonumber(redis.call('HGET', key, 'settled') or '0') < total then
    redis.call('HSET', key, 'settled', ARGV[2 * i - 1])
    redis.call('EXPIREAT', key, ARGV[2 * i])
  end
end
return 0
"""

ADJUST_SCRIPT = """
-- KEYS: counters. ARGV: per counter, the nanos to add (negative to take off). Only existing counters.
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    if redis.call('HINCRBY', key, 'settled', ARGV[i]) < 0 then
      redis.call('HSET', key, 'settled', 0)
    end
  end
end
return 0
"""


# One hash tag for every counter: a reservation checks a device's counters and its organization's in
# one script, and reconciliation raises any counters together, so on a Redis Cluster they share a slot.
SPEND_TAG = slot_tag("spend")


def _key(counter: Counter) -> str:
    return redis_key(SPEND_TAG, counter.name)


def _async_client() -> AsyncRedis:
    client = get_async_redis()
    if client is None:
        raise RuntimeError("RedisSpendBackend needs REDIS_URL")
    return client


def _sync_client() -> SyncRedis:
    client = get_sync_redis()
    if client is None:
        raise RuntimeError("RedisSpendBackend needs REDIS_URL")
    return client


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisSpendBackend:
    async def reserve(
        self, checks: list[CapCheck], nanos: int, request_id: str, now: float, ttl_seconds: float, *, floor: int | None = None
    ) -> ReserveOutcome:
        client = _async_client()
        expires_ms = int((now + ttl_seconds) * 1000)
        argv: list[int | str] = [nanos, request_id, int(now * 1000), expires_ms, nanos if floor is None else floor]
        for check in checks:
            argv += [check.cap_nanos, int(check.counter.expires_at)]
        granted, failed, settled, reserved = (
            int(value) for value in await client.eval(RESERVE_SCRIPT, len(checks), *[_key(c.counter) for c in checks], *argv)
        )
        if granted < 0:
            return ReserveOutcome(None, failed - 1, settled, reserved)
        return ReserveOutcome(granted)

    async def finish(
        self, counters: tuple[Counter, ...], request_id: str, actual_nanos: int | None, now: float
    ) -> tuple[int, ...]:
        client = _async_client()
        argv: list[int | str] = [request_id, "" if actual_nanos is None else actual_nanos, *[int(c.expires_at) for c in counters]]
        settled = await client.eval(FINISH_SCRIPT, len(counters), *[_key(c) for c in counters], *argv)
        return tuple(int(value) for value in settled)

    def raise_settled_to(self, totals: dict[Counter, int]) -> None:
        client = _sync_client()
        items = list(totals.items())
        for start in range(0, len(items), 200):
            chunk = items[start : start + 200]
            argv: list[int | str] = []
            for counter, total in chunk:
                argv += [total, int(counter.expires_at)]
            client.eval(RAISE_SCRIPT, len(chunk), *[_key(counter) for counter, _ in chunk], *argv)

    def adjust_settled(self, deltas: dict[Counter, int]) -> None:
        client = _sync_client()
        items = list(deltas.items())
        for start in range(0, len(items), 200):
            chunk = items[start : start + 200]
            client.eval(ADJUST_SCRIPT, len(chunk), *[_key(counter) for counter, _ in chunk], *[delta for _, delta in chunk])

    def snapshot(self, counter: Counter, now: float) -> tuple[int, int]:
        fields = {_text(k): _text(v) for k, v in _sync_client().hgetall(_key(counter)).items()}
        now_ms = now * 1000
        live = sum(
            int(value)
            for name, value in fields.items()
            if name.startswith("r:") and float(fields.get("x:" + name[2:], "0")) > now_ms
        )
        return int(fields.get("settled", 0)), live
