"""Attacks on the spend caps through admission by estimate: racing requests past a cap, and a
clamped request keeping a thinking budget the API would refuse."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import pytest
from asgiref.sync import sync_to_async

from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool  # noqa: F401
from tests.support import enroll_device
from tests.usage.claude_code import claude_code_body, claude_code_request
from tests.usage.conftest import live_prices  # noqa: F401
from tests.usage.test_spend_admission import device_pk_of
from usage.spend import current_spend

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_prices")]


async def test_fifty_racing_requests_on_one_gateway_never_pass_the_cap(fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("3.00"))
    headers = bearer(token, **{"x-fake-stream": "events=100000"})  # each answer as long as max_tokens allows
    answers = await asyncio.gather(
        *(call_gateway("POST", "/v1/messages", headers=headers, body=claude_code_body()) for _ in range(50))
    )
    statuses = [answer.status for answer in answers]
    assert statuses.count(200) >= 2 and statuses.count(200) + statuses.count(429) == 50
    settled, reserved = await sync_to_async(current_spend)("device", await device_pk_of(token), "day")
    assert reserved == 0 and Decimal("1.5") < settled <= Decimal("3.00")


async def test_a_clamped_request_keeps_its_thinking_budget_below_max_tokens(fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("0.50"))
    request = claude_code_request(stream=False)
    request["thinking"] = {"type": "enabled", "budget_tokens": 60_000}
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=orjson.dumps(request))
    assert answer.status == 200
    sent = orjson.loads(fake_upstream.requests[-1].body)
    assert 1024 <= sent["thinking"]["budget_tokens"] < sent["max_tokens"] < 60_000
