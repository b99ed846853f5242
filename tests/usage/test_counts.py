"""The named totals of the usage vocabulary (usage.counts)."""

from __future__ import annotations

import datetime as dt

from usage.counts import prompt_tokens, tokens_per_minute, total_tokens
from usage.events import UsageEvent


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
