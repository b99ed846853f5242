"""System checks of the usage app."""
from __future__ import annotations

from usage.checks import check_retention_covers_a_month


def test_retention_shorter_than_a_month_is_flagged(settings):
    settings.USAGE_RETENTION_DAYS = 30
    assert [message.id for message in check_retention_covers_a_month(None)] == ["usage.W001"]
    settings.USAGE_RETENTION_DAYS = 31
    assert check_retention_covers_a_month(None) == []
