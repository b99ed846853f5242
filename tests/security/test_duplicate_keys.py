"""A body naming a key twice where the gateway reads it could mean one request to policy (orjson
keeps the last value) and another upstream (a parser that keeps the first): such bodies are
refused before anything goes upstream; a key repeated where the gateway does not read is not."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from tests.gateway.conftest import bearer, call_gateway
from tests.support import enroll_device
from tests.usage.claude_code import claude_code_body
from tests.usage.conftest import live_prices  # noqa: F401

MESSAGES = b'"messages": [{"role": "user", "content": "hi"}]'


async def _refused(token: str, path: str, body: bytes) -> dict:
    answer = await call_gateway("POST", path, headers=bearer(token), body=body)
    assert answer.status == 400, answer.body
    return orjson.loads(answer.body)["error"]


async def test_a_second_model_key_cannot_carry_a_request_past_the_allowlist(transactional_db, fake_upstream):
    token = await enroll_device(allowed_models="claude-haiku-*")
    body = b'{"model": "claude-opus-4-8", "max_tokens": 16, ' + MESSAGES + b', "model": "claude-haiku-4-5"}'
    error = await _refused(token, "/v1/messages", body)
    assert error["type"] == "invalid_request_error"
    assert "'model' appears more than once" in error["message"]
    assert fake_upstream.requests == []


@pytest.mark.usefixtures("live_prices")
async def test_a_second_max_tokens_key_cannot_escape_the_spend_clamp(transactional_db, fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("1.00"))
    body = claude_code_body(max_tokens=64_000)[:-1] + b', "max_tokens": 100}'
    error = await _refused(token, "/v1/messages", body)
    assert "'max_tokens' appears more than once" in error["message"]
    assert fake_upstream.requests == []


async def test_a_key_spelled_with_unicode_escapes_is_the_same_key(transactional_db, fake_upstream):
    token = await enroll_device(allowed_models="claude-haiku-*")
    body = b'{"m\\u006fdel": "claude-opus-4-8", "max_tokens": 16, ' + MESSAGES + b', "model": "claude-haiku-4-5"}'
    error = await _refused(token, "/v1/messages", body)
    assert "'model' appears more than once" in error["message"]
    assert fake_upstream.requests == []


async def test_a_duplicate_key_in_count_tokens_is_refused(transactional_db, fake_upstream):
    token = await enroll_device()
    body = b'{"model": "claude-haiku-4-5", "stream": false, ' + MESSAGES + b', "stream": true}'
    error = await _refused(token, "/v1/messages/count_tokens", body)
    assert "'stream' appears more than once" in error["message"]
    assert fake_upstream.requests == []


async def test_a_duplicate_model_inside_a_batch_request_is_refused(transactional_db, fake_upstream):
    token = await enroll_device(allowed_models="claude-haiku-*")
    params = b'{"model": "claude-opus-4-8", "max_tokens": 16, ' + MESSAGES + b', "model": "claude-haiku-4-5"}'
    body = b'{"requests": [{"custom_id": "a", "params": ' + params + b"}]}"
    error = await _refused(token, "/v1/messages/batches", body)
    assert "'model' appears more than once" in error["message"]
    assert fake_upstream.requests == []


async def test_a_key_repeated_in_a_nested_object_of_a_message_is_forwarded_byte_for_byte(transactional_db, fake_upstream):
    token = await enroll_device()
    tool = b'{"name": "pick", "input_schema": {"type": "object", "properties": {"model": {"type": "string"}}}}'
    body = b'{"model": "claude-haiku-4-5", "max_tokens": 16, "tools": [' + tool + b"], " + MESSAGES + b"}"
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body)
    assert answer.status == 200, answer.body
    assert fake_upstream.requests[-1].body == body


async def test_a_deeply_nested_body_on_the_full_check_is_a_400_not_a_crash(transactional_db, fake_upstream):
    token = await enroll_device()
    nested = b'{"model": ' + b"[" * 1000 + b"]" * 1000 + b"}"  # a nested "model" sends it to the full parse
    body = b'{"model": "claude-haiku-4-5", "max_tokens": 16, "metadata": ' + nested + b", " + MESSAGES + b"}"
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body)
    assert answer.status == 400, answer.body
    assert fake_upstream.requests == []
