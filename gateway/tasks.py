"""Periodic upstream-key housekeeping, scheduled in proxyproject/celery.py."""

from __future__ import annotations

from celery import shared_task

from gateway.upstream_keys import retire_drained_upstream_keys, warn_about_old_upstream_keys


@shared_task(name="gateway.retire_drained_upstream_keys")
def retire_drained_upstream_keys_task() -> list[str]:
    """Rotated keys leave the pool once no request is in flight on them (or after the grace period)."""
    return retire_drained_upstream_keys()


@shared_task(name="gateway.warn_about_old_upstream_keys")
def warn_about_old_upstream_keys_task() -> list[str]:
    """A log warning per active key older than UPSTREAM_KEY_ROTATION_DAYS (the admin shows them too)."""
    return warn_about_old_upstream_keys()
