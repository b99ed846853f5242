"""The breaker's shared backend: its state in one Redis hash, every step one atomic Lua script.

The script is the state machine of `gateway.breaker.base` (admit_step, record_step, reset_step) written
once more in Lua, because a step must read and write the state with no other process in between;
the contract tests run the same cases against both backends. Times are epoch seconds from the
caller's clock (injectable in tests) and travel as strings: Lua numbers returned to Redis are
truncated to integers. A device's breaker is a hash of its own that is deleted once clean and
expires `DEVICE_KEY_LIFETIMES` reset timeouts after its last change (a device that never came back).
"""

from __future__ import annotations

import math
from typing import Any

from redis.commands.core import AsyncScript

from gateway.breaker.base import Admission, BreakerConfig, BreakerSnapshot, BreakerState
from proxyproject.lib.redis import AsyncRedis, get_async_redis, redis_key

_FIELDS = ("state", "failures", "successes", "opened_at", "changed_at", "trial_until", "opens", "devices")
DEVICE_KEY_LIFETIMES = 10

# KEYS[1]: the hash. ARGV: op, now, failure_threshold, reset_timeout, success_threshold, success, trial,
# min_devices, device, expire_seconds (0: the hash is kept; else it is deleted once clean).
# Returns the 8 fields before, the 8 fields after, then allowed, trial, retry_after (as strings).
_STEP_SCRIPT = """
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local failure_threshold = tonumber(ARGV[3])
local reset_timeout = tonumber(ARGV[4])
local success_threshold = tonumber(ARGV[5])
local success = ARGV[6] == '1'
local trial = ARGV[7] == '1'
local min_devices = tonumber(ARGV[8])
local device = ARGV[9]
local expire_seconds = tonumber(ARGV[10])
local names = {'state', 'failures', 'successes', 'opened_at', 'changed_at', 'trial_until', 'opens', 'devices'}
local raw = redis.call('HMGET', key, unpack(names))
local s = {
  state = raw[1] or 'closed', failures = tonumber(raw[2] or '0'), successes = tonumber(raw[3] or '0'),
  opened_at = tonumber(raw[4] or '0'), changed_at = tonumber(raw[5] or '0'),
  trial_until = tonumber(raw[6] or '0'), opens = tonumber(raw[7] or '0'), devices = raw[8] or ''
}
local function flat(t)
  return {t.state, tostring(t.failures), tostring(t.successes), tostring(t.opened_at), tostring(t.changed_at),
          tostring(t.trial_until), tostring(t.opens), t.devices}
end
-- devices: ids joined by ','; the failing devices since the last success, at most min_devices kept
local function count_devices(list)
  if list == '' then return 0 end
  local n = 0
  for _ in string.gmatch(list, '[^,]+') do n = n + 1 end
  return n
end
local function with_device(list)
  local n = 0
  for id in string.gmatch(list, '[^,]+') do
    if id == device then return list end
    n = n + 1
  end
  if n >= min_devices then return list end
  if list == '' then return device end
  return list .. ',' .. device
end
local before = flat(s)
local allowed, is_trial, retry_after = 1, 0, 0
if op == 'admit' then
  if s.state == 'open' then
    if now < s.opened_at + reset_timeout then
      allowed, retry_after = 0, s.opened_at + reset_timeout - now
    else
      s.state, s.successes, s.trial_until, s.changed_at, s.devices = 'half_open', 0, 0, now, ''
    end
  end
  if allowed == 1 and s.state == 'half_open' then
    if s.trial_until > now then
      allowed, retry_after = 0, s.trial_until - now
    else
      s.trial_until, is_trial = now + reset_timeout, 1
    end
  end
elseif op == 'record' then
  if s.state == 'closed' then
    if success then
      if s.failures > 0 then s.failures, s.devices = 0, '' end
    else
      s.failures = s.failures + 1
      s.devices = with_device(s.devices)
      if s.failures >= failure_threshold and count_devices(s.devices) >= min_devices then
        s.state, s.opened_at, s.changed_at, s.opens = 'open', now, now, s.opens + 1
      end
    end
  elseif s.state == 'half_open' and trial then
    if not success then
      s.devices = with_device(s.devices)
      if count_devices(s.devices) >= min_devices then
        s.state, s.successes, s.trial_until, s.opened_at, s.changed_at, s.opens = 'open', 0, 0, now, now, s.opens + 1
      else
        s.trial_until = 0
      end
    else
      s.successes, s.trial_until, s.devices = s.successes + 1, 0, ''
      if s.successes >= success_threshold then
        s.state, s.failures, s.successes, s.changed_at = 'closed', 0, 0, now
      end
    end
  end
elseif op == 'reset' then
  s = {state = 'closed', failures = 0, successes = 0, opened_at = 0, changed_at = now, trial_until = 0, opens = s.opens, devices = ''}
end
local after = flat(s)
local changed = false
for i = 1, #after do
  if after[i] ~= before[i] then changed = true end
end
if changed then
  if expire_seconds > 0 and s.state == 'closed' and s.failures == 0 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'state', after[1], 'failures', after[2], 'successes', after[3], 'opened_at', after[4],
               'changed_at', after[5], 'trial_until', after[6], 'opens', after[7], 'devices', after[8])
    if expire_seconds > 0 then redis.call('EXPIRE', key, expire_seconds) end
  end
end
local out = {}
for i = 1, #before do out[#out + 1] = before[i] end
for i = 1, #after do out[#out + 1] = after[i] end
out[#out + 1] = tostring(allowed)
out[#out + 1] = tostring(is_trial)
out[#out + 1] = tostring(retry_after)
return out
"""
_scripts: dict[int, AsyncScript] = {}


def _script(client: AsyncRedis) -> AsyncScript:
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_STEP_SCRIPT)
    return script


def _snapshot(values: list[bytes | str]) -> BreakerSnapshot:
    text = [value.decode() if isinstance(value, bytes) else value for value in values]
    return BreakerSnapshot(
        state=BreakerState(text[0]),
        failures=int(float(text[1])),
        successes=int(float(text[2])),
        opened_at=float(text[3]),
        changed_at=float(text[4]),
        trial_until=float(text[5]),
        opens=int(float(text[6])),
        devices=tuple(text[7].split(",")) if text[7] else (),
    )


class RedisBreakerBackend:
    """One breaker for every process sharing the Redis server (and REDIS_KEY_PREFIX).
    `expire_seconds` > 0 makes it a device's: deleted once clean, expiring when left alone."""

    def __init__(self, name: str = "upstream", *, expire_seconds: int = 0) -> None:
        self._name = name
        self._expire_seconds = expire_seconds

    async def _step(
        self, op: str, now: float, config: BreakerConfig | None, success: bool = False, trial: bool = False, device: str = ""
    ) -> list[Any]:
        client = get_async_redis()
        if client is None:
            raise RuntimeError("RedisBreakerBackend needs REDIS_URL")
        thresholds = (config.failure_threshold, config.reset_timeout, config.success_threshold) if config else (0, 0, 0)
        min_devices = config.min_devices if config else 1
        args = [
            op,
            repr(now),
            *thresholds,
            "1" if success else "0",
            "1" if trial else "0",
            min_devices,
            device,
            self._expire_seconds,
        ]
        answer: list[Any] = await _script(client)(keys=[redis_key("breaker", self._name)], args=args)
        return answer

    async def admit(self, now: float, config: BreakerConfig) -> tuple[BreakerSnapshot, BreakerSnapshot, Admission]:
        raw = await self._step("admit", now, config)
        admission = Admission(raw[16] in (b"1", "1"), trial=raw[17] in (b"1", "1"), retry_after=float(raw[18]))
        return _snapshot(raw[0:8]), _snapshot(raw[8:16]), admission

    async def record(
        self, now: float, success: bool, trial: bool, config: BreakerConfig, device: str
    ) -> tuple[BreakerSnapshot, BreakerSnapshot]:
        raw = await self._step("record", now, config, success, trial, device)
        return _snapshot(raw[0:8]), _snapshot(raw[8:16])

    async def reset(self, now: float) -> tuple[BreakerSnapshot, BreakerSnapshot]:
        raw = await self._step("reset", now, None)
        return _snapshot(raw[0:8]), _snapshot(raw[8:16])

    async def read(self) -> BreakerSnapshot:
        client = get_async_redis()
        if client is None:
            raise RuntimeError("RedisBreakerBackend needs REDIS_URL")
        values = await client.hmget(redis_key("breaker", self._name), list(_FIELDS))
        if values[0] is None:
            return BreakerSnapshot()
        return _snapshot([value if value is not None else b"0" for value in values[:7]] + [values[7] or b""])


class RedisDeviceBreakers:
    """Each device's breaker in Redis, shared by every process; Redis forgets clean ones itself."""

    def __init__(self, reset_timeout: float, name: str = "device") -> None:
        self._expire_seconds = max(1, math.ceil(reset_timeout * DEVICE_KEY_LIFETIMES))
        self._name = name

    def get(self, device: str) -> RedisBreakerBackend:
        return RedisBreakerBackend(f"{self._name}:{device}", expire_seconds=self._expire_seconds)

    def settled(self, device: str, snapshot: BreakerSnapshot) -> None:
        """Nothing to do: the script deletes a clean device's hash."""

    async def reset_all(self) -> None:
        client = get_async_redis()
        if client is None:
            raise RuntimeError("RedisDeviceBreakers needs REDIS_URL")
        pattern = redis_key("breaker", f"{self._name}:*")
        async for key in client.scan_iter(match=pattern, count=500):
            await client.delete(key)
