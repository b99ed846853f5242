"""The Celery app and the whole beat schedule, in one place."""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxyproject.settings")

app = Celery("proxyproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # Rotates the signing key every SIGNING_KEY_ROTATION_DAYS and retires keys whose tokens expired.
    "tokens-maintain-signing-keys": {"task": "tokens.maintain_signing_keys", "schedule": crontab(minute=7)},
    "tokens-purge-expired-tokens": {"task": "tokens.purge_expired_tokens", "schedule": crontab(hour=3, minute=17)},
    # Writes usage records a dead gateway process left queued (live processes drain their own).
    "usage-drain-queue": {"task": "usage.drain_usage_queue", "schedule": 60.0},
    # Rebuilds the recent hour and day rollups and reconciles spend counters from the database.
    "usage-rollup-recent": {"task": "usage.rollup_recent_usage", "schedule": crontab(minute="*/10")},
    # Deletes raw usage records older than USAGE_RETENTION_DAYS (rollups stay).
    "usage-prune-records": {"task": "usage.prune_usage_records", "schedule": crontab(hour=4, minute=23)},
    # Retires rotated (draining) upstream keys once no request is in flight on them, or after the grace period.
    "gateway-retire-drained-upstream-keys": {"task": "gateway.retire_drained_upstream_keys", "schedule": 30.0},
    # Warns about active upstream keys older than UPSTREAM_KEY_ROTATION_DAYS.
    "gateway-warn-old-upstream-keys": {"task": "gateway.warn_about_old_upstream_keys", "schedule": crontab(hour=8, minute=13)},
}
