"""Redis configured but not answering: the gateway cannot check the shared limits, spend caps or
breaker, so it refuses with a retryable 503 in Anthropic's envelope and sends nothing upstream.

Each test breaks one real connection (a port where nothing listens, or a listener that never
answers), so the same tests run on the embedded defaults and beside CI's real Redis."""

from __future__ import annotations

import logging
import socket
import weakref
from collections.abc import Iterator
from decimal import Decimal

import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

import proxyproject.asgi  # noqa: F401  (set up Django's logging now, not under caplog's handler)
import proxyproject.lib.redis
from gateway import breaker as breaker_module
from gateway.breaker import CircuitBreaker, RedisBreakerBackend, RedisDeviceBreakers
from gateway.breaker import redis as breaker_redis
from tests.gateway.conftest import Answer, bearer, call_gateway
from tests.servers import free_port
from tests.support import MESSAGE_BODY, enroll_device
from usage import accounting, spend
from usage.spend import redis as spend_redis
from usage.spend.redis import RedisSpendBackend

EXPECTED_MESSAGE = "The gateway's shared state (Redis) is unreachable, so limits and spend caps cannot be checked. Retry shortly."


@pytest.fixture
def patches(fresh_breaker_and_pool) -> Iterator[pytest.MonkeyPatch]:
    """Undone before the autouse fixture resets the shared breaker, which needs the real Redis."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
def silent_redis_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def unreachable_client(port: int) -> aioredis.Redis:
    """Short timeouts and no retries, so a hung server fails the call in a fraction of a second."""
    return aioredis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )


def assert_shared_state_refusal(answer: Answer) -> None:
    assert answer.status == 503
    assert orjson.loads(answer.body) == {
        "type": "error",
        "error": {"type": "api_error", "message": EXPECTED_MESSAGE, "details": {"error_code": "shared_state_unavailable"}},
        "request_id": answer.headers["request-id"],
    }
    assert answer.headers["retry-after"] == "5"
    assert "x-should-retry" not in answer.headers


def refusal_logs(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [
        record.event_fields
        for record in caplog.records
        if record.getMessage() == "Shared state unavailable; request refused" and record.levelno == logging.WARNING
    ]


def assert_refused_before_upstream(
    answer: Answer, fake_upstream, caplog: pytest.LogCaptureFixture, *, stage: str, request_id: str | None, error: str
) -> None:
    assert_shared_state_refusal(answer)
    assert fake_upstream.requests == []
    [logged] = refusal_logs(caplog)
    assert (logged["stage"], logged["requestId"]) == (stage, request_id)
    assert logged["error"].startswith(error)


async def test_redis_refusing_connections_gets_a_retryable_503_and_nothing_goes_upstream(
    fake_upstream, token, settings, patches, caplog
):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    patches.setattr(proxyproject.lib.redis, "_clients", weakref.WeakKeyDictionary())  # not this loop's client of the real Redis
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    for client in list(proxyproject.lib.redis._clients.values()):
        await client.aclose()
    assert_refused_before_upstream(
        answer, fake_upstream, caplog, stage="rate_limit", request_id=answer.headers["request-id"], error="ConnectionError: "
    )


async def test_a_spend_reservation_timing_out_is_refused_before_going_upstream(
    fake_upstream, transactional_db, silent_redis_port, patches, caplog
):
    token = await enroll_device(daily_spend_cap_usd=Decimal("10.00"))
    client = unreachable_client(silent_redis_port)
    patches.setattr(spend._ledger, "backend", RedisSpendBackend())
    patches.setattr(spend_redis, "get_async_redis", lambda: client)
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    await client.aclose()
    assert_refused_before_upstream(
        answer, fake_upstream, caplog, stage="spend_cap", request_id=answer.headers["request-id"], error="TimeoutError: "
    )


async def test_a_breaker_that_cannot_reach_redis_refuses_before_going_upstream(fake_upstream, token, patches, caplog):
    client = unreachable_client(free_port())
    breaker = CircuitBreaker(RedisBreakerBackend(), devices=RedisDeviceBreakers(30.0), cache_seconds=0)
    patches.setitem(breaker_module._breakers, "local", breaker)
    patches.setitem(breaker_module._breakers, "redis", breaker)
    patches.setattr(breaker_redis, "get_async_redis", lambda: client)
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    await client.aclose()
    assert_refused_before_upstream(
        answer, fake_upstream, caplog, stage="circuit_breaker", request_id=None, error="ConnectionError: "
    )


async def test_redis_failing_after_the_response_still_records_the_usage(fake_upstream, transactional_db, patches, caplog):
    """The answer is out; a bookkeeping step that fails must neither fail it nor skip the others."""
    token = await enroll_device(daily_spend_cap_usd=Decimal("10.00"))
    submitted = []

    async def redis_gone(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("Connection reset by peer")

    patches.setattr(accounting, "settle_spend", redis_gone)
    patches.setattr(breaker_module.CircuitBreaker, "record", redis_gone)
    patches.setattr(accounting, "submit_usage", submitted.append)
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    assert answer.status == 200
    [event] = submitted
    assert (event.request_id, event.status) == (answer.headers["x-gateway-request-id"], 200)
    assert event.output_tokens == orjson.loads(answer.body)["usage"]["output_tokens"] > 0
    failed = [record.event_fields["step"] for record in caplog.records if record.getMessage() == "Bookkeeping failed"]
    assert failed == ["circuit breaker", "usage and spend"]


async def test_a_redis_cluster_with_no_node_answering_gets_a_retryable_503_and_nothing_goes_upstream(
    fake_upstream, token, settings, patches, caplog
):
    """redis-py's cluster client reports a cluster it cannot reach at all (no node to learn the slot map
    from) with an exception that is not a RedisError."""
    settings.REDIS_URL = f"redis+cluster://127.0.0.1:{free_port()}/0"
    patches.setattr(proxyproject.lib.redis, "_clients", weakref.WeakKeyDictionary())
    patches.setattr(proxyproject.lib.redis, "_sync_client", None)
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    for client in list(proxyproject.lib.redis._clients.values()):
        await client.aclose()
    assert_refused_before_upstream(
        answer, fake_upstream, caplog, stage="rate_limit", request_id=answer.headers["request-id"], error="RedisCluster"
    )
