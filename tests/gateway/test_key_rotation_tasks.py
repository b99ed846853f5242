"""The Celery side of key rotation: draining keys retired once idle everywhere (or after the grace
period), never the last key that works; warnings about keys due for rotation; the beat schedule."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from gateway.keypool_shared import count_in_flight, report_in_flight
from gateway.metrics import render_metrics
from gateway.models import UpstreamKey, UpstreamKeyState
from gateway.tasks import retire_drained_upstream_keys_task, warn_about_old_upstream_keys_task
from gateway.upstream_keys import (
    add_upstream_key,
    drain_settle_seconds,
    flag_upstream_key,
    retire_drained_upstream_keys,
    rotate_upstream_key,
)
from proxyproject.celery import app as celery_app

pytestmark = pytest.mark.django_db

OLD = "sk-ant-api03-old-" + "o" * 30 + "0LD1"
NEW = "sk-ant-api03-new-" + "n" * 30 + "N3W2"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def rotated(settings):
    settings.UPSTREAM_KEY_POOL_CACHE_SECONDS = 5.0
    settings.UPSTREAM_KEY_DRAIN_GRACE_SECONDS = 900
    add_upstream_key(name="old", secret=OLD, actor="test", now=T0 - dt.timedelta(days=3))
    return rotate_upstream_key(name="old", secret=NEW, new_name="new", actor="test", now=T0)


def after(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def state_of(name: str) -> str:
    return UpstreamKey.objects.get(name=name).state


def test_an_idle_draining_key_waits_until_every_process_has_dropped_it_then_retires(rotated, redis_required, caplog):
    caplog.set_level(logging.INFO)
    assert drain_settle_seconds() == 14.0  # pools confirmed twice (2 x 5 s), in-flight reported twice (2 x 1 s), 2 s margin
    assert retire_drained_upstream_keys(now=after(13.9)) == []
    assert retire_drained_upstream_keys(now=after(14)) == ["old"]
    old = UpstreamKey.objects.get(name="old")
    assert (old.state, old.retired_at, old.encrypted_secret) == ("retired", after(14), "")
    [line] = [record for record in caplog.records if record.getMessage() == "Upstream key audit: retired"]
    fields = line.event_fields
    assert (fields["reason"], fields["actor"], fields["drainedSeconds"]) == ("drained", "schedule", 14.0)


def in_flight(key_id: int, delta: int) -> None:
    """A request starting (+1) or ending (-1) on the key in this process, reported at once."""
    count_in_flight(key_id, delta)
    async_to_sync(report_in_flight)()


def test_a_draining_key_with_a_request_in_flight_stays_until_the_grace_period_ends(rotated, redis_required, caplog):
    caplog.set_level(logging.INFO)
    in_flight(rotated.old.pk, 1)
    try:
        assert retire_drained_upstream_keys(now=after(60)) == []
        assert retire_drained_upstream_keys(now=after(899)) == []
        assert retire_drained_upstream_keys(now=after(900)) == ["old"]
    finally:
        in_flight(rotated.old.pk, -1)
    [line] = [record for record in caplog.records if record.getMessage() == "Upstream key audit: retired"]
    assert line.event_fields["reason"] == "drain grace period over"


def test_the_in_flight_count_returns_to_zero_and_the_key_retires(rotated, redis_required):
    in_flight(rotated.old.pk, 1)
    assert retire_drained_upstream_keys(now=after(30)) == []
    in_flight(rotated.old.pk, -1)
    assert retire_drained_upstream_keys(now=after(31)) == ["old"]


def test_without_redis_nobody_knows_what_is_in_flight_so_only_the_grace_period_retires(rotated, settings):
    settings.REDIS_URL = ""
    assert retire_drained_upstream_keys(now=after(600)) == []
    assert retire_drained_upstream_keys(now=after(900)) == ["old"]


def test_draining_keys_stay_while_no_usable_active_key_exists(rotated, caplog):
    flag_upstream_key(key_id=rotated.new.pk, reason="Upstream answered 401", now=after(1))
    assert retire_drained_upstream_keys(now=after(10_000)) == []
    assert state_of("old") == UpstreamKeyState.DRAINING
    assert "Draining upstream keys kept: no usable active key to take over" in caplog.text


def test_the_task_retires_a_key_drained_long_ago(settings):
    settings.UPSTREAM_KEY_DRAIN_GRACE_SECONDS = 60
    add_upstream_key(name="old", secret=OLD, actor="test")
    rotate_upstream_key(name="old", secret=NEW, new_name="new", actor="test", now=timezone.now() - dt.timedelta(seconds=61))
    assert retire_drained_upstream_keys_task() == ["old"]
    assert (state_of("old"), state_of("new")) == ("retired", "active")


def test_active_keys_older_than_the_rotation_age_are_warned_about(settings, caplog):
    settings.UPSTREAM_KEY_ROTATION_DAYS = 30
    add_upstream_key(name="aged", secret=OLD, actor="test", now=timezone.now() - dt.timedelta(days=31))
    add_upstream_key(name="young", secret=NEW, actor="test", now=timezone.now() - dt.timedelta(days=29))
    assert warn_about_old_upstream_keys_task() == ["aged"]
    [line] = [record for record in caplog.records if record.getMessage() == "Upstream key due for rotation"]
    assert (line.levelno, line.event_fields["key"], line.event_fields["ageDays"], line.event_fields["hint"]) == (
        logging.WARNING,
        "aged",
        31,
        "manage.py rotate_upstream_key aged",
    )


def test_beat_runs_the_key_tasks_and_the_signing_key_rotation():
    schedule = {entry["task"]: entry["schedule"] for entry in celery_app.conf.beat_schedule.values()}
    assert schedule["gateway.retire_drained_upstream_keys"] == 30.0
    assert "gateway.warn_about_old_upstream_keys" in schedule
    assert "tokens.maintain_signing_keys" in schedule
    assert {"gateway.retire_drained_upstream_keys", "gateway.warn_about_old_upstream_keys"} <= set(celery_app.tasks)


def test_metrics_count_the_keys_by_state_and_the_flagged_ones(rotated):
    flag_upstream_key(key_id=rotated.new.pk, reason="Upstream answered 403")
    text = render_metrics().decode()
    assert 'gateway_upstream_keys{state="active"} 1.0' in text
    assert 'gateway_upstream_keys{state="draining"} 1.0' in text
    assert 'gateway_upstream_keys{state="retired"} 0.0' in text
    assert "gateway_upstream_keys_flagged 1.0" in text
