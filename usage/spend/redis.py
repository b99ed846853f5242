"""The Redis spend backend: every check-and-reserve, settle and reconciliation is a Lua script, so all
gateway processes sharing the Redis see one set of counters and no race can slip between a check and
its reservation.

Each subject's counters (one device's, one person's, one organization's) carry the subject's hash tag,
`{spend:device:12}`, and nothing else: a key never depends on which organization or person a device
belongs to, so moving a device touches no counter. On a single Redis a reservation is one script over
every counter, atomic as a whole. On a Redis Cluster it is one script per subject (sent together),
each atomic over its subject's counters; the rules that make the whole all-or-nothing are in
`reserve` (why this is enough: docs/ARCHITECTURE.md, *Spend counters on a Redis Cluster*).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any

from proxyproject.lib.redis import (
    REDIS_ERRORS,
    AsyncRedis,
    SyncRedis,
    cluster_configured,
    get_async_redis,
    get_sync_redis,
    redis_key,
    slot_tag,
)
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

SHRINK_SCRIPT = """
-- KEYS: counters holding a reservation. ARGV: request id, the nanos it keeps (less than it holds).
for i, key in ipairs(KEYS) do
  local held = redis.call('HGET', key, 'r:' .. ARGV[1])
  if held and tonumber(held) > tonumber(ARGV[2]) then
    redis.call('HINCRBY', key, 'reserved', tonumber(ARGV[2]) - tonumber(held))
    redis.call('HSET', key, 'r:' .. ARGV[1], ARGV[2])
  end
end
return 0
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


_RECONCILE_CHUNK = 200  # counters per script on a single Redis
_PIPELINE_SCRIPTS = 100  # scripts per pipeline round trip when reconciling


def _key(counter: Counter) -> str:
    return redis_key(slot_tag("spend", counter.subject), counter.period_bucket)


def counter_keys_pattern() -> str:
    """What every spend counter's key matches (for SCAN)."""
    return redis_key("{spend:*")


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


def _slot_groups(counters: Sequence[Counter]) -> list[list[int]]:
    """The indices of the counters one script may take together: all of them on a single Redis; on a
    cluster, each subject's (their keys share its hash tag, so one slot)."""
    if not cluster_configured():
        return [list(range(len(counters)))]
    groups: dict[str, list[int]] = {}
    for index, counter in enumerate(counters):
        groups.setdefault(counter.subject, []).append(index)
    return list(groups.values())


async def _each(calls: list[Awaitable[Any]]) -> list[Any]:
    """The calls' answers in order, sent together; one call is awaited directly (no task)."""
    if len(calls) == 1:
        return [await calls[0]]
    return list(await asyncio.gather(*calls))


async def _release_quietly(client: AsyncRedis, counters: list[Counter], request_id: str) -> None:
    """Undo one group's part of a reservation the request will not get. If Redis does not answer,
    the part lapses with the reservation's expiry, as an unsettled one does."""
    with contextlib.suppress(*REDIS_ERRORS):
        keys = [_key(counter) for counter in counters]
        await client.eval(FINISH_SCRIPT, len(keys), *keys, request_id, "", *[int(c.expires_at) for c in counters])


class RedisSpendBackend:
    async def reserve(
        self, checks: list[CapCheck], nanos: int, request_id: str, now: float, ttl_seconds: float, *, floor: int | None = None
    ) -> ReserveOutcome:
        """On a cluster each subject's script reserves what its own caps allow, and then: if one
        refused, the others' parts are released and the request is refused with the first cap (in
        `checks` order) that had no room, as the single script would; if they granted different
        amounts, each part is shrunk to the least. Every counter's check-and-reserve stays atomic,
        so no cap is exceeded; for one round trip a refused or shrunk request holds more than it
        ends up with, which can only refuse another request near the same cap."""
        client = _async_client()
        expires_ms = int((now + ttl_seconds) * 1000)
        head: list[int | str] = [nanos, request_id, int(now * 1000), expires_ms, nanos if floor is None else floor]
        groups = _slot_groups([check.counter for check in checks])

        async def reserve_group(group: list[int]) -> list[int]:
            argv = list(head)
            for index in group:
                argv += [checks[index].cap_nanos, int(checks[index].counter.expires_at)]
            keys = [_key(checks[index].counter) for index in group]
            return [int(value) for value in await client.eval(RESERVE_SCRIPT, len(keys), *keys, *argv)]

        if len(groups) == 1:
            granted, failed, settled, reserved = await reserve_group(groups[0])
            return ReserveOutcome(granted) if granted >= 0 else ReserveOutcome(None, groups[0][failed - 1], settled, reserved)
        answers = await asyncio.gather(*(reserve_group(group) for group in groups), return_exceptions=True)
        holding = [group for group, answer in zip(groups, answers) if isinstance(answer, list) and answer[0] >= 0]
        refusals = sorted(
            (group[answer[1] - 1], answer[2], answer[3])
            for group, answer in zip(groups, answers)
            if isinstance(answer, list) and answer[0] < 0
        )
        failure = next((answer for answer in answers if isinstance(answer, BaseException)), None)
        if failure is not None or refusals:
            await asyncio.gather(*(_release_quietly(client, [checks[i].counter for i in group], request_id) for group in holding))
            if failure is not None:
                raise failure
            failed, settled, reserved = refusals[0]
            return ReserveOutcome(None, failed, settled, reserved)
        grants = [answer[0] for answer in answers if isinstance(answer, list)]
        granted = min(grants)
        shrinks = [
            client.eval(SHRINK_SCRIPT, len(group), *[_key(checks[i].counter) for i in group], request_id, granted)
            for group, group_granted in zip(groups, grants)
            if group_granted > granted
        ]
        if shrinks:
            await asyncio.gather(*shrinks)
        return ReserveOutcome(granted)

    async def finish(
        self, counters: tuple[Counter, ...], request_id: str, actual_nanos: int | None, now: float
    ) -> tuple[int, ...]:
        """On a cluster each subject's part is settled by its own script, sent together; a part whose
        script does not run (the process died between) lapses as an unsettled reservation does, and
        reconciliation raises its counters to the recorded cost."""
        client = _async_client()
        actual: int | str = "" if actual_nanos is None else actual_nanos
        groups = _slot_groups(counters)
        answers = await _each(
            [
                client.eval(
                    FINISH_SCRIPT,
                    len(group),
                    *[_key(counters[i]) for i in group],
                    request_id,
                    actual,
                    *[int(counters[i].expires_at) for i in group],
                )
                for group in groups
            ]
        )
        settled = [0] * len(counters)
        for group, answer in zip(groups, answers):
            for index, value in zip(group, answer):
                settled[index] = int(value)
        return tuple(settled)

    def raise_settled_to(self, totals: dict[Counter, int]) -> None:
        calls = []
        for batch in _reconcile_batches(list(totals)):
            argv: list[int | str] = []
            for counter in batch:
                argv += [totals[counter], int(counter.expires_at)]
            calls.append((RAISE_SCRIPT, [_key(counter) for counter in batch], argv))
        _run_pipelined(_sync_client(), calls)

    def adjust_settled(self, deltas: dict[Counter, int]) -> None:
        calls = [
            (ADJUST_SCRIPT, [_key(counter) for counter in batch], [deltas[counter] for counter in batch])
            for batch in _reconcile_batches(list(deltas))
        ]
        _run_pipelined(_sync_client(), calls)

    def snapshot(self, counter: Counter, now: float) -> tuple[int, int]:
        fields = {_text(k): _text(v) for k, v in _sync_client().hgetall(_key(counter)).items()}
        now_ms = now * 1000
        live = sum(
            int(value)
            for name, value in fields.items()
            if name.startswith("r:") and float(fields.get("x:" + name[2:], "0")) > now_ms
        )
        return int(fields.get("settled", 0)), live


def _reconcile_batches(counters: list[Counter]) -> list[list[Counter]]:
    """Counters one reconciliation script takes: chunks on a single Redis, one subject's on a cluster."""
    if not cluster_configured():
        return [counters[start : start + _RECONCILE_CHUNK] for start in range(0, len(counters), _RECONCILE_CHUNK)]
    return [[counters[index] for index in group] for group in _slot_groups(counters)]


def _run_pipelined(client: SyncRedis, calls: Sequence[tuple[str, list[str], Sequence[int | str]]]) -> None:
    """A fleet's reconciliation is thousands of scripts on a cluster (one per subject): they go a
    hundred per round trip, which a cluster pipeline splits by node (through `execute_command`: its
    `eval` method is not the client's)."""
    for start in range(0, len(calls), _PIPELINE_SCRIPTS):
        pipeline = client.pipeline(transaction=False)
        for script, keys, argv in calls[start : start + _PIPELINE_SCRIPTS]:
            pipeline.execute_command("EVAL", script, len(keys), *keys, *argv)
        pipeline.execute()
