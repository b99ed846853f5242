"""Attack 6 of issue 13, breaker: one device repeating a request the upstream fails (the fake's
`FAKE_FAULT:` prompt, any header being dropped now) must not open the circuit breaker for every
device, while a real upstream outage still opens it within the seed's 5 failures.

The rules run against both backends with an injected clock (Redis in CI's second pass), then
through the gateway: in this process, and through two gateway processes sharing Redis."""

from __future__ import annotations

import secrets

import httpx
import orjson
import pytest

from fake_anthropic import FakeAnthropic
from gateway.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    LocalBreakerBackend,
    LocalDeviceBreakers,
    RedisBreakerBackend,
    RedisDeviceBreakers,
    get_circuit_breaker,
)
from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool  # noqa: F401  (the gateway tests' fixtures)
from tests.servers import free_port, gateway_process
from tests.support import MASTER_KEY, enroll, enroll_device

CONFIG = BreakerConfig(failure_threshold=5, reset_timeout=30.0, success_threshold=2, min_devices=2)  # the defaults
ATTACKER, VICTIM = "101", "202"


def failing_body(fault: str = "500") -> bytes:
    """A request the fake answers with `fault`, whatever headers cross: the fault rides in the prompt."""
    message = {"role": "user", "content": f"Say hello FAKE_FAULT:{fault}"}
    return orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [message]})


HEALTHY_BODY = orjson.dumps(
    {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello"}]}
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def stores(request):
    if request.param == "local":
        return LocalBreakerBackend(), LocalDeviceBreakers()
    request.getfixturevalue("redis_required")
    name = f"test-{secrets.token_hex(4)}"
    return RedisBreakerBackend(name=name), RedisDeviceBreakers(CONFIG.reset_timeout, name=f"{name}-device")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(stores, clock) -> CircuitBreaker:
    backend, devices = stores
    return CircuitBreaker(backend, devices=devices, clock=clock, cache_seconds=0.0, config=CONFIG)


async def attempt(breaker: CircuitBreaker, device: str, *, success: bool) -> bool:
    """One request of `device`: whether it was let through (its outcome is then recorded)."""
    admission = await breaker.admit(device)
    if admission.allowed:
        await breaker.record(admission, device=device, success=success)
    return admission.allowed


async def test_one_device_repeating_a_failing_request_cannot_open_the_breaker_for_others(breaker):
    let_through = [await attempt(breaker, ATTACKER, success=False) for _ in range(20)]
    assert let_through == [True] * 5 + [False] * 15
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.failures, snapshot.devices) == (BreakerState.CLOSED, 5, (ATTACKER,))
    assert (await breaker.admit(VICTIM)).allowed is True


async def test_an_upstream_outage_seen_by_several_devices_opens_the_breaker_at_the_fifth_failure(breaker):
    for failure, device in enumerate(["1", "2", "1", "2", "1"], start=1):
        assert await attempt(breaker, device, success=False) is True
        assert (await breaker.snapshot()).state is (BreakerState.OPEN if failure == 5 else BreakerState.CLOSED)
    refused = await breaker.admit("3")
    assert (refused.allowed, refused.retry_after) == (False, 30.0)


async def test_an_outage_with_one_active_device_fails_it_fast_after_five_failures_and_the_next_device_opens_it(breaker, clock):
    assert [await attempt(breaker, "1", success=False) for _ in range(6)] == [True] * 5 + [False]
    assert (await breaker.snapshot()).state is BreakerState.CLOSED
    assert await attempt(breaker, "2", success=False) is True
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.failures, snapshot.devices) == (BreakerState.OPEN, 6, ("1", "2"))
    clock.now += 10
    assert (await breaker.admit("3")).allowed is False


async def test_one_device_failing_every_half_open_trial_cannot_keep_the_breaker_open(breaker, clock):
    for device in ["1", "2", "1", "2", "1"]:
        await attempt(breaker, device, success=False)
    clock.now += 30.0
    assert await attempt(breaker, ATTACKER, success=False) is True
    assert (await breaker.snapshot()).state is BreakerState.HALF_OPEN
    assert [await attempt(breaker, device, success=True) for device in ("3", "4")] == [True, True]
    assert (await breaker.snapshot()).state is BreakerState.CLOSED


async def test_failed_trials_of_two_devices_open_it_again(breaker, clock):
    for device in ["1", "2", "1", "2", "1"]:
        await attempt(breaker, device, success=False)
    clock.now += 30.0
    assert [await attempt(breaker, device, success=False) for device in ("3", "4")] == [True, True]
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.opens, snapshot.opened_at) == (BreakerState.OPEN, 2, clock.now)


async def test_a_failure_admitted_by_a_process_that_did_not_know_the_device_was_cut_off_counts_for_nothing(stores, clock):
    backend, devices = stores
    first, second = (CircuitBreaker(backend, devices=devices, clock=clock, cache_seconds=0.0, config=CONFIG) for _ in range(2))
    assert [await attempt(first, ATTACKER, success=False) for _ in range(5)] == [True] * 5
    assert await attempt(second, ATTACKER, success=False) is True  # `second` had never seen it fail
    assert ((await first.snapshot()).failures, await attempt(second, ATTACKER, success=False)) == (5, False)


async def test_one_device_repeating_a_failing_request_through_the_gateway_cannot_open_the_breaker_for_others(
    fake_upstream, transactional_db
):
    attacker, victim = await enroll_device(), await enroll_device()
    statuses = [
        (await call_gateway("POST", "/v1/messages", headers=bearer(attacker), body=failing_body())).status for _ in range(8)
    ]
    assert statuses == [500] * 5 + [503] * 3
    assert len(fake_upstream.requests) == 5
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(victim), body=HEALTHY_BODY)
    assert answer.status == 200
    assert (await get_circuit_breaker().snapshot()).state is BreakerState.CLOSED


async def test_an_unreachable_upstream_opens_the_breaker_within_five_failures(settings, transactional_db):
    settings.ANTHROPIC_BASE_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens: every connection is refused
    settings.ANTHROPIC_API_KEY = MASTER_KEY
    tokens = [await enroll_device() for _ in range(3)]
    statuses = [
        (await call_gateway("POST", "/v1/messages", headers=bearer(tokens[index % 3]), body=HEALTHY_BODY)).status
        for index in range(5)
    ]
    assert statuses == [502] * 5
    refused = await call_gateway("POST", "/v1/messages", headers=bearer(await enroll_device()), body=HEALTHY_BODY)
    assert (refused.status, orjson.loads(refused.body)["error"]["details"]["error_code"]) == (503, "circuit_open")


@pytest.fixture
def two_gateways_reading_redis_each_time(redis_required, transactional_db, settings):
    """Two gateway processes on one Redis that never trust a cached breaker state, so the
    statuses below are exact."""
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        env = {
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
            "ANTHROPIC_BASE_URL": fake.base_url,
            "ANTHROPIC_API_KEY": MASTER_KEY,
            "CIRCUIT_BREAKER_CACHE_SECONDS": "0",
        }
        first = gateway_process(**env).start()
        try:
            second = gateway_process(**env).start()
        except Exception:
            first.stop()
            raise
        yield fake, first, second
        first.stop()
        second.stop()


def post(server, token: str, body: bytes) -> int:
    return httpx.post(
        server.url + "/v1/messages",
        content=body,
        timeout=10,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    ).status_code


def test_one_device_through_two_gateways_cannot_open_the_shared_breaker(two_gateways_reading_redis_each_time):
    fake, first, second = two_gateways_reading_redis_each_time
    attacker, victim = enroll(first), enroll(first)
    statuses = [post(server, attacker, failing_body("529")) for server in (first, second) * 5]
    assert statuses == [529] * 5 + [503] * 5
    assert len(fake.requests) == 5
    assert [post(server, victim, HEALTHY_BODY) for server in (first, second)] == [200, 200]


def test_an_outage_seen_by_two_devices_through_two_gateways_opens_the_shared_breaker(two_gateways_reading_redis_each_time):
    fake, first, second = two_gateways_reading_redis_each_time
    one, two, three = enroll(first), enroll(first), enroll(first)
    statuses = [post(server, token, failing_body("529")) for server, token in [(first, one), (second, two)] * 2 + [(first, one)]]
    assert statuses == [529] * 5
    assert [post(server, three, HEALTHY_BODY) for server in (second, first)] == [503, 503]
    assert len(fake.requests) == 5
