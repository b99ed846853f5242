"""Usage and spend through the real surface: gateway server processes relaying to the fake
Anthropic upstream on a real socket, records landing in the shared test database, and spend caps
holding for 50 concurrent requests spread over two gateway processes on one Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import httpx
import orjson
import pytest

from fake_anthropic import FakeAnthropic
from tests.servers import ServerProcess, gateway_process
from tests.support import enroll, poll_until
from tests.usage.cast import ensure_seeded_prices
from tests.usage.claude_code import claude_code_body
from tokens.models import Device
from tokens.revocation import policy_changed
from usage.models import UsageRecord

pytestmark = pytest.mark.usefixtures("live_prices")
MASTER_KEY = "sk-ant-test-master-usage-0001"
SONNET = "claude-sonnet-4-5-20250929"
# Sonnet 4.5: 1000*3 + 200*15 + 5000*0.30 (cache reads) + 300*3.75 (5m writes) + 100*6 (1h writes) = 9,225 per million
FAKE_USAGE = {
    "input_tokens": 1000,
    "output_tokens": 200,
    "cache_read_input_tokens": 5000,
    "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 100},
}


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        yield fake


def start_gateway(fake: FakeAnthropic, **env: str) -> ServerProcess:
    return gateway_process(
        ANTHROPIC_BASE_URL=fake.base_url,
        ANTHROPIC_API_KEY=MASTER_KEY,
        ENROLLMENT_MODE="open",
        ENROLLMENT_RATE_LIMIT_MAX="100000",
        USAGE_FLUSH_INTERVAL="0.05",
        USAGE_PRICE_CACHE_SECONDS="3600",
        **env,
    ).start()


@pytest.fixture(scope="module")
def module_gateway(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[ServerProcess]:
    """One server for the module; it loads the price table at start-up and keeps it (the flush
    between transactional tests empties the table, so the seed goes in first)."""
    with django_db_blocker.unblock():
        ensure_seeded_prices()
    server = start_gateway(fake_upstream)
    yield server
    server.stop()


@pytest.fixture
def gateway(module_gateway, live_prices) -> ServerProcess:
    return module_gateway


def message(
    server: ServerProcess,
    token: str,
    *,
    stream: bool = False,
    model: str = SONNET,
    max_tokens: int = 64,
    usage: dict | None = None,
    fault: str | None = None,
) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}", "anthropic-version": "2023-06-01"}
    if usage is not None:
        headers["x-fake-usage"] = orjson.dumps(usage).decode()
    if fault is not None:
        headers["x-fake-fault"] = fault
    body = {"model": model, "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]}
    return httpx.post(server.url + "/v1/messages", json=body, headers=headers, timeout=30)


def records_of(device_id: str, count: int, timeout: float = 15.0) -> list[UsageRecord]:
    """The device's records once `count` have landed (the gateway writes them about 50 ms later)."""

    def landed() -> list[UsageRecord]:
        records = list(UsageRecord.objects.filter(device_ref=device_id).order_by("occurred_at"))
        return records if len(records) >= count else []

    records = poll_until(landed, timeout, f"{count} records of {device_id}")
    assert len(records) == count, f"{len(records)} records of {device_id}, expected {count}"
    return records


def test_streamed_and_plain_replies_are_recorded_and_priced_alike(gateway):
    token = enroll(gateway, device_id="usage-live-ada")
    plain = message(gateway, token, usage=FAKE_USAGE)
    assert plain.status_code == 200, plain.text
    streamed = message(gateway, token, stream=True, usage=FAKE_USAGE)
    assert streamed.status_code == 200 and "event: message_stop" in streamed.text
    first, second = records_of("usage-live-ada", 2)
    for record, was_streamed in ((first, False), (second, True)):
        assert record.streamed is was_streamed
        assert (record.input_tokens, record.output_tokens, record.cache_read_tokens) == (1000, 200, 5000)
        assert (record.cache_write_5m_tokens, record.cache_write_1h_tokens) == (300, 100)
        assert (record.cost, record.priced, record.status, record.model) == (Decimal("0.009225"), True, 200, SONNET)
        assert record.device_id == Device.objects.get(device_id="usage-live-ada").pk
        assert record.upstream_request_id.startswith("req_011C") and record.upstream_key_name
    assert first.upstream_request_id != second.upstream_request_id


def test_refusals_upstream_errors_and_broken_streams_are_recorded(gateway):
    token = enroll(gateway, device_id="usage-live-bob", allowed_models="claude-haiku-*")
    assert message(gateway, token).status_code == 403
    Device.objects.filter(device_id="usage-live-bob").update(allowed_models="")
    enroll_again = enroll(gateway, device_id="usage-live-bob-2")
    assert message(gateway, enroll_again, fault="529").status_code == 529
    broken = message(gateway, enroll_again, stream=True, fault="error-mid-stream", usage={"input_tokens": 40, "output_tokens": 9})
    assert broken.status_code == 200 and "event: error" in broken.text
    (refused,) = records_of("usage-live-bob", 1)
    assert (refused.status, refused.is_error, refused.error_type, refused.cost) == (403, True, "model_not_allowed", Decimal(0))
    overloaded, mid_stream = records_of("usage-live-bob-2", 2)
    assert (overloaded.status, overloaded.is_error, overloaded.error_type) == (529, True, "overloaded_error")
    # the stream broke before its message_delta: the output is the text relayed so far, estimated
    # at 4 bytes a token (message_start's placeholder is 1)
    relayed = sum(
        len(orjson.loads(raw.split("data: ", 1)[1])["delta"]["text"].encode())
        for raw in broken.text.split("\n\n")
        if raw.startswith("event: content_block_delta")
    )
    expected_output = (relayed + 3) // 4
    assert (mid_stream.status, mid_stream.is_error, mid_stream.streamed, mid_stream.input_tokens, mid_stream.output_tokens) == (
        200,
        True,
        True,
        40,
        expected_output,
    )
    assert mid_stream.extra["output_tokens_estimated"] is True
    assert mid_stream.cost == (Decimal(40 * 3 + expected_output * 15) / 1_000_000).quantize(Decimal("0.0000000001"))


def test_a_client_that_leaves_mid_stream_is_still_recorded(gateway):
    token = enroll(gateway, device_id="usage-live-dee")
    headers = {
        "authorization": f"Bearer {token}",
        "anthropic-version": "2023-06-01",
        "x-fake-fault": "slow-stream=300",
        "x-fake-usage": orjson.dumps({"input_tokens": 700, "output_tokens": 50}).decode(),
    }
    body = {"model": SONNET, "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "Tell me a long story"}]}
    with httpx.stream("POST", gateway.url + "/v1/messages", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        first_chunk = next(response.iter_raw())
    assert b"message_start" in first_chunk
    (record,) = records_of("usage-live-dee", 1)
    assert (record.client_disconnected, record.streamed, record.status, record.input_tokens) == (True, True, 200, 700)
    assert record.cost == Decimal(700 * 3 + record.output_tokens * 15) / 1_000_000


def test_an_unknown_model_is_recorded_with_its_tokens_and_no_price(gateway):
    token = enroll(gateway, device_id="usage-live-cy")
    assert message(gateway, token, model="claude-nonesuch-9", usage={"input_tokens": 321, "output_tokens": 12}).status_code == 200
    (record,) = records_of("usage-live-cy", 1)
    assert (record.model, record.input_tokens, record.output_tokens) == ("claude-nonesuch-9", 321, 12)
    assert (record.cost, record.priced) == (None, False)


@pytest.fixture
def two_gateways(redis_required, live_prices, fake_upstream) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    first = start_gateway(fake_upstream)
    try:
        second = start_gateway(fake_upstream)
    except Exception:
        first.stop()
        raise
    yield first, second
    first.stop()
    second.stop()


async def fire(servers: tuple[ServerProcess, ServerProcess], token: str, count: int, body: bytes) -> list[httpx.Response]:
    headers = {
        "authorization": f"Bearer {token}",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "x-fake-stream": "events=100000",  # the fake writes until max_tokens stops it: the dearest answer
    }
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(
            *(client.post(servers[index % 2].url + "/v1/messages", content=body, headers=headers) for index in range(count))
        )


@pytest.mark.parametrize("cap", ["1.00", "5.00"])
def test_fifty_concurrent_claude_code_requests_through_two_gateways_never_pass_the_cap(two_gateways, cap):
    """Claude Code's ordinary request (Opus, max_tokens 64000, 100 KB, streaming), each answered
    with as much output as max_tokens allows: what is admitted is clamped to fit, the rest refused,
    and the recorded spend stays within the cap."""
    first, _ = two_gateways
    device_id = f"usage-live-capped-{cap}"
    token = enroll(first, device_id=device_id)
    device = Device.objects.get(device_id=device_id)
    device.daily_spend_cap_usd = Decimal(cap)
    device.save()
    policy_changed(device=device)

    answers = asyncio.run(fire(two_gateways, token, 50, claude_code_body()))
    statuses = [answer.status_code for answer in answers]
    admitted = statuses.count(200)
    assert admitted >= 1 and statuses.count(429) == 50 - admitted
    records = records_of(device_id, 50)
    settled = sum((record.cost for record in records if record.cost is not None), Decimal(0))
    assert Decimal(cap) / 2 < settled <= Decimal(cap)
    served = [record for record in records if record.status == 200]
    assert all(record.output_tokens > 1024 for record in served)
    assert any(record.output_tokens < 64_000 for record in served)  # the last one admitted was clamped
    assert {record.error_type for record in records if record.status == 429} == {"spend_cap_reached"}
