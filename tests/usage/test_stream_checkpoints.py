"""The writer's side of crash-safe stream accounting: checkpoints kept until the final record, orphans
(their process gone quiet) recorded as interrupted, the final record always winning, never doubled."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from tests.usage.cast import usage_event
from usage import queue
from usage.models import OpenStream, UsageRecord
from usage.records import record_orphaned_streams, store_payloads

pytestmark = pytest.mark.usefixtures("prices")
OWNER = "host-123-abcd"


def checkpoint(request_id: str, sequence: int, output_tokens: int, owner: str = OWNER) -> bytes:
    event = usage_event(
        request_id=request_id,
        device_id="laptop-1",
        streamed=True,
        input_tokens=500,
        cache_read_tokens=40,
        output_tokens=output_tokens,
        extra={"output_tokens_estimated": True},
    )
    return queue.encode_checkpoint(event, owner, sequence)


def final(request_id: str, output_tokens: int) -> bytes:
    return queue.encode_event(
        usage_event(
            request_id=request_id,
            device_id="laptop-1",
            streamed=True,
            input_tokens=500,
            cache_read_tokens=40,
            output_tokens=output_tokens,
            checkpointed=True,
        )
    )


def later(seconds: float) -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=seconds)


def test_a_checkpoint_and_its_final_record_in_one_batch_leave_no_open_stream():
    store_payloads([checkpoint("req_short", 0, 3), final("req_short", 22)])
    assert OpenStream.objects.count() == 0
    assert list(UsageRecord.objects.values_list("request_id", "output_tokens", "error_type")) == [("req_short", 22, "")]


def test_the_newest_checkpoint_is_kept_even_when_an_older_one_arrives_later():
    store_payloads([checkpoint("req_long", 0, 1), checkpoint("req_long", 2, 300)])
    store_payloads([checkpoint("req_long", 1, 100)])  # spooled while Redis was away, drained last
    assert list(OpenStream.objects.values_list("request_id", "sequence", "owner")) == [("req_long", 2, OWNER)]


def test_the_final_record_of_a_stream_checkpointed_in_an_earlier_batch_closes_it():
    store_payloads([checkpoint("req_long", 0, 1)])
    store_payloads([final("req_long", 480)])
    assert OpenStream.objects.count() == 0
    assert record_orphaned_streams(later(3600)) == []
    assert UsageRecord.objects.get().output_tokens == 480


def test_an_orphaned_stream_becomes_an_interrupted_record_with_its_last_checkpoint(settings):
    settings.USAGE_ORPHAN_STREAM_SECONDS = 15
    store_payloads([checkpoint("req_cut", 0, 1), checkpoint("req_cut", 1, 212)])
    assert record_orphaned_streams(later(10)) == []  # its owner was heard from 10 s ago: not yet
    [row] = record_orphaned_streams(later(16))
    record = UsageRecord.objects.get()
    assert (record.request_id, record.status, record.error_type, record.is_error, record.streamed) == (
        "req_cut",
        200,
        "gateway_crashed",
        True,
        True,
    )
    assert (record.device_ref, record.input_tokens, record.cache_read_tokens, record.output_tokens) == ("laptop-1", 500, 40, 212)
    assert record.extra == {"output_tokens_estimated": True, "interrupted": "gateway_crashed", "checkpoint": 1}
    assert record.cost == row["cost"] > 0
    assert OpenStream.objects.count() == 0


def test_a_heartbeat_of_its_owner_keeps_a_quiet_stream_open(settings):
    settings.USAGE_ORPHAN_STREAM_SECONDS = 15
    store_payloads([checkpoint("req_thinking", 0, 1), checkpoint("req_dead", 0, 1, owner="other-host-9-ffff")])
    OpenStream.objects.update(seen_at=timezone.now() - dt.timedelta(seconds=20))
    store_payloads([queue.encode_heartbeat(OWNER)])
    assert [row["request_id"] for row in record_orphaned_streams()] == ["req_dead"]
    assert list(OpenStream.objects.values_list("request_id", flat=True)) == ["req_thinking"]


def test_a_final_record_arriving_after_the_interrupted_one_replaces_it(settings):
    settings.USAGE_ORPHAN_STREAM_SECONDS = 15
    store_payloads([checkpoint("req_late", 0, 1)])
    record_orphaned_streams(later(16))
    assert UsageRecord.objects.get().error_type == "gateway_crashed"
    store_payloads([final("req_late", 480)])
    record = UsageRecord.objects.get()
    assert (record.error_type, record.is_error, record.output_tokens, record.extra) == ("", False, 480, {})


def test_an_orphan_whose_final_record_is_stored_is_dropped_without_a_second_record(settings):
    settings.USAGE_ORPHAN_STREAM_SECONDS = 15
    store_payloads([final("req_reordered", 480)])
    store_payloads([checkpoint("req_reordered", 3, 400)])  # drained after its final record
    assert record_orphaned_streams(later(16)) == []
    record = UsageRecord.objects.get()
    assert (record.error_type, record.output_tokens) == ("", 480)
    assert OpenStream.objects.count() == 0


def test_a_replayed_final_record_does_not_replace_another_final_record():
    store_payloads([final("req_twice", 480)])
    store_payloads([queue.encode_event(usage_event(request_id="req_twice", output_tokens=1, streamed=True))])
    assert UsageRecord.objects.get().output_tokens == 480
