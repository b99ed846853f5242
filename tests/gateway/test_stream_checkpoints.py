"""Checkpoints of a stream's usage while it is relayed: the first with `message_start`, then as the
output grows, each carrying what was relayed so far; the final record says the stream had them."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from gateway.usage_tally import estimated_tokens
from tests.gateway.conftest import bearer, call_gateway
from tests.support import MESSAGE_BODY, STREAM_BODY
from usage.models import OpenStream, UsageRecord
from usage.records import record_orphaned_streams
from usage.writer import flush_usage, stop_usage_writer


@pytest.fixture
def submitted(monkeypatch):
    """(sequence, usage so far) of each checkpoint, then ("final", event), in order."""
    seen = []
    monkeypatch.setattr(
        "gateway.stream_checkpoints.submit_stream_checkpoint",
        lambda event, sequence: seen.append((sequence, dataclasses.replace(event))),
    )
    monkeypatch.setattr("usage.accounting.submit_usage", lambda event: seen.append(("final", event)))
    return seen


def relayed_text_bytes(body: bytes) -> int:
    total = 0
    for raw in body.split(b"\n\n"):
        if raw.startswith(b"event: content_block_delta"):
            total += len(orjson.loads(raw.split(b"data: ", 1)[1])["delta"]["text"].encode())
    return total


async def test_a_stream_is_checkpointed_as_its_output_grows(fake_upstream, token, submitted, settings):
    settings.USAGE_CHECKPOINT_TOKENS = 5
    settings.USAGE_CHECKPOINT_SECONDS = 3600
    headers = bearer(token, **{"x-fake-usage": '{"input_tokens": 321}', "x-fake-stream": "events=12,interval_ms=20"})
    answer = await call_gateway("POST", "/v1/messages", headers=headers, body=STREAM_BODY)
    assert answer.status == 200
    *checkpoints, (label, final) = submitted
    assert label == "final" and final.checkpointed and final.output_tokens > 1
    assert [sequence for sequence, _ in checkpoints] == list(range(len(checkpoints)))
    assert len(checkpoints) >= 3
    first = checkpoints[0][1]
    assert (first.request_id, first.status, first.streamed, first.input_tokens, first.output_tokens) == (
        final.request_id,
        200,
        True,
        321,
        1,
    )
    outputs = [event.output_tokens for _, event in checkpoints]
    assert all(later - earlier >= 5 for earlier, later in zip(outputs[1:], outputs[2:]))
    whole = estimated_tokens(relayed_text_bytes(answer.body))
    assert whole - 5 < outputs[-1] <= whole
    assert checkpoints[-1][1].extra["output_tokens_estimated"] is True
    assert all(event.input_tokens == 321 and event.error_type is None for _, event in checkpoints)


async def test_a_short_stream_has_only_its_start_checkpoint(fake_upstream, token, submitted):
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=STREAM_BODY)
    assert answer.status == 200
    assert [label for label, _ in submitted] == [0, "final"]
    assert submitted[1][1].checkpointed is True


async def test_a_reply_that_is_not_a_stream_has_no_checkpoint(fake_upstream, token, submitted):
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    assert answer.status == 200
    [(label, final)] = submitted
    assert (label, final.checkpointed) == ("final", False)


async def test_a_quiet_stream_is_kept_open_by_its_process_heartbeat(fake_upstream, token, settings, monkeypatch):
    """Its only checkpoint is older than the orphan threshold long before it ends; the writer, draining
    all along, must not take it for a crashed one."""
    settings.USAGE_FLUSH_INTERVAL = 0.05
    settings.USAGE_ORPHAN_STREAM_SECONDS = 0.4
    settings.USAGE_CHECKPOINT_SECONDS = 3600
    orphans = []

    def record_orphans():
        orphans.extend(record_orphaned_streams())
        return []

    monkeypatch.setattr("usage.writer.record_orphaned_streams", record_orphans)
    try:
        headers = bearer(token, **{"x-fake-stream": "events=8,interval_ms=200"})
        answer = await call_gateway("POST", "/v1/messages", headers=headers, body=STREAM_BODY)
        assert answer.status == 200
        await flush_usage()
        record = await UsageRecord.objects.aget(request_id=answer.headers["x-gateway-request-id"])
    finally:
        await stop_usage_writer()
    assert (record.error_type, record.output_tokens > 1) == ("", True)
    assert orphans == []
    assert not await OpenStream.objects.filter(request_id=record.request_id).aexists()
