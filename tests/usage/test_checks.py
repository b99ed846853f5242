"""System checks of the usage app."""

from __future__ import annotations

from usage.checks import check_orphan_window_spans_heartbeats, check_retention_covers_a_month


def test_retention_shorter_than_a_month_is_flagged(settings):
    settings.USAGE_RETENTION_DAYS = 30
    assert [message.id for message in check_retention_covers_a_month(None)] == ["usage.W001"]
    settings.USAGE_RETENTION_DAYS = 31
    assert check_retention_covers_a_month(None) == []


def test_an_orphan_window_shorter_than_three_heartbeats_is_flagged(settings):
    settings.USAGE_FLUSH_INTERVAL = 2.0
    settings.USAGE_ORPHAN_STREAM_SECONDS = 5.0
    assert [message.id for message in check_orphan_window_spans_heartbeats(None)] == ["usage.W002"]
    settings.USAGE_ORPHAN_STREAM_SECONDS = 6.0
    assert check_orphan_window_spans_heartbeats(None) == []
