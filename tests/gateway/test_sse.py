"""The SSE relay: whole events out as soon as they are complete, usage read on the way."""

from __future__ import annotations

import datetime as dt

import orjson

from gateway.sse import SseRelay
from gateway.usage_tally import UsageTally
from usage.events import UsageEvent


def sse(name: str, payload: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


MESSAGE_START = sse(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "claude-sonnet-4-5-20250929",
            "usage": {
                "input_tokens": 120,
                "cache_creation_input_tokens": 30,
                "cache_read_input_tokens": 500,
                "output_tokens": 1,
                "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
                "service_tier": "standard",
            },
        },
    },
)
DELTA_TEXT = sse(
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "message_delta is just text"}},
)
FIRST_MESSAGE_DELTA = sse(
    "message_delta", {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 7}}
)
LAST_MESSAGE_DELTA = sse(
    "message_delta",
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 42, "input_tokens": None, "server_tool_use": {"web_search_requests": 2}},
    },
)
STREAM = MESSAGE_START + DELTA_TEXT + FIRST_MESSAGE_DELTA + LAST_MESSAGE_DELTA + sse("message_stop", {"type": "message_stop"})


def event_for(tally: UsageTally) -> UsageEvent:
    event = UsageEvent(
        request_id="req_1", occurred_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), endpoint="/v1/messages", method="POST"
    )
    tally.apply_to(event)
    return event


def test_events_split_across_chunks_are_relayed_whole_and_counted_with_the_last_cumulative_delta():
    tally = UsageTally()
    relay = SseRelay(tally)
    out = [relay.feed(STREAM[i : i + 7]) for i in range(0, len(STREAM), 7)]
    out.append(relay.finish())
    assert b"".join(out) == STREAM
    assert all(piece == b"" or piece.endswith(b"\n\n") for piece in out)
    event = event_for(tally)
    assert (event.input_tokens, event.output_tokens, event.cache_read_tokens) == (120, 42, 500)
    assert (event.cache_write_5m_tokens, event.cache_write_1h_tokens) == (10, 20)
    assert event.web_search_requests == 2
    assert event.model == "claude-sonnet-4-5-20250929"
    assert event.service_tier == "standard"


def test_a_chunk_holding_several_events_goes_out_at_once():
    relay = SseRelay(UsageTally())
    assert relay.feed(STREAM) == STREAM
    assert not relay.holds_partial_event


def test_the_unfinished_tail_of_an_event_is_held_until_its_blank_line():
    relay = SseRelay(UsageTally())
    head, tail = DELTA_TEXT[:20], DELTA_TEXT[20:]
    assert relay.feed(MESSAGE_START + head) == MESSAGE_START
    assert relay.holds_partial_event
    assert relay.feed(tail) == DELTA_TEXT
    assert not relay.holds_partial_event


def test_usage_falls_back_to_message_start_when_no_delta_arrives():
    tally = UsageTally()
    SseRelay(tally).feed(MESSAGE_START + DELTA_TEXT[:30])
    event = event_for(tally)
    assert (event.input_tokens, event.output_tokens, event.cache_read_tokens) == (120, 1, 500)


def test_crlf_framed_events_are_read():
    tally = UsageTally()
    relay = SseRelay(tally)
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert relay.feed(crlf[:50]) == b""
    assert relay.feed(crlf[50:]) == crlf
    assert event_for(tally).output_tokens == 42


def test_an_error_event_names_its_type_and_malformed_data_is_ignored():
    tally = UsageTally()
    relay = SseRelay(tally)
    relay.feed(b"event: message_delta\ndata: {not json\n\n")
    relay.feed(sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    assert tally.error_type == "overloaded_error"
    assert event_for(tally).output_tokens == 0


def test_non_integer_counts_from_upstream_are_not_trusted():
    tally = UsageTally()
    tally.merge({"input_tokens": "12", "output_tokens": True, "cache_read_input_tokens": -5, "cache_creation_input_tokens": 9})
    event = event_for(tally)
    assert (event.input_tokens, event.output_tokens, event.cache_read_tokens, event.cache_write_5m_tokens) == (0, 0, 0, 9)


def test_the_content_relayed_is_measured_from_text_thinking_and_tool_input_deltas():
    relay = SseRelay(UsageTally())
    deltas = [
        {"type": "thinking_delta", "thinking": "Let me think"},
        {"type": "text_delta", "text": 'He said "hi"\n'},
        {"type": "input_json_delta", "partial_json": '{"city": "Par'},
        {"type": "signature_delta", "signature": "EqQBCgIYAhIM"},
    ]
    block = b"".join(sse("content_block_delta", {"type": "content_block_delta", "index": 3, "delta": delta}) for delta in deltas)
    relay.feed(MESSAGE_START + block[:100])
    relay.feed(block[100:])
    # escapes count as they stand in the data line: `"` and a newline are two bytes each
    assert relay.content_bytes == len("Let me think") + len('He said \\"hi\\"\\n') + len('{\\"city\\": \\"Par')
