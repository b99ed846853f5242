"""The breaker's shared backend: its state in one Redis hash, every step one atomic Lua script.

The script is the state machine of `gateway.breaker_state` (admit_step, record_step, reset_step) written
once more in Lua, because a step must read and write the state with no other process in between;
the contract tests run the same cases against both backends. Times are epoch seconds from the
caller's clock (injectable in tests) and travel as strings: Lua numbers returned to Redis are
truncated to integers.
"""
from __future__ import annotations

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from gateway.breaker_state import Admission, BreakerConfig, BreakerSnapshot, BreakerState
from proxyproject.redis import get_async_redis, redis_key

_FIELDS = ("state", "failures", "successes", "opened_at", "changed_at", "trial_until", "opens")

# KEYS[1]: the hash. ARGV: op, now, failure_threshold, reset_timeout, success_threshold, success, trial.
# Returns the 7 fields before, the 7 fields after, then allowed, trial, retry_after (as strings).
_STEP_SCRIPT = """
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local failure_threshold = tonumber(ARGV[3])
local reset_timeout = tonumber(ARGV[4])
local success_threshold = tonumber(ARGV[5])
local success = ARGV[6] == '1'
local trial = ARGV[7] == '1'
local names = {'state', 'failures', 'successes', 'opened_at', 'changed_at', 'trial_until', 'opens'}
local raw = redis.call('HMGET', key, unpack(names))
local s = {
  state = raw[1] or 'closed', failures = tonumber(raw[2] or '0'), successes = tonumber(raw[3] or '0'),
  opened_at = tonumber(raw[4] or '0'), changed_at = tonumber(raw[5] or '0'),
  trial_until = tonumber(raw[6] or '0'), opens = tonumber(raw[7] or '0')
}
local function flat(t)
  return {t.state, tostring(t.failures), tostring(t.successes), tostring(t.opened_at), tostring(t.changed_at),
          tostring(t.trial_until), tostring(t.opens)}
end
local before = flat(s)
local allowed, is_trial, retry_after = 1, 0, 0
if op == 'admit' then
  if s.state == 'open' then
    if now < s.opened_at + reset_timeout then
      allowed, retry_after = 0, s.opened_at + reset_timeout - now
    else
      s.state, s.successes, s.trial_until, s.changed_at = 'half_open', 0, 0, now
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
      s.failures = 0
    else
      s.failures = s.failures + 1
      if s.failures >= failure_threshold then
        s.state, s.opened_at, s.changed_at, s.opens = 'open', now, now, s.opens + 1
      end
    end
  elseif s.state == 'half_open' and trial then
    if not success then
      s.state, s.successes, s.trial_until, s.opened_at, s.changed_at, s.opens = 'open', 0, 0, now, now, s.opens + 1
    else
      s.successes, s.trial_until = s.successes + 1, 0
      if s.successes >= success_threshold then
        s.state, s.failures, s.successes, s.changed_at = 'closed', 0, 0, now
      end
    end
  end
elseif op == 'reset' then
  s = {state = 'closed', failures = 0, successes = 0, opened_at = 0, changed_at = now, trial_until = 0, opens = s.opens}
end
local after = flat(s)
local changed = false
for i = 1, #after do
  if after[i] ~= before[i] then changed = true end
end
if changed then
  redis.call('HSET', key, 'state', after[1], 'failures', after[2], 'successes', after[3], 'opened_at', after[4],
             'changed_at', after[5], 'trial_until', after[6], 'opens', after[7])
end
local out = {}
for i = 1, #before do out[#out + 1] = before[i] end
for i = 1, #after do out[#out + 1] = after[i] end
out[#out + 1] = tostring(allowed)
out[#out + 1] = tostring(is_trial)
out[#out + 1] = tostring(retry_after)
return out
"""


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
    )


class RedisBreakerBackend:
    """One breaker for every process sharing the Redis server (and REDIS_KEY_PREFIX)."""

    def __init__(self, name: str = "upstream") -> None:
        self._name = name
        self._scripts: dict[int, AsyncScript] = {}

    def _script(self, client: Redis) -> AsyncScript:
        script = self._scripts.get(id(client))
        if script is None:
            script = self._scripts[id(client)] = client.register_script(_STEP_SCRIPT)
        return script

    async def _step(self, op: str, now: float, config: BreakerConfig | None, success: bool = False, trial: bool = False) -> list:
        client = get_async_redis()
        if client is None:
            raise RuntimeError("RedisBreakerBackend needs REDIS_URL")
        thresholds = (config.failure_threshold, config.reset_timeout, config.success_threshold) if config else (0, 0, 0)
        args = [op, repr(now), *thresholds, "1" if success else "0", "1" if trial else "0"]
        return await self._script(client)(keys=[redis_key("breaker", self._name)], args=args)

    async def admit(self, now: float, config: BreakerConfig) -> tuple[BreakerSnapshot, BreakerSnapshot, Admission]:
        raw = await self._step("admit", now, config)
        admission = Admission(raw[14] in (b"1", "1"), trial=raw[15] in (b"1", "1"), retry_after=float(raw[16]))
        return _snapshot(raw[0:7]), _snapshot(raw[7:14]), admission

    async def record(self, now: float, success: bool, trial: bool, config: BreakerConfig) -> tuple[BreakerSnapshot, BreakerSnapshot]:
        raw = await self._step("record", now, config, success, trial)
        return _snapshot(raw[0:7]), _snapshot(raw[7:14])

    async def reset(self, now: float) -> tuple[BreakerSnapshot, BreakerSnapshot]:
        raw = await self._step("reset", now, None)
        return _snapshot(raw[0:7]), _snapshot(raw[7:14])

    async def read(self) -> BreakerSnapshot:
        client = get_async_redis()
        if client is None:
            raise RuntimeError("RedisBreakerBackend needs REDIS_URL")
        values = await client.hmget(redis_key("breaker", self._name), list(_FIELDS))
        if values[0] is None:
            return BreakerSnapshot()
        return _snapshot([value if value is not None else b"0" for value in values])
