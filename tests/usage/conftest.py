"""Fixtures of the usage tests: the seeded price table, a private spool, an empty Redis queue, no
records left by other test files, ten days of generated records."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from proxyproject.lib.redis import get_sync_redis, redis_key
from tests.usage.cast import ensure_seeded_prices
from usage.models import OpenStream, UsageRecord
from usage.pricing import invalidate_price_table
from usage.spend.redis import counter_keys_pattern


@pytest.fixture
def prices(db):
    ensure_seeded_prices()
    yield
    invalidate_price_table()


@pytest.fixture
def ten_days_of_usage():
    call_command(
        "generate_usage",
        "--records=1500",
        "--days=10",
        "--devices=15",
        "--organizations=2",
        "--no-rollups",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )


@pytest.fixture
def live_prices(transactional_db):
    ensure_seeded_prices()
    yield
    invalidate_price_table()


@pytest.fixture(autouse=True)
def private_usage_queues(settings, tmp_path):
    """Each test gets its own spool directory and an empty Redis queue."""
    settings.USAGE_SPOOL_DIR = tmp_path / "spool"
    client = get_sync_redis()
    if client is not None:
        for key in client.scan_iter(redis_key("*usage*")):  # the queue, and the names from before the hash tags
            client.delete(key)
        for key in client.scan_iter(counter_keys_pattern()):
            client.delete(key)
    yield


@pytest.fixture(autouse=True)
def no_records_of_other_files(django_db_setup, django_db_blocker):
    """A gateway process started by another test file writes its last records when it stops, after
    that file's tests flushed the database; a usage test compares every record with the figures it
    checks, so it starts with none. (django_db_setup: the rows deleted are the test database's.)"""
    with django_db_blocker.unblock():
        UsageRecord.objects.all().delete()
        OpenStream.objects.all().delete()
    yield


@pytest.fixture
def webhook_receiver():
    from tests.usage.webhook_receiver import WebhookReceiver

    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def tasks_run_in_process():
    """The budget alert tasks run where they are queued (Celery's eager mode), retries included and
    without their countdown; one test runs them on a real worker through the broker instead."""
    from proxyproject.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous
