"""The circuit breaker's rules, run against the per-process backend and (CI's second pass) Redis,
with an injected clock."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from gateway.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    LocalBreakerBackend,
    LocalDeviceBreakers,
    RedisBreakerBackend,
    RedisDeviceBreakers,
    is_failure_status,
)

CONFIG = BreakerConfig(failure_threshold=5, reset_timeout=30.0, success_threshold=2)  # min_devices 1: the seed's breaker
DEVICE = "1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def stores(request):
    """The upstream's breaker and the devices' breakers, in this process or in Redis."""
    if request.param == "local":
        return LocalBreakerBackend(), LocalDeviceBreakers()
    request.getfixturevalue("redis_required")
    name = f"test-{secrets.token_hex(4)}"
    return RedisBreakerBackend(name=name), RedisDeviceBreakers(CONFIG.reset_timeout, name=f"{name}-device")


@pytest.fixture
def backend(stores):
    return stores[0]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(stores, clock) -> CircuitBreaker:
    backend, devices = stores
    return CircuitBreaker(backend, devices=devices, clock=clock, cache_seconds=0.0, config=CONFIG)


async def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        admission = await breaker.admit(DEVICE)
        await breaker.record(admission, device=DEVICE, success=False)


async def test_opens_after_five_consecutive_failures_and_fails_fast_for_thirty_seconds(breaker, clock):
    await fail(breaker, 4)
    assert (await breaker.snapshot()).state is BreakerState.CLOSED
    await fail(breaker, 1)
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.failures, snapshot.opens) == (BreakerState.OPEN, 5, 1)
    clock.now += 29.5
    refused = await breaker.admit(DEVICE)
    assert (refused.allowed, refused.retry_after) == (False, pytest.approx(0.5))


async def test_a_success_resets_the_consecutive_count(breaker):
    await fail(breaker, 4)
    await breaker.record(await breaker.admit(DEVICE), device=DEVICE, success=True)
    await fail(breaker, 4)
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.failures) == (BreakerState.CLOSED, 4)


async def test_half_open_admits_one_trial_at_a_time_and_closes_after_two_successes(breaker, clock):
    await fail(breaker, 5)
    clock.now += 30.0
    trial = await breaker.admit(DEVICE)
    assert (trial.allowed, trial.trial) == (True, True)
    assert (await breaker.snapshot()).state is BreakerState.HALF_OPEN
    assert (await breaker.admit(DEVICE)).allowed is False
    await breaker.record(trial, device=DEVICE, success=True)
    second = await breaker.admit(DEVICE)
    assert second.trial is True
    await breaker.record(second, device=DEVICE, success=True)
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.failures, snapshot.successes) == (BreakerState.CLOSED, 0, 0)
    assert (await breaker.admit(DEVICE)).allowed is True


async def test_a_failed_trial_opens_the_breaker_again_for_a_full_timeout(breaker, clock):
    await fail(breaker, 5)
    clock.now += 31.0
    trial = await breaker.admit(DEVICE)
    await breaker.record(trial, device=DEVICE, success=False)
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.opens, snapshot.opened_at) == (BreakerState.OPEN, 2, clock.now)
    clock.now += 29.0
    assert (await breaker.admit(DEVICE)).allowed is False


async def test_an_abandoned_trial_lease_expires(breaker, clock):
    await fail(breaker, 5)
    clock.now += 30.0
    assert (await breaker.admit(DEVICE)).trial is True
    clock.now += 29.0
    assert (await breaker.admit(DEVICE)).allowed is False
    clock.now += 1.5
    assert (await breaker.admit(DEVICE)).trial is True


async def test_late_outcomes_of_requests_admitted_while_closed_do_not_move_an_open_breaker(breaker, clock):
    await fail(breaker, 5)
    late = await breaker.backend.record(clock.now, True, False, CONFIG, DEVICE)
    assert late[1].state is BreakerState.OPEN


async def test_reset_closes_at_once_and_keeps_the_count_of_openings(breaker):
    await fail(breaker, 5)
    snapshot = await breaker.reset(actor="user:ops")
    assert (snapshot.state, snapshot.failures, snapshot.opens) == (BreakerState.CLOSED, 0, 1)
    assert (await breaker.admit(DEVICE)).allowed is True


async def test_a_process_trusts_the_state_it_saw_for_the_cache_time(stores, clock):
    backend, devices = stores
    watcher = CircuitBreaker(backend, devices=devices, clock=clock, cache_seconds=1.0, config=CONFIG)
    other = CircuitBreaker(backend, devices=devices, clock=clock, cache_seconds=0.0, config=CONFIG)
    assert (await watcher.admit("2")).allowed is True
    await fail(other, 5)
    assert (await watcher.admit("2")).allowed is True
    clock.now += 1.0
    assert (await watcher.admit("2")).allowed is False


def test_only_server_errors_count_as_failures():
    assert [is_failure_status(status) for status in (200, 400, 401, 404, 413, 429, 500, 502, 529)] == [
        False,
        False,
        False,
        False,
        False,
        False,
        True,
        True,
        True,
    ]


class CountingBackend:
    """The breaker's backend, counting the steps and reads that reach it."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.admits = self.reads = 0

    async def admit(self, now, config):
        self.admits += 1
        return await self.backend.admit(now, config)

    async def record(self, now, success, trial, config, device):
        return await self.backend.record(now, success, trial, config, device)

    async def reset(self, now):
        return await self.backend.reset(now)

    async def read(self):
        self.reads += 1
        await asyncio.sleep(0.01)  # a round trip, during which the rest of the burst arrives
        return await self.backend.read()


async def test_a_burst_finding_a_closed_breaker_stale_reads_it_once(stores, clock):
    backend, devices = stores
    counting = CountingBackend(backend)
    breaker = CircuitBreaker(counting, devices=devices, clock=clock, cache_seconds=1.0, config=CONFIG)
    assert (await breaker.admit(DEVICE)).allowed
    clock.now += 2
    admissions = await asyncio.gather(*(breaker.admit(f"{n}") for n in range(256)))
    assert all(admission.allowed for admission in admissions)
    assert (counting.admits, counting.reads) == (1, 1)


async def test_a_burst_finding_the_breaker_opened_elsewhere_is_refused(stores, clock):
    backend, devices = stores
    counting = CountingBackend(backend)
    breaker = CircuitBreaker(counting, devices=devices, clock=clock, cache_seconds=1.0, config=CONFIG)
    assert (await breaker.admit(DEVICE)).allowed
    elsewhere = CircuitBreaker(backend, devices=devices, clock=clock, cache_seconds=0.0, config=CONFIG)
    await fail(elsewhere, 5)
    clock.now += 2
    admissions = await asyncio.gather(*(breaker.admit(f"{n}") for n in range(8)))
    assert not any(admission.allowed for admission in admissions)
    assert counting.reads == 1
