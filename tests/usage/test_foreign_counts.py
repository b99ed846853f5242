"""A queued record may come from an older or a foreign writer: its token counts are stored as
numbers when they are numbers (text included), bounded to the column, and as zero otherwise (a
latency that is not a number as none); pricing never meets a count that is not an int, so the odd
record neither fails nor holds up its batch."""

from __future__ import annotations

import orjson
import pytest

from tests.usage.cast import usage_event
from usage import queue
from usage.models import UsageRecord
from usage.records import store_payloads

pytestmark = pytest.mark.usefixtures("live_prices")


def foreign_payload(request_id: str, **counts: object) -> bytes:
    fields = orjson.loads(queue.encode_event(usage_event(request_id=request_id)))
    fields.update(counts)
    return orjson.dumps(fields)


def test_counts_of_every_shape_a_foreign_writer_may_send_are_stored_as_bounded_numbers_or_zero():
    store_payloads(
        [
            foreign_payload("req_numbers", input_tokens=12, output_tokens="34", cache_read_tokens=5.9, status=True, latency_ms=7),
            foreign_payload(
                "req_out_of_range",
                input_tokens=-7,
                output_tokens=1e30,
                cache_read_tokens="99999999999",
                latency_ms=-3,
                ttfb_ms=-1,
            ),
            foreign_payload(
                "req_not_numbers",
                input_tokens=[1],
                output_tokens={"n": 2},
                cache_read_tokens="lots",
                status=None,
                latency_ms="slow",
                ttfb_ms=[2],
            ),
        ]
    )
    rows = {row.request_id: row for row in UsageRecord.objects.all()}
    numbers, out_of_range, not_numbers = rows["req_numbers"], rows["req_out_of_range"], rows["req_not_numbers"]
    assert (numbers.input_tokens, numbers.output_tokens, numbers.cache_read_tokens, numbers.status, numbers.latency_ms) == (
        12,
        34,
        5,
        1,
        7.0,
    )
    assert (out_of_range.input_tokens, out_of_range.output_tokens, out_of_range.cache_read_tokens) == (
        0,
        2_147_483_647,
        2_147_483_647,
    )
    assert (out_of_range.latency_ms, out_of_range.ttfb_ms) == (0.0, 0.0)
    assert (not_numbers.input_tokens, not_numbers.output_tokens, not_numbers.cache_read_tokens, not_numbers.status) == (
        0,
        0,
        0,
        0,
    )
    assert (not_numbers.latency_ms, not_numbers.ttfb_ms) == (0.0, None)
