"""Admission against the spend caps by the request's estimate (`usage.spend_estimate`): a device
with a $1.00 daily cap is served Claude Code's ordinary request, its max_tokens lowered to what the
cap affords; strict and soft enforcement; what a refusal says."""

from __future__ import annotations

import base64
import datetime as dt
import math
from decimal import Decimal

import orjson
import pytest
from asgiref.sync import sync_to_async

from fake_anthropic.usage import count_prompt_tokens
from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool  # noqa: F401
from tests.support import enroll_device
from tests.usage.claude_code import OPUS, claude_code_body, claude_code_request
from tokens.models import Device
from usage.spend import current_spend
from usage.spend_estimate import IMAGE_TOKENS, PDF_PAGE_TOKENS, estimate_message_cost, estimate_prompt_tokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_prices")]
NOW = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
STREAM_TO_MAX_TOKENS = {"x-fake-stream": "events=100000"}  # the fake writes until max_tokens stops it


def sse_events(chunks: list[bytes]) -> list[dict]:
    text = b"".join(chunks).decode()
    return [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def forwarded_max_tokens(fake) -> int:
    return orjson.loads(fake.requests[-1].body)["max_tokens"]


async def device_pk_of(token: str) -> int:
    import jwt

    device_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    return await sync_to_async(lambda: Device.objects.get(device_id=device_id).pk)()


def test_the_estimate_of_a_claude_code_request_covers_what_the_fake_bills_and_is_far_below_a_token_a_byte():
    body = claude_code_body()
    parsed = orjson.loads(body)
    estimated = estimate_prompt_tokens(parsed, body)
    assert count_prompt_tokens(parsed) < estimated < len(body) / 2.5


def test_an_image_is_estimated_as_the_api_bills_it_not_by_its_base64_bytes():
    picture = base64.b64encode(bytes(range(256)) * 2000).decode()  # 512 KB, ~680 KB of base64
    request = claude_code_request(10_000)
    request["messages"][-1]["content"].insert(
        0, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": picture}}
    )
    body = orjson.dumps(request)
    without_image = claude_code_body(10_000)
    wrapper_bytes = len(body) - len(picture) - len(without_image)  # the image block's JSON around its data
    added = estimate_prompt_tokens(request, body) - estimate_prompt_tokens(orjson.loads(without_image), without_image)
    assert abs(added - IMAGE_TOKENS - wrapper_bytes / 3) <= 1  # rounding each part up
    assert added < len(picture) / 100


def test_a_pdf_is_estimated_by_its_pages():
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Pages /Count 3 >>\n" + b"2 0 obj << /Type /Page >>\n" * 3 + b"x" * 90_000
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(pdf).decode()},
    }
    request = {"model": OPUS, "max_tokens": 100, "messages": [{"role": "user", "content": [document]}]}
    body = orjson.dumps(request)
    text_bytes = len(body) - len(document["source"]["data"])
    assert estimate_prompt_tokens(request, body) == 3 * PDF_PAGE_TOKENS + math.ceil(text_bytes / 3) + 512


def test_cache_marks_price_the_prompt_at_the_cache_write_rate(prices):
    plain = claude_code_request()
    for block in [*plain["system"], *plain["messages"][-1]["content"]]:
        block.pop("cache_control", None)
    marked = claude_code_body()
    plain_estimate = estimate_message_cost(OPUS, plain, orjson.dumps(plain), NOW, min_output_tokens=1024)
    marked_estimate = estimate_message_cost(OPUS, orjson.loads(marked), marked, NOW, min_output_tokens=1024)
    per_token = Decimal("5") * Decimal("1.1") / 1_000_000  # Opus 4.8 input, times the US-only multiplier
    assert plain_estimate.input_cost == (plain_estimate.prompt_tokens * per_token).quantize(Decimal("1e-12"))
    assert marked_estimate.input_cost / marked_estimate.prompt_tokens == per_token * Decimal("1.25")


async def test_a_one_dollar_cap_serves_claude_codes_request_with_max_tokens_lowered_to_fit(fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("1.00"))
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token, **STREAM_TO_MAX_TOKENS), body=claude_code_body())
    assert answer.status == 200
    events = sse_events(answer.chunks)
    (delta,) = [event for event in events if event["type"] == "message_delta"]
    clamped = forwarded_max_tokens(fake_upstream)
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert 1024 <= clamped < 64_000 and delta["usage"]["output_tokens"] == clamped
    settled, _ = await sync_to_async(current_spend)("device", await device_pk_of(token), "day")
    assert Decimal("0.5") < settled <= Decimal("1.00")


async def test_a_plain_reply_is_clamped_by_the_same_rule(fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("1.00"))
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=claude_code_body(stream=False))
    assert answer.status == 200
    first = forwarded_max_tokens(fake_upstream)
    streamed = await call_gateway(
        "POST", "/v1/messages", headers=bearer(await enroll_device(daily_spend_cap_usd=Decimal("1.00"))), body=claude_code_body()
    )
    assert streamed.status == 200
    assert forwarded_max_tokens(fake_upstream) == first < 64_000


async def test_a_request_that_fits_is_forwarded_byte_for_byte(fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("20.00"))
    body = claude_code_body()
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body)).status == 200
    assert fake_upstream.requests[-1].body == body


async def test_a_strict_device_is_refused_what_a_clamping_one_is_served(fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("1.00"), spend_cap_enforcement="strict")
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=claude_code_body())
    error = orjson.loads(answer.body)["error"]
    assert (answer.status, error["details"]["error_code"], error["details"]["period"]) == (429, "spend_cap_reached", "day")
    assert Decimal(error["details"]["request_estimate"]) > Decimal("1.5")
    assert error["message"].startswith("Daily spend cap $1.00 for this device: $0.00 spent, this request needs at least $")
    assert fake_upstream.requests == []


async def test_a_soft_cap_serves_past_the_cap(fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("0.10"), spend_cap_enforcement="soft")
    body = claude_code_body()
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body)).status == 200
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body)).status == 200
    assert fake_upstream.requests[-1].body == body
    settled, _ = await sync_to_async(current_spend)("device", await device_pk_of(token), "day")
    assert settled > Decimal("0.10")


async def test_once_not_even_a_minimal_answer_fits_the_request_is_refused_with_the_figures(fake_upstream):
    token = await enroll_device(daily_spend_cap_usd=Decimal("1.00"))
    headers = bearer(token, **STREAM_TO_MAX_TOKENS)
    assert (await call_gateway("POST", "/v1/messages", headers=headers, body=claude_code_body())).status == 200
    refused = await call_gateway("POST", "/v1/messages", headers=headers, body=claude_code_body())
    details = orjson.loads(refused.body)["error"]["details"]
    assert (refused.status, details["error_code"]) == (429, "spend_cap_reached")
    spent, remaining, needed = (Decimal(details[name]) for name in ("spent", "remaining", "request_estimate"))
    assert spent + remaining == Decimal(details["cap"]) == 1
    assert remaining < needed
    assert len(fake_upstream.requests) == 1
