"""The named totals of the usage vocabulary (usage.counts)."""

from __future__ import annotations

import datetime as dt

from usage.api import UsageTotalsOut
from usage.counts import COUNT_FIELDS, prompt_tokens, tokens_per_minute, total_tokens
from usage.events import UsageEvent
from usage.exports import RECORD_COLUMNS, ROLLUP_COLUMNS
from usage.models import UsageRecord, UsageRollup


def _event() -> UsageEvent:
    return UsageEvent(
        request_id="req_counts",
        occurred_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        endpoint="/v1/messages",
        method="POST",
        input_tokens=100,
        output_tokens=20,
        cache_write_5m_tokens=3000,
        cache_write_1h_tokens=400,
        cache_read_tokens=50_000,
    )


def test_prompt_tokens_are_everything_the_model_read():
    assert prompt_tokens(_event()) == 100 + 50_000 + 3000 + 400


def test_total_tokens_add_the_output_to_the_prompt():
    assert total_tokens(_event()) == 100 + 50_000 + 3000 + 400 + 20


def test_cache_reads_do_not_count_toward_tokens_per_minute():
    assert tokens_per_minute(_event()) == 100 + 3000 + 400 + 20


def test_every_count_is_a_column_of_records_and_rollups_and_a_field_of_events_and_the_api():
    for name in COUNT_FIELDS:
        UsageRecord._meta.get_field(name)
        UsageRollup._meta.get_field(name)
    assert set(COUNT_FIELDS) <= set(UsageEvent.__dataclass_fields__)
    assert set(COUNT_FIELDS) <= set(UsageTotalsOut.model_fields)


def test_the_csv_exports_carry_every_count_in_the_vocabulary_s_order():
    for columns in (RECORD_COLUMNS, ROLLUP_COLUMNS):
        assert tuple(name for name in columns if name in COUNT_FIELDS) == COUNT_FIELDS
