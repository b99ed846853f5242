"""Attack 5 of issue 13: tokens per minute were counted only after requests finished, so 20
concurrent streams against a 200-token limit all passed. Each request now reserves its bound (the
spend estimator's prompt tokens + max_tokens, clamped to the limit) at admission, atomically with
the check, and settles to its real count when it ends. The bound: the tokens admitted in a window never exceed the limit, so
at most floor(limit / bound) requests of that bound are in flight at once, on one gateway or many."""

from __future__ import annotations

import asyncio

import httpx
import orjson

from proxyproject.lib import ratelimit
from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool  # noqa: F401  (the gateway tests' fixtures)
from tests.support import enroll, enroll_device
from tests.usage.claude_code import claude_code_body
from usage.spend_estimate import estimate_prompt_tokens

LIMIT = 200
SLOW_STREAM = orjson.dumps(
    {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi FAKE_FAULT:slow-first-byte=1500"}],
    }
)


def bound_of(body: bytes, limit: int) -> int:
    parsed = orjson.loads(body)
    return min(estimate_prompt_tokens(parsed, body) + parsed["max_tokens"], limit)


BOUND = bound_of(SLOW_STREAM, LIMIT)
PLAIN = orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello"}]})


def test_the_attack_stream_bound_admits_one_stream_at_a_time():
    assert LIMIT // BOUND == 1, BOUND  # the attack's numbers: one stream in flight at a time


async def test_twenty_concurrent_streams_against_a_200_token_limit_do_not_all_pass(fake_upstream, transactional_db):
    token = await enroll_device(tokens_per_minute=LIMIT)
    answers = await asyncio.gather(
        *(call_gateway("POST", "/v1/messages", headers=bearer(token), body=SLOW_STREAM) for _ in range(20))
    )
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [200] * (LIMIT // BOUND) + [429] * (20 - LIMIT // BOUND)
    refused = next(answer for answer in answers if answer.status == 429)
    assert orjson.loads(refused.body)["error"]["details"]["error_code"] == "device_rate_limited"
    assert len([seen for seen in fake_upstream.requests if seen.path == "/v1/messages"]) == LIMIT // BOUND


async def test_a_finished_request_gives_back_what_it_reserved_beyond_its_real_count(fake_upstream, transactional_db, monkeypatch):
    """A fixed clock keeps both requests in one window, so `remaining` is exact."""
    monkeypatch.setattr(ratelimit, "_local_limiter", ratelimit.LocalRateLimiter(clock=lambda: 1_000_020.0))
    monkeypatch.setattr(
        ratelimit, "_redis_limiter", ratelimit.LeasingRateLimiter(ratelimit.RedisRateLimiter(clock=lambda: 1_000_020.0))
    )
    token = await enroll_device(tokens_per_minute=1000)
    first = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=PLAIN)
    usage = orjson.loads(first.body)["usage"]
    used = usage["input_tokens"] + usage["output_tokens"] + usage["cache_creation_input_tokens"]
    assert first.headers["anthropic-ratelimit-tokens-remaining"] == str(1000 - bound_of(PLAIN, 1000))
    second = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=PLAIN)
    assert second.headers["anthropic-ratelimit-tokens-remaining"] == str(1000 - used - bound_of(PLAIN, 1000))


async def test_a_claude_code_request_reserves_the_estimators_prompt_tokens_not_a_token_a_byte(
    fake_upstream, transactional_db, monkeypatch
):
    monkeypatch.setattr(ratelimit, "_local_limiter", ratelimit.LocalRateLimiter(clock=lambda: 1_000_020.0))
    monkeypatch.setattr(
        ratelimit, "_redis_limiter", ratelimit.LeasingRateLimiter(ratelimit.RedisRateLimiter(clock=lambda: 1_000_020.0))
    )
    body = claude_code_body(100_000, stream=False)
    estimated = estimate_prompt_tokens(orjson.loads(body), body)
    assert estimated < len(body) / 2.5  # far below a token a byte
    token = await enroll_device(tokens_per_minute=1_000_000)
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body)
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["anthropic-ratelimit-tokens-remaining"] == str(1_000_000 - estimated - 64_000)


async def test_a_request_larger_than_the_whole_limit_still_runs_alone(fake_upstream, transactional_db):
    token = await enroll_device(tokens_per_minute=50)
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=PLAIN)
    assert answer.status == 200


def test_twenty_concurrent_streams_through_two_gateways_share_one_token_budget(two_gateways):
    fake, first, second = two_gateways
    token = enroll(first, tokens_per_minute=LIMIT)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json", "anthropic-version": "2023-06-01"}

    async def send_all() -> list[int]:
        async with httpx.AsyncClient(timeout=20) as client:
            answers = await asyncio.gather(
                *(
                    client.post((first if index % 2 else second).url + "/v1/messages", content=SLOW_STREAM, headers=headers)
                    for index in range(20)
                )
            )
        return sorted(answer.status_code for answer in answers)

    assert asyncio.run(send_all()) == [200] * (LIMIT // BOUND) + [429] * (20 - LIMIT // BOUND)
    assert len([seen for seen in fake.requests if seen.path == "/v1/messages"]) == LIMIT // BOUND
