"""Contract tests: both rate-limiter backends hold the same sliding-window rules (Redis only in CI's
second pass). Time comes from an injected clock, never from sleeping."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from proxyproject.lib.ratelimit import LimitCheck, LocalRateLimiter, RedisRateLimiter
from proxyproject.lib.redis import slot_tag


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def limiter_and_clock(request):
    clock = FakeClock()
    if request.param == "redis":
        request.getfixturevalue("redis_required")
        return RedisRateLimiter(clock=clock), clock
    return LocalRateLimiter(clock=clock), clock


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_the_101st_request_in_the_window_is_refused(limiter_and_clock):
    limiter, _ = limiter_and_clock
    k = key()
    decisions = [(await limiter.hit([LimitCheck(k, 100, 60000)]))[0] for _ in range(101)]
    assert [d.allowed for d in decisions] == [True] * 100 + [False]
    assert decisions[0].remaining == 99
    assert decisions[99].remaining == 0
    assert decisions[100].limit == 100
    assert 0 < decisions[100].retry_after <= 60


async def test_previous_window_weighs_in_then_decays(limiter_and_clock):
    limiter, clock = limiter_and_clock
    k = key()
    clock.now = 60.0 * 20_000  # the start of a 60 s window
    for _ in range(10):
        assert (await limiter.hit([LimitCheck(k, 10, 60000)]))[0].allowed
    clock.now += 60  # next window starts: previous = 10 with full weight
    refused = (await limiter.hit([LimitCheck(k, 10, 60000)]))[0]
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6.0, abs=0.01)  # weight must fall by 1/10 of the window
    clock.now += 30  # half way: estimate = 10 * 0.5 = 5
    allowed = [(await limiter.hit([LimitCheck(k, 10, 60000)]))[0].allowed for _ in range(6)]
    assert allowed == [True] * 5 + [False]


async def test_checks_are_all_or_nothing(limiter_and_clock):
    limiter, _ = limiter_and_clock
    device = slot_tag("test", uuid.uuid4().hex)  # checks decided together share a slot on a cluster
    requests_key, tokens_key = f"{device}:requests", f"{device}:tokens"
    await limiter.add(tokens_key, 60000, 500)
    decisions = await limiter.hit([LimitCheck(requests_key, 5, 60000), LimitCheck(tokens_key, 500, 60000, cost=0)])
    assert [d.allowed for d in decisions] == [True, False]
    # The refused tokens check means the requests check was not counted either.
    again = await limiter.hit([LimitCheck(requests_key, 5, 60000)])
    assert again[0].remaining == 4


async def test_zero_cost_check_passes_until_the_limit_is_reached(limiter_and_clock):
    limiter, _ = limiter_and_clock
    k = key()
    await limiter.add(k, 60000, 499)
    first = (await limiter.hit([LimitCheck(k, 500, 60000, cost=0)]))[0]
    assert first.allowed and first.remaining == 1
    await limiter.add(k, 60000, 1)
    assert not (await limiter.hit([LimitCheck(k, 500, 60000, cost=0)]))[0].allowed


async def test_concurrent_hits_never_exceed_the_limit(limiter_and_clock):
    limiter, _ = limiter_and_clock
    k = key()
    results = await asyncio.gather(*(limiter.hit([LimitCheck(k, 25, 60000)]) for _ in range(60)))
    assert sum(r[0].allowed for r in results) == 25


async def test_redis_limit_is_shared_between_limiter_instances(redis_required):
    clock = FakeClock()
    first, second = RedisRateLimiter(clock=clock), RedisRateLimiter(clock=clock)
    k = key()
    outcomes = []
    for i in range(8):
        limiter = first if i % 2 == 0 else second
        outcomes.append((await limiter.hit([LimitCheck(k, 6, 60000)]))[0].allowed)
    assert outcomes == [True] * 6 + [False, False]
