"""The bundled fake Anthropic API speaks the wire protocol the official SDK expects.

Everything upstream of the gateway in tests and benchmarks is this fake, so it is checked here
against the real client (`anthropic` SDK) and, where the bytes matter, raw HTTP.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import orjson
import pytest

from fake_anthropic import FakeAnthropic
from fake_anthropic.ratelimits import RateLimitWindow

KEY = "sk-ant-test-1"
OTHER_KEY = "sk-ant-test-2"
MODEL = "claude-opus-4-8"
REPLY_TEXT = "Hello! This is the fake Anthropic API answering your request with a short fixed reply."
SAY_HI = [{"role": "user", "content": "Say hi"}]  # the prompt is '"Say hi"': 8 bytes, 2 tokens
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
NO_SERVER_TOOLS = {"web_search_requests": 0, "web_fetch_requests": 0}
NO_CACHE = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_keys={KEY}) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_fake(fake: FakeAnthropic) -> Iterator[None]:
    fake.clear_requests()
    yield
    fake.set_api_keys({KEY})


@pytest.fixture
def client(fake: FakeAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url, api_key=KEY, max_retries=0)


@pytest.fixture
def http(fake: FakeAnthropic) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, headers={"x-api-key": KEY, "accept-encoding": "identity"}) as raw:
        yield raw


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs; asserts each event is exactly `event: X\\ndata: {json}`."""
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        events.append((event_line[len("event: ") :], orjson.loads(data_line[len("data: ") :])))
    return events


def test_create_returns_message_with_usage_derived_from_the_prompt(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=100, messages=SAY_HI)

    assert message.id.startswith("msg_01")
    assert (message.type, message.role, message.model) == ("message", "assistant", MODEL)
    assert [(block.type, block.text) for block in message.content] == [("text", REPLY_TEXT)]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage.input_tokens == 2
    assert message.usage.output_tokens == 22


def test_json_body_has_every_usage_field(http: httpx.Client) -> None:
    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 100, "messages": SAY_HI})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["usage"] == {
        "input_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": NO_CACHE,
        "output_tokens": 22,
        "server_tool_use": NO_SERVER_TOOLS,
        "service_tier": "standard",
    }


def test_max_tokens_cuts_the_reply(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=3, messages=SAY_HI)

    assert message.content[0].text == "Hello! This "
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 3)


def test_stream_gives_the_sdk_text_and_final_usage(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=100, messages=SAY_HI) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert "".join(pieces) == REPLY_TEXT
    assert len(pieces) == 5
    assert final.content[0].text == REPLY_TEXT
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 2, 22)


def test_stream_follows_the_event_grammar(http: httpx.Client) -> None:
    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 100, "stream": True, "messages": SAY_HI})

    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert "[DONE]" not in response.text
    events = sse_events(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"], start["model"]) == ([], None, MODEL)
    assert start["usage"] == {
        "input_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": NO_CACHE,
        "output_tokens": 1,
        "service_tier": "standard",
    }
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta") == REPLY_TEXT
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 22,
            "server_tool_use": NO_SERVER_TOOLS,
        },
    }


def test_stream_is_chosen_by_the_body_not_the_accept_header(http: httpx.Client) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": SAY_HI}

    as_json = http.post("/v1/messages", json=body, headers={"accept": "text/event-stream"})
    as_stream = http.post("/v1/messages", json={**body, "stream": True}, headers={"accept": "application/json"})

    assert as_json.headers["content-type"] == "application/json"
    assert as_stream.headers["content-type"] == "text/event-stream; charset=utf-8"


def test_stream_shape_header_sets_the_number_of_deltas(http: httpx.Client) -> None:
    response = http.post(
        "/v1/messages",
        json={"model": MODEL, "max_tokens": 1000, "stream": True, "messages": SAY_HI},
        headers={"x-fake-stream": "events=30,interval_ms=0,first_byte_ms=0"},
    )

    names = [name for name, _ in sse_events(response.text)]
    assert names.count("content_block_delta") == 30


def test_streamed_tool_use_assembles_the_input(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "What is the weather?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        partial_json = "".join(event.partial_json for event in stream if event.type == "input_json")
        final = stream.get_final_message()

    assert partial_json == '{"city":"fake","days":1}'
    assert [block.type for block in final.content] == ["tool_use"]
    tool_use = final.content[0]
    assert tool_use.id.startswith("toolu_01")
    assert (tool_use.name, tool_use.input) == ("get_weather", {"city": "fake", "days": 1})
    assert (final.stop_reason, final.usage.output_tokens) == ("tool_use", 6)


def test_use_tool_phrase_gives_text_then_tool_use(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Please use tool for Paris"}]}],
    )

    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "I'll use the get_weather tool."
    assert (message.content[1].name, message.content[1].input) == ("get_weather", {"city": "fake", "days": 1})
    assert (message.stop_reason, message.usage.output_tokens) == ("tool_use", 14)


def test_count_tokens_matches_the_input_a_message_reports(client: anthropic.Anthropic) -> None:
    prompt = {"system": "Be brief.", "messages": SAY_HI, "tools": [WEATHER_TOOL]}

    counted = client.messages.count_tokens(model=MODEL, **prompt)
    message = client.messages.create(model=MODEL, max_tokens=100, **prompt)

    assert counted.input_tokens == message.usage.input_tokens == 49


def test_cache_control_writes_then_reads_in_the_ttl_bucket(client: anthropic.Anthropic) -> None:
    system = [{"type": "text", "text": "You are a careful assistant. " * 20, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]

    first = client.messages.create(model=MODEL, max_tokens=100, system=system, messages=SAY_HI).usage
    second = client.messages.create(model=MODEL, max_tokens=100, system=system, messages=SAY_HI).usage

    assert (first.input_tokens, first.cache_creation_input_tokens, first.cache_read_input_tokens) == (2, 152, 0)
    assert (first.cache_creation.ephemeral_5m_input_tokens, first.cache_creation.ephemeral_1h_input_tokens) == (0, 152)
    assert (second.input_tokens, second.cache_creation_input_tokens, second.cache_read_input_tokens) == (2, 0, 152)


def test_a_growing_conversation_reads_its_old_prefix_and_writes_the_new_part(client: anthropic.Anthropic) -> None:
    question = {"type": "text", "text": "First question about caching."}
    follow_up = {"type": "text", "text": "Second question.", "cache_control": {"type": "ephemeral"}}

    turn_one = client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": [{**question, "cache_control": {"type": "ephemeral"}}]}],
    ).usage
    turn_two = client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=[
            {"role": "user", "content": [question]},
            {"role": "assistant", "content": "An answer."},
            {"role": "user", "content": [follow_up]},
        ],
    ).usage

    def split(usage: anthropic.types.Usage) -> tuple[int, int, int]:
        return usage.input_tokens, usage.cache_creation.ephemeral_5m_input_tokens, usage.cache_read_input_tokens

    assert split(turn_one) == (0, 17, 0)
    assert split(turn_two) == (0, 14, 17)


USAGE_OVERRIDE = {
    "input_tokens": 1000,
    "output_tokens": 200,
    "cache_read_input_tokens": 5000,
    "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 50},
    "service_tier": "standard",
    "speed": "fast",
    "inference_geo": "us",
}


def test_usage_override_replaces_json_usage(http: httpx.Client) -> None:
    response = http.post(
        "/v1/messages",
        json={"model": MODEL, "max_tokens": 100, "messages": SAY_HI},
        headers={"x-fake-usage": orjson.dumps(USAGE_OVERRIDE).decode()},
    )

    assert response.json()["usage"] == {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 150,
        "cache_read_input_tokens": 5000,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 50},
        "output_tokens": 200,
        "server_tool_use": NO_SERVER_TOOLS,
        "service_tier": "standard",
        "speed": "fast",
        "inference_geo": "us",
    }


def test_usage_override_splits_across_stream_events(http: httpx.Client, client: anthropic.Anthropic) -> None:
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": SAY_HI}
    override_header = {"x-fake-usage": orjson.dumps(USAGE_OVERRIDE).decode()}

    events = dict(sse_events(http.post("/v1/messages", json=body, headers=override_header).text))
    with client.messages.stream(model=MODEL, max_tokens=100, messages=SAY_HI, extra_headers=override_header) as stream:
        usage = stream.get_final_message().usage

    assert events["message_start"]["message"]["usage"] == {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 150,
        "cache_read_input_tokens": 5000,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 50},
        "output_tokens": 1,
        "service_tier": "standard",
        "speed": "fast",
        "inference_geo": "us",
    }
    assert events["message_delta"]["usage"] == {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 150,
        "cache_read_input_tokens": 5000,
        "output_tokens": 200,
        "server_tool_use": NO_SERVER_TOOLS,
    }
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens) == (1000, 200, 5000)
    assert (usage.cache_creation.ephemeral_5m_input_tokens, usage.cache_creation.ephemeral_1h_input_tokens) == (100, 50)
    assert (usage.speed, usage.inference_geo) == ("fast", "us")


def test_overloaded_fault_is_a_529(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(model=MODEL, max_tokens=100, messages=SAY_HI, extra_headers={"x-fake-fault": "529"})

    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": caught.value.response.headers["request-id"],
    }


def test_rate_limit_fault_carries_retry_after(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model=MODEL, max_tokens=100, messages=SAY_HI, extra_headers={"x-fake-fault": "429=7"})

    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["error"]["type"] == "rate_limit_error"


def test_fault_from_the_prompt_magic_word(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi FAKE_FAULT:500"}])

    assert caught.value.status_code == 500
    assert caught.value.body["error"] == {"type": "api_error", "message": "Internal server error"}


def test_error_mid_stream_makes_the_sdk_raise(client: anthropic.Anthropic) -> None:
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(
            model=MODEL, max_tokens=100, messages=SAY_HI, extra_headers={"x-fake-fault": "error-mid-stream"}
        ) as stream:
            received.extend(stream.text_stream)

    assert caught.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert received == ["Hello! This is ", "the fake Anthropic "]


def test_error_mid_stream_is_an_error_event_on_a_200(http: httpx.Client) -> None:
    response = http.post(
        "/v1/messages",
        json={"model": MODEL, "max_tokens": 100, "stream": True, "messages": SAY_HI},
        headers={"x-fake-fault": "error-mid-stream"},
    )

    events = sse_events(response.text)
    assert response.status_code == 200
    assert [name for name, _ in events][-2:] == ["content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_stream_faults_leave_the_non_streaming_fallback_alone(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi FAKE_FAULT:error-mid-stream,drop-mid-stream"}]
    )

    assert message.content[0].text == REPLY_TEXT


def test_drop_mid_stream_breaks_the_read(client: anthropic.Anthropic) -> None:
    received: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        with client.messages.stream(
            model=MODEL, max_tokens=100, messages=SAY_HI, extra_headers={"x-fake-fault": "drop-mid-stream"}
        ) as stream:
            received.extend(stream.text_stream)

    assert received == ["Hello! This is ", "the fake Anthropic "]


def test_drop_before_response_is_a_connection_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(
            model=MODEL, max_tokens=100, messages=SAY_HI, extra_headers={"x-fake-fault": "drop-before-response"}
        )


def test_slow_first_byte_holds_the_response_back(http: httpx.Client) -> None:
    started = time.monotonic()
    response = http.post(
        "/v1/messages",
        json={"model": MODEL, "max_tokens": 100, "messages": SAY_HI},
        headers={"x-fake-fault": "slow-first-byte=150"},
    )

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.15


def test_slow_stream_spaces_the_events(http: httpx.Client) -> None:
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": SAY_HI}
    started = time.monotonic()
    response = http.post("/v1/messages", json=body, headers={"x-fake-fault": "slow-stream=25"})

    assert len(sse_events(response.text)) == 11
    assert time.monotonic() - started >= 10 * 0.025  # 11 events, 10 gaps


def test_unknown_fault_is_refused_so_typos_surface(http: httpx.Client) -> None:
    response = http.post(
        "/v1/messages", json={"model": MODEL, "max_tokens": 1, "messages": SAY_HI}, headers={"x-fake-fault": "529x"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": "x-fake-fault: unknown fault '529x'"}


def test_bad_key_is_an_authentication_error(fake: FakeAnthropic) -> None:
    client = anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant-wrong", max_retries=0)

    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model=MODEL, max_tokens=100, messages=SAY_HI)

    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": caught.value.response.headers["request-id"],
    }


def test_rotated_keys_take_effect_at_once(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.set_api_keys({OTHER_KEY})
    rotated = anthropic.Anthropic(base_url=fake.base_url, api_key=OTHER_KEY, max_retries=0)

    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model=MODEL, max_tokens=100, messages=SAY_HI)
    assert rotated.messages.create(model=MODEL, max_tokens=100, messages=SAY_HI).usage.output_tokens == 22


def test_x_api_key_wins_over_bearer(http: httpx.Client) -> None:
    response = http.get("/v1/models", headers={"x-api-key": "sk-ant-leaked", "authorization": f"Bearer {KEY}"})

    assert response.status_code == 401


def test_missing_credential_is_refused(fake: FakeAnthropic) -> None:
    response = httpx.get(f"{fake.base_url}/v1/models")

    assert response.status_code == 401
    assert response.json()["error"] == {"type": "authentication_error", "message": "x-api-key header is required"}


def test_every_response_carries_request_id_organization_and_rate_limits(fake: FakeAnthropic, http: httpx.Client) -> None:
    for response in (http.get("/v1/models"), http.get("/v1/nothing-here"), httpx.head(f"{fake.base_url}/")):
        assert re.fullmatch(r"req_011C[A-Za-z0-9]{20}", response.headers["request-id"])
        assert response.headers["anthropic-organization-id"] == fake.organization_id
        assert response.headers["anthropic-ratelimit-requests-limit"] == "4000"
        assert response.headers["anthropic-ratelimit-tokens-limit"] == "2400000"
        assert response.headers["anthropic-ratelimit-input-tokens-limit"] == "2000000"
        assert response.headers["anthropic-ratelimit-output-tokens-limit"] == "400000"
        for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z", response.headers[f"anthropic-ratelimit-{kind}-reset"])


def test_rate_limit_headers_count_down_within_the_minute_and_reset_after() -> None:
    now = [1_800_000_030.0]  # 2027-01-15T08:00:30Z
    window = RateLimitWindow(clock=lambda: now[0])

    window.count_request()
    window.count_request()
    window.count_tokens(100, 20)
    during = window.headers()
    now[0] += 30
    after = window.headers()

    assert (during["anthropic-ratelimit-requests-remaining"], during["anthropic-ratelimit-requests-reset"]) == (
        "3998",
        "2027-01-15T08:01:00Z",
    )
    assert during["anthropic-ratelimit-tokens-remaining"] == "2399880"
    assert during["anthropic-ratelimit-input-tokens-remaining"] == "1999900"
    assert during["anthropic-ratelimit-output-tokens-remaining"] == "399980"
    assert (after["anthropic-ratelimit-requests-remaining"], after["anthropic-ratelimit-requests-reset"]) == (
        "4000",
        "2027-01-15T08:02:00Z",
    )


def test_head_root_answers_without_a_credential(fake: FakeAnthropic) -> None:
    response = httpx.head(f"{fake.base_url}/")

    assert (response.status_code, response.content) == (200, b"")


def test_unknown_path_is_a_not_found_envelope(http: httpx.Client) -> None:
    response = http.post("/v1/skills/nothing", json={})

    assert response.status_code == 404
    assert response.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Not Found"},
        "request_id": response.headers["request-id"],
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"model": "m", "max_tokens": 1',
            "There was an error parsing the body of your request. Please check that it is valid JSON.",
        ),
        (b'{"max_tokens": 1, "messages": []}', "model: Field required"),
        (b'{"model": "m", "messages": []}', "max_tokens: Field required"),
        (b'{"model": "m", "max_tokens": 1}', "messages: Field required"),
        (b'{"model": "m", "max_tokens": "1", "messages": []}', "max_tokens: Input should be a valid integer"),
    ],
)
def test_invalid_messages_request_is_a_400(http: httpx.Client, body: bytes, message: str) -> None:
    response = http.post("/v1/messages", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": message}


def test_roles_and_block_types_are_not_validated(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "system", "content": [{"type": "mystery_block", "payload": 1}]}, *SAY_HI],
    )

    assert message.stop_reason == "end_turn"


def test_gzip_is_used_when_accepted_for_json(http: httpx.Client) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": SAY_HI}
    with http.stream("POST", "/v1/messages", json=body, headers={"accept-encoding": "gzip, deflate, br, zstd"}) as response:
        raw = b"".join(response.iter_raw())

    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)
    assert orjson.loads(gzip.decompress(raw))["content"][0]["text"] == REPLY_TEXT


def test_identity_gets_an_uncompressed_body(http: httpx.Client) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": SAY_HI}
    with http.stream("POST", "/v1/messages", json=body, headers={"accept-encoding": "identity"}) as response:
        raw = b"".join(response.iter_raw())

    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(raw)
    assert orjson.loads(raw)["content"][0]["text"] == REPLY_TEXT


def test_gzip_stream_is_flushed_event_by_event(http: httpx.Client) -> None:
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": SAY_HI}
    decoder = zlib.decompressobj(wbits=31)
    with http.stream(
        "POST", "/v1/messages", json=body, headers={"accept-encoding": "gzip", "x-fake-stream": "events=3,interval_ms=20"}
    ) as response:
        chunks = response.iter_raw()
        first = decoder.decompress(next(chunks))
        rest = b"".join(decoder.decompress(chunk) for chunk in chunks) + decoder.flush()

    assert response.headers["content-encoding"] == "gzip"
    assert "content-length" not in response.headers
    assert first.startswith(b"event: message_start\n") and first.endswith(b"\n\n")
    assert [name for name, _ in sse_events((first + rest).decode())] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert decoder.eof


def test_request_log_masks_credentials_and_keeps_the_rest(
    fake: FakeAnthropic, client: anthropic.Anthropic, http: httpx.Client
) -> None:
    client.messages.create(model=MODEL, max_tokens=100, messages=SAY_HI, extra_query={"beta": "true"})
    http.post("/v1/messages/count_tokens?beta=true&x=%5B1m%5D", content=b'{"model":"m","messages":[]}')

    sdk_call, raw_call = fake.requests
    assert (sdk_call.method, sdk_call.path, sdk_call.query_string) == ("POST", "/v1/messages", "beta=true")
    assert sdk_call.headers["authorization"] == "Bearer ***st-1"
    assert "x-api-key" not in sdk_call.headers
    assert sdk_call.api_key_used == "st-1"
    assert orjson.loads(sdk_call.body) == {"max_tokens": 100, "messages": SAY_HI, "model": MODEL}
    assert raw_call.query_string == "beta=true&x=%5B1m%5D"
    assert raw_call.headers["x-api-key"] == "***st-1"
    assert raw_call.body == b'{"model":"m","messages":[]}'
    assert KEY not in repr(fake.requests)


def test_request_log_joins_a_repeated_header(fake: FakeAnthropic, http: httpx.Client) -> None:
    http.get("/v1/models", headers=[("anthropic-beta", "files-api-2025-04-14"), ("anthropic-beta", "context-1m-2025-08-07")])

    assert fake.requests[-1].headers["anthropic-beta"] == "files-api-2025-04-14, context-1m-2025-08-07"


def test_request_log_names_the_answer_it_gave(fake: FakeAnthropic, http: httpx.Client) -> None:
    response = http.get("/v1/models")

    assert fake.requests[-1].request_id == response.headers["request-id"]


def test_models_list_pages_newest_first(client: anthropic.Anthropic) -> None:
    first_page = client.models.list(limit=3)
    next_page = client.models.list(limit=2, after_id=first_page.last_id)
    every_id = [model.id for model in client.models.list(limit=1000).data]

    assert [model.id for model in first_page.data] == ["claude-fable-5-1", "claude-mythos-5-1", "claude-opus-5-5"]
    assert (first_page.has_more, first_page.first_id, first_page.last_id) == (True, "claude-fable-5-1", "claude-opus-5-5")
    assert [model.id for model in next_page.data] == ["claude-sonnet-5-5", "claude-haiku-5-5"]
    price_table_models = ["claude-opus-4-8", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "claude-sonnet-5"]
    assert [model for model in price_table_models if model not in every_id] == []


def test_model_is_found_by_id_or_alias_and_unknown_is_404(client: anthropic.Anthropic) -> None:
    by_alias = client.models.retrieve("claude-haiku-4-5")

    assert (by_alias.id, by_alias.display_name, by_alias.type) == ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "model")
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("claude-nonexistent")
    assert caught.value.body["error"] == {"type": "not_found_error", "message": "model: claude-nonexistent"}


def test_batch_round_trip(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    params = {"model": MODEL, "max_tokens": 100, "messages": SAY_HI}
    created = client.messages.batches.create(
        requests=[{"custom_id": "first", "params": params}, {"custom_id": "second", "params": params}]
    )

    assert (created.type, created.processing_status, created.results_url) == ("message_batch", "in_progress", None)
    assert created.id.startswith("msgbatch_01")
    assert created.request_counts.processing == 2

    ended = client.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.processing, ended.request_counts.succeeded) == (0, 2)
    assert ended.results_url == f"{fake.base_url}/v1/messages/batches/{created.id}/results"

    results = list(client.messages.batches.results(created.id))
    assert [result.custom_id for result in results] == ["first", "second"]
    for result in results:
        assert result.result.type == "succeeded"
        usage = result.result.message.usage
        assert (usage.input_tokens, usage.output_tokens, usage.service_tier) == (2, 22, "batch")

    assert [batch.id for batch in client.messages.batches.list(limit=1).data] == [created.id]
    assert client.messages.batches.delete(created.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(created.id)


def test_cancelled_batch_ends_with_cancelled_results(client: anthropic.Anthropic) -> None:
    params = {"model": MODEL, "max_tokens": 100, "messages": SAY_HI}
    created = client.messages.batches.create(requests=[{"custom_id": "only", "params": params}])

    canceling = client.messages.batches.cancel(created.id)
    ended = client.messages.batches.retrieve(created.id)

    assert canceling.processing_status == "canceling"
    assert (ended.processing_status, ended.request_counts.canceled) == ("ended", 1)
    assert [result.result.type for result in client.messages.batches.results(created.id)] == ["canceled"]


def test_batch_with_invalid_params_is_a_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[{"custom_id": "x", "params": {"model": MODEL, "messages": SAY_HI}}])

    assert caught.value.body["error"]["message"] == "requests.0.params.max_tokens: Field required"


def test_file_upload_and_list(client: anthropic.Anthropic) -> None:
    uploaded = client.beta.files.upload(file=("notes.txt", b"hello fake", "text/plain"))
    listed = client.beta.files.list()

    assert (uploaded.filename, uploaded.mime_type, uploaded.size_bytes, uploaded.type) == ("notes.txt", "text/plain", 10, "file")
    assert uploaded.id.startswith("file_011C")
    assert listed.data[0].id == uploaded.id


async def test_async_use_on_the_callers_loop() -> None:
    async with FakeAnthropic(api_keys={KEY}) as fake:
        client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key=KEY, max_retries=0)
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=SAY_HI) as stream:
            final = await stream.get_final_message()
        await client.close()

    assert (final.content[0].text, final.usage.output_tokens) == (REPLY_TEXT, 22)


def test_management_command_serves_until_sigterm() -> None:
    environment = {**os.environ, "FAKE_ANTHROPIC_API_KEYS": f"{OTHER_KEY},sk-ant-test-3", "DJANGO_DEBUG": "true"}
    command = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "manage.py"), "fake_anthropic", "--port", "0", "--api-key", KEY],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = command.stdout.readline()
        base_url = re.search(r"http://127\.0\.0\.1:\d+", banner)
        assert base_url, banner + command.stderr.read()
        for key in (KEY, OTHER_KEY):
            assert httpx.get(f"{base_url.group()}/v1/models", headers={"x-api-key": key}).status_code == 200
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=10) == 0
    finally:
        if command.poll() is None:
            command.kill()
        command.stdout.close()
        command.stderr.close()


def test_management_command_refuses_to_start_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.management import CommandError, call_command

    monkeypatch.delenv("FAKE_ANTHROPIC_API_KEYS", raising=False)

    with pytest.raises(CommandError, match="no API key: pass --api-key KEY or set FAKE_ANTHROPIC_API_KEYS"):
        call_command("fake_anthropic", "--port", "0")
