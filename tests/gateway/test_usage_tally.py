"""Usage read from replies and streams: the cache-write rule (split by TTL, never dropping written
tokens when the split and the total disagree), JSON and SSE alike."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from gateway.sse import SseRelay
from gateway.usage_tally import UsageTally
from usage.events import UsageEvent


def sse(name: str, payload: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def event_for(tally: UsageTally) -> UsageEvent:
    event = UsageEvent(
        request_id="req_1", occurred_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), endpoint="/v1/messages", method="POST"
    )
    tally.apply_to(event)
    return event


def written(usage: dict) -> tuple[int, int, object]:
    tally = UsageTally()
    tally.observe_message({"id": "msg_1", "model": "claude-opus-4-6", "usage": usage})
    event = event_for(tally)
    return event.cache_write_5m_tokens, event.cache_write_1h_tokens, event.extra.get("cache_write_unsplit_tokens")


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"cache_creation_input_tokens": 500}, (500, 0, 500)),
        (
            {
                "cache_creation_input_tokens": 500,
                "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300},
            },
            (200, 300, None),
        ),
        ({"cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 40}}, (0, 40, None)),
        ({"cache_creation_input_tokens": None, "cache_creation": {"ephemeral_1h_input_tokens": 40}}, (0, 40, None)),
    ],
    ids=["no split: all 5m", "split agrees", "split without total", "null total"],
)
def test_cache_writes_follow_the_ttl_split(usage, expected):
    assert written(usage) == expected


def test_a_split_of_zeros_with_a_total_bills_the_total_at_the_5m_rate():
    usage = {
        "cache_creation_input_tokens": 500,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    }
    assert written(usage) == (500, 0, 500)


def test_a_partial_split_bills_the_remainder_of_the_total_at_the_5m_rate():
    usage = {"cache_creation_input_tokens": 500, "cache_creation": {"ephemeral_1h_input_tokens": 200}}
    assert written(usage) == (300, 200, 300)


def test_a_split_larger_than_the_total_is_kept_whole():
    usage = {
        "cache_creation_input_tokens": 100,
        "cache_creation": {"ephemeral_5m_input_tokens": 150, "ephemeral_1h_input_tokens": 50},
    }
    assert written(usage) == (150, 50, None)


def test_a_stream_whose_delta_restates_a_total_after_a_zero_split_loses_no_written_tokens():
    start = sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "claude-opus-4-6",
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 1,
                    "cache_creation_input_tokens": 0,
                    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                },
            },
        },
    )
    delta = sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 9, "cache_creation_input_tokens": 700},
        },
    )
    tally = UsageTally()
    SseRelay(tally).feed(start + delta)
    event = event_for(tally)
    assert (event.cache_write_5m_tokens, event.cache_write_1h_tokens, event.output_tokens) == (700, 0, 9)
    assert event.extra["cache_write_unsplit_tokens"] == 700


def test_a_stream_and_a_reply_with_the_same_conflicting_usage_record_the_same_writes():
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 900,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 300},
    }
    reply = UsageTally()
    reply.observe_message({"id": "msg_1", "model": "claude-opus-4-6", "usage": usage})
    streamed = UsageTally()
    SseRelay(streamed).feed(
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "msg_1", "model": "claude-opus-4-6", "usage": {**usage, "output_tokens": 1}},
            },
        )
        + sse("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}})
    )
    one, other = event_for(reply), event_for(streamed)
    assert (
        (one.cache_write_5m_tokens, one.cache_write_1h_tokens)
        == (other.cache_write_5m_tokens, other.cache_write_1h_tokens)
        == (600, 300)
    )
