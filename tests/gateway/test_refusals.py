"""The gateway's own refusals: each decided before any byte goes upstream, each in Anthropic's
envelope with the error code and headers that tell a client whether to retry."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
import pytest
from asgiref.sync import sync_to_async

from tests.gateway.conftest import bearer, call_gateway

# `redis`: rate limits and spend caps in Redis when REDIS_URL is set, so CI runs these again on a Redis Cluster.
from tests.support import MESSAGE_BODY, enroll_device

pytestmark = pytest.mark.redis


def error_of(answer) -> tuple[int, str, str]:
    error = orjson.loads(answer.body)["error"]
    return answer.status, error["type"], error["details"]["error_code"]


async def test_missing_or_forged_credentials_get_401_without_retry(fake_upstream, transactional_db):
    missing = await call_gateway("POST", "/v1/messages", body=MESSAGE_BODY)
    forged = await call_gateway("POST", "/v1/messages", headers={"x-api-key": "not-a-token"}, body=MESSAGE_BODY)
    for answer in (missing, forged):
        assert error_of(answer)[:2] == (401, "authentication_error")
        assert answer.headers["x-should-retry"] == "false"
    assert fake_upstream.requests == []


async def test_body_over_the_limit_is_refused_by_its_declared_length(fake_upstream, token, settings):
    settings.MAX_REQUEST_BODY_BYTES = 2048
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token, **{"content-length": "4096"}), body=b"x" * 10)
    assert error_of(answer) == (413, "request_too_large", "request_too_large")
    assert fake_upstream.requests == []


async def test_body_over_the_limit_is_refused_while_reading_a_chunked_upload(fake_upstream, token, settings):
    settings.MAX_REQUEST_BODY_BYTES = 2048
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=[b"x" * 1500, b"x" * 1500, b"x" * 1500])
    assert error_of(answer) == (413, "request_too_large", "request_too_large")
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/v1/messages",
            b'{"model": "claude-sonnet-4-5", "max_tokens": 5,',
            "There was an error parsing the body of your request. Please check that it is valid JSON.",
        ),
        ("/v1/messages/count_tokens", b"[1, 2]", "body: Input should be a valid dictionary"),
        (
            "/v1/messages/batches",
            b"\xff\xfe",
            "There was an error parsing the body of your request. Please check that it is valid JSON.",
        ),
        ("/v1/messages", b'{"max_tokens": 5, "messages": []}', "model: Field required"),
    ],
)
async def test_unreadable_json_is_a_400_that_never_reaches_upstream(fake_upstream, token, path, body, message):
    answer = await call_gateway("POST", path, headers=bearer(token), body=body)
    assert error_of(answer) == (400, "invalid_request_error", "invalid_request")
    assert orjson.loads(answer.body)["error"]["message"] == message
    assert fake_upstream.requests == []


async def test_a_model_outside_the_devices_patterns_is_forbidden(fake_upstream, transactional_db):
    token = await enroll_device(allowed_models="claude-haiku-*, claude-sonnet-4-5*")
    allowed = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    refused = await call_gateway(
        "POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY.replace(b"claude-sonnet-4-5", b"claude-opus-4-8")
    )
    batch = orjson.dumps(
        {
            "requests": [
                {"custom_id": "a", "params": {"model": "claude-haiku-4-5"}},
                {"custom_id": "b", "params": {"model": "claude-opus-4-8"}},
            ]
        }
    )
    refused_batch = await call_gateway("POST", "/v1/messages/batches", headers=bearer(token), body=batch)
    assert allowed.status == 200
    assert error_of(refused) == error_of(refused_batch) == (403, "permission_error", "model_not_allowed")
    assert len(fake_upstream.requests) == 1


async def test_requests_over_the_window_get_429_with_retry_after(fake_upstream, transactional_db):
    token = await enroll_device(requests_per_window=2, window_ms=60_000)
    answers = [await call_gateway("GET", "/v1/models", headers=bearer(token)) for _ in range(3)]
    assert [answer.status for answer in answers] == [200, 200, 429]
    assert error_of(answers[2]) == (429, "rate_limit_error", "device_rate_limited")
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60
    assert answers[2].headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert len(fake_upstream.requests) == 2


async def test_tokens_per_minute_count_what_the_upstream_reported(fake_upstream, transactional_db):
    token = await enroll_device(tokens_per_minute=1000)
    usage = bearer(token, **{"x-fake-usage": '{"input_tokens": 600, "output_tokens": 450}'})
    first = await call_gateway("POST", "/v1/messages", headers=usage, body=MESSAGE_BODY)
    second = await call_gateway("POST", "/v1/messages", headers=usage, body=MESSAGE_BODY)
    assert first.status == 200 and first.headers["anthropic-ratelimit-tokens-limit"] == "1000"
    assert error_of(second) == (429, "rate_limit_error", "device_rate_limited")
    assert "tokens per minute" in orjson.loads(second.body)["error"]["message"]
    assert len(fake_upstream.requests) == 1


async def test_upstream_errors_pass_through_unchanged(fake_upstream, token):
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token, **{"x-fake-fault": "429"}), body=MESSAGE_BODY)
    [seen] = fake_upstream.requests
    assert (answer.status, answer.headers["retry-after"], answer.headers["request-id"]) == (429, "1", seen.request_id)
    assert orjson.loads(answer.body)["error"]["type"] == "rate_limit_error"
    assert "details" not in orjson.loads(answer.body)["error"]


def _price_sonnet() -> None:
    from usage.models import ModelPrice
    from usage.pricing import invalidate_price_table

    ModelPrice.objects.update_or_create(
        model_pattern="claude-sonnet-4-5*",
        speed="standard",
        prompt_tokens_above=0,
        effective_from=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        defaults={
            "input_per_mtok": Decimal(3),
            "output_per_mtok": Decimal(15),
            "cache_write_5m_per_mtok": Decimal("3.75"),
            "cache_write_1h_per_mtok": Decimal(6),
            "cache_read_per_mtok": Decimal("0.30"),
        },
    )
    invalidate_price_table()


async def test_a_request_that_could_pass_the_spend_cap_gets_429_that_clients_must_not_retry(fake_upstream, transactional_db):
    await sync_to_async(_price_sonnet)()
    token = await enroll_device(daily_spend_cap_usd=Decimal("0.01"))
    cheap = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    dear = await call_gateway(
        "POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY.replace(b'"max_tokens":64', b'"max_tokens":4000')
    )
    assert cheap.status == 200
    assert error_of(dear) == (429, "rate_limit_error", "spend_cap_reached")
    assert dear.headers["x-should-retry"] == "false"
    assert len(fake_upstream.requests) == 1


async def test_a_refusal_of_ours_before_the_device_is_known_is_recorded_without_a_device(
    fake_upstream, token, usage_events, monkeypatch
):
    """The database away while the signing keys are read: 503, and a usage event that names the
    request but no device. A refused credential (401) leaves none: those are the client's."""
    from proxyproject.lib.errors import DatabaseUnavailable

    async def database_away() -> None:
        raise DatabaseUnavailable()

    with monkeypatch.context() as patch:
        patch.setattr("tokens.authentication.aget_keyring", database_away)
        answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    assert error_of(answer) == (503, "api_error", "database_unavailable")
    [event] = usage_events
    assert (event.request_id, event.endpoint, event.method, event.status, event.error_type) == (
        answer.headers["request-id"],
        "/v1/messages",
        "POST",
        503,
        "database_unavailable",
    )
    assert (event.device_id, event.device_pk, event.org_id, event.model) == (None, None, None, None)
    assert error_of(await call_gateway("POST", "/v1/messages", headers={"x-api-key": "forged"}, body=MESSAGE_BODY))[0] == 401
    assert len(usage_events) == 1
