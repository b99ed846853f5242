"""The gateway's system checks, by id."""

from __future__ import annotations

from gateway.checks import check_shared_limits, check_upstream_key


def test_no_upstream_key_is_warned_as_w001(settings, db):
    settings.ANTHROPIC_API_KEY = ""
    assert [message.id for message in check_upstream_key(None)] == ["gateway.W001"]
    settings.ANTHROPIC_API_KEY = "sk-ant-configured-0001"
    assert check_upstream_key(None) == []


def test_no_redis_means_per_process_limits_warned_as_w002(settings):
    settings.REDIS_URL = ""
    assert [message.id for message in check_shared_limits(None)] == ["gateway.W002"]
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    assert check_shared_limits(None) == []
