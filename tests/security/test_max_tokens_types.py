"""The spend and tokens-per-minute reservations are sized by `max_tokens`. A value that is not a JSON
integer (a numeric string, a float, a boolean) was read as no bound at all, so a request could reserve
only its prompt while the API, reading the value as a number, answered at full length past the caps.
Such a body is now refused before anything goes upstream, wherever the gateway reads `max_tokens`."""

from __future__ import annotations

from decimal import Decimal

import jwt
import orjson
import pytest
from asgiref.sync import sync_to_async

from tests.gateway.conftest import bearer, call_gateway
from tests.support import enroll_device
from tests.usage.conftest import live_prices  # noqa: F401
from tokens.models import Device
from usage.spend import current_spend

MESSAGES = [{"role": "user", "content": "hi"}]


async def _refused(token: str, path: str, body: dict) -> str:
    answer = await call_gateway("POST", path, headers=bearer(token), body=orjson.dumps(body))
    assert answer.status == 400, answer.body
    error = orjson.loads(answer.body)["error"]
    assert error["type"] == "invalid_request_error"
    return error["message"]


@pytest.mark.usefixtures("live_prices")
async def test_a_numeric_string_max_tokens_cannot_escape_the_spend_reservation(transactional_db, fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("0.05"))
    body = {"model": "claude-opus-4-8", "max_tokens": "64000", "messages": MESSAGES}
    assert await _refused(token, "/v1/messages", body) == "max_tokens: Input should be a valid integer"
    assert fake_upstream.requests == []


@pytest.mark.usefixtures("live_prices")
async def test_a_float_max_tokens_cannot_escape_the_spend_reservation(transactional_db, fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("0.05"))
    body = {"model": "claude-opus-4-8", "max_tokens": 64000.0, "messages": MESSAGES}
    assert await _refused(token, "/v1/messages", body) == "max_tokens: Input should be a valid integer"
    assert fake_upstream.requests == []


async def test_a_boolean_max_tokens_is_refused(transactional_db, fake_upstream):
    token = await enroll_device()
    body = {"model": "claude-haiku-4-5", "max_tokens": True, "messages": MESSAGES}
    assert await _refused(token, "/v1/messages", body) == "max_tokens: Input should be a valid integer"
    assert fake_upstream.requests == []


async def test_a_string_max_tokens_cannot_escape_the_tokens_per_minute_reservation(transactional_db, fake_upstream):
    token = await enroll_device(tokens_per_minute=200)
    body = {"model": "claude-haiku-4-5", "max_tokens": "100000", "stream": True, "messages": MESSAGES}
    assert await _refused(token, "/v1/messages", body) == "max_tokens: Input should be a valid integer"
    assert fake_upstream.requests == []


@pytest.mark.usefixtures("live_prices")
async def test_a_string_max_tokens_inside_a_batch_request_is_refused(transactional_db, fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("0.05"))
    good = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": MESSAGES}
    bad = {"model": "claude-opus-4-8", "max_tokens": "64000", "messages": MESSAGES}
    body = {"requests": [{"custom_id": "a", "params": good}, {"custom_id": "b", "params": bad}]}
    message = await _refused(token, "/v1/messages/batches", body)
    assert message == "requests.1.params.max_tokens: Input should be a valid integer"
    assert fake_upstream.requests == []


async def test_an_integer_max_tokens_still_goes_upstream_byte_for_byte(transactional_db, fake_upstream):
    token = await enroll_device()
    body = b'{"model": "claude-haiku-4-5",  "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}'
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body)
    assert answer.status == 200, answer.body
    assert fake_upstream.requests[-1].body == body


@pytest.mark.usefixtures("live_prices")
async def test_an_absurd_max_tokens_on_a_soft_cap_is_served_not_refused_as_redis_down(transactional_db, fake_upstream):
    """Soft enforcement reserves a request's whole bound. A bound of 9e18 tokens is hundreds of
    trillions of dollars: reserved as is, it overflowed the counter in Redis's script, and the
    gateway answered 503 "shared state unreachable" while Redis was fine."""
    token = await enroll_device(daily_spend_cap_usd=Decimal("1.00"), spend_cap_enforcement="soft")
    absurd = orjson.dumps({"model": "claude-opus-4-8", "max_tokens": 9_000_000_000_000_000_000, "messages": MESSAGES})
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=absurd)
    assert answer.status == 200, answer.body
    assert fake_upstream.requests[-1].body == absurd  # soft enforcement never rewrites the request
    device_pk = await _device_pk(token)
    settled, reserved = await sync_to_async(current_spend)("device", device_pk, "day")
    assert (reserved, Decimal(0) < settled < Decimal("0.01")) == (0, True)
    ordinary = orjson.dumps({"model": "claude-opus-4-8", "max_tokens": 16, "messages": MESSAGES})
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=ordinary)).status == 200


async def _device_pk(token: str) -> int:
    device_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    return await sync_to_async(lambda: Device.objects.get(device_id=device_id).pk)()
