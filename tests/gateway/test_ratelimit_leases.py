"""Leases on the shared limit (`proxyproject.lib.ratelimit.leases`): fewer scripts for a busy key,
and the same limit, the same `remaining` and the same refusals as one script per request. On real
Redis (CI's second and third passes); time comes from an injected clock, never from sleeping."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from proxyproject.lib.ratelimit import LeasingRateLimiter, LimitCheck, RedisRateLimiter
from proxyproject.lib.ratelimit.leases import MAX_SHARE
from proxyproject.lib.redis import get_sync_redis, redis_key, slot_tag

pytestmark = pytest.mark.redis

LEASE_MS = 200
WINDOW_MS = 60_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 60.0 * 20_000  # the start of a 60 s window

    def __call__(self) -> float:
        return self.now


class CountingRedisLimiter(RedisRateLimiter):
    """Counts the scripts sent, by kind."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.scripts = {"hit": 0, "lease": 0}

    async def hit(self, checks):
        self.scripts["hit"] += 1
        return await super().hit(checks)

    async def lease(self, check, wanted, returned_bucket, returned):
        self.scripts["lease"] += 1
        return await super().lease(check, wanted, returned_bucket, returned)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def shared(redis_required, clock) -> CountingRedisLimiter:
    return CountingRedisLimiter(clock)


def leasing(shared: RedisRateLimiter, clock: FakeClock, lease_ms: int = LEASE_MS) -> LeasingRateLimiter:
    return LeasingRateLimiter(shared, clock=clock, lease_ms=lease_ms)


def new_key() -> str:
    return f"test:{uuid.uuid4().hex}"


def counted(key: str, clock: FakeClock) -> int:
    """What Redis holds in the current window bucket of `key`."""
    raw = get_sync_redis().hget(redis_key("rl", key), str(int(clock.now * 1000) // WINDOW_MS))
    return int(raw or 0)


async def test_a_busy_key_sends_one_script_per_lease_and_remaining_counts_down_exactly(shared, clock):
    limiter, key, limit = leasing(shared, clock), new_key(), 64_000
    decisions = [(await limiter.hit([LimitCheck(key, limit, WINDOW_MS)]))[0] for _ in range(1000)]
    assert all(decision.allowed for decision in decisions)
    assert [decision.remaining for decision in decisions] == [limit - n for n in range(1, 1001)]
    assert shared.scripts == {"hit": 0, "lease": 10}  # leases of 1, 2, 4, ... 512 requests
    assert counted(key, clock) == 1023


async def test_leases_admit_exactly_the_limit_between_two_processes(shared, clock):
    limit, key = 640, new_key()
    first, second = leasing(shared, clock), leasing(RedisRateLimiter(clock=clock), clock)
    results = await asyncio.gather(
        *(limiter.hit([LimitCheck(key, limit, WINDOW_MS)]) for _ in range(500) for limiter in (first, second))
    )
    allowed = [decision for [decision] in results if decision.allowed]
    assert len(allowed) == limit
    assert counted(key, clock) == limit
    refused = [decision for [decision] in results if not decision.allowed]
    assert all(decision.remaining == 0 and 0 < decision.retry_after <= 60 for decision in refused)


async def test_a_lapsed_lease_hands_back_what_it_did_not_use(shared, clock):
    limiter, key, limit = leasing(shared, clock), new_key(), 64_000
    for _ in range(100):
        await limiter.hit([LimitCheck(key, limit, WINDOW_MS)])
    assert counted(key, clock) == 127  # leases of 1 + 2 + ... + 64; 27 not used
    clock.now += LEASE_MS / 1000
    [decision] = await limiter.hit([LimitCheck(key, limit, WINDOW_MS)])
    assert decision.remaining == limit - 101
    assert counted(key, clock) == 100 + 32  # the 27 handed back; the next lease halved


async def test_a_lease_ends_with_the_window_bucket_it_was_counted_in(shared, clock):
    limiter, key, limit = leasing(shared, clock), new_key(), 64_000
    clock.now += WINDOW_MS / 1000 - 0.05  # 50 ms before the next bucket starts
    for _ in range(4):
        await limiter.hit([LimitCheck(key, limit, WINDOW_MS)])  # leases of 1, 2 and 4: 3 left
    clock.now += 0.06  # the lease time has not passed, but its bucket has
    before = shared.scripts["lease"]
    await limiter.hit([LimitCheck(key, limit, WINDOW_MS)])
    assert shared.scripts["lease"] == before + 1
    assert counted(key, clock) == 2  # a lease of 2 (halved), counted in the new bucket


async def test_concurrent_requests_share_each_renewal(shared, clock):
    limiter, key = leasing(shared, clock), new_key()
    results = await asyncio.gather(*(limiter.hit([LimitCheck(key, 64_000, WINDOW_MS)]) for _ in range(64)))
    assert all(decision.allowed for [decision] in results)
    assert shared.scripts["lease"] == 7  # 1 + 2 + 4 + ... + 64 covers 64 waiters
    assert sorted(decision.remaining for [decision] in results) == [64_000 - n for n in range(64, 0, -1)]


@pytest.mark.parametrize("limit", [1, 100, 2 * MAX_SHARE - 1])
async def test_a_limit_too_small_to_share_gets_one_exact_script_per_request(shared, clock, limit):
    limiter, key = leasing(shared, clock), new_key()
    decisions = [(await limiter.hit([LimitCheck(key, limit, WINDOW_MS)]))[0] for _ in range(limit + 1)]
    assert [decision.allowed for decision in decisions] == [True] * limit + [False]
    assert shared.scripts == {"hit": limit + 1, "lease": 0}


async def test_a_decision_with_a_tokens_check_is_not_leased(shared, clock):
    limiter, device = leasing(shared, clock), slot_tag("test", uuid.uuid4().hex)  # one slot on a cluster
    checks = [LimitCheck(f"{device}:requests", 64_000, WINDOW_MS), LimitCheck(f"{device}:tokens", 100_000, WINDOW_MS, cost=500)]
    for _ in range(3):
        assert all(decision.allowed for decision in await limiter.hit(checks))
    assert shared.scripts == {"hit": 3, "lease": 0}


async def test_lease_time_zero_is_one_exact_script_per_request(shared, clock):
    limiter, key = leasing(shared, clock, lease_ms=0), new_key()
    for _ in range(5):
        await limiter.hit([LimitCheck(key, 64_000, WINDOW_MS)])
    assert shared.scripts == {"hit": 5, "lease": 0}


async def test_a_refused_lease_answers_as_the_exact_limiter_does(shared, clock):
    limit, key, exact_key = 128, new_key(), new_key()
    limiter, exact = leasing(shared, clock), RedisRateLimiter(clock=clock)
    for _ in range(limit):
        assert (await limiter.hit([LimitCheck(key, limit, WINDOW_MS)]))[0].allowed
        assert (await exact.hit([LimitCheck(exact_key, limit, WINDOW_MS)]))[0].allowed
    clock.now += 7.5
    [leased] = await limiter.hit([LimitCheck(key, limit, WINDOW_MS)])
    [answer] = await exact.hit([LimitCheck(exact_key, limit, WINDOW_MS)])
    assert not leased.allowed
    assert leased == answer


async def test_lapsed_leases_are_dropped_once_many_keys_have_one(shared, clock, monkeypatch):
    monkeypatch.setattr("proxyproject.lib.ratelimit.leases.KEPT_LEASES", 8)
    limiter = leasing(shared, clock)
    keys = [new_key() for _ in range(8)]
    for key in keys:
        await limiter.hit([LimitCheck(key, 64_000, WINDOW_MS)])
    clock.now += LEASE_MS / 1000
    await limiter.hit([LimitCheck(keys[0], 64_000, WINDOW_MS)])  # renewed, not a new key: nothing dropped
    await limiter.hit([LimitCheck(new_key(), 64_000, WINDOW_MS)])
    assert len(limiter._leases) == 2  # the renewed lease and the new key's


async def test_a_changed_limit_hands_back_the_room_leased_under_the_old_one(shared, clock):
    limiter, key = leasing(shared, clock), new_key()
    for _ in range(4):
        await limiter.hit([LimitCheck(key, 64_000, WINDOW_MS)])  # leases of 1, 2 and 4: 3 left
    [decision] = await limiter.hit([LimitCheck(key, 32_000, WINDOW_MS)])
    assert decision.remaining == 32_000 - 5
    assert counted(key, clock) == 4 + 2  # the 3 handed back; the next lease halved
