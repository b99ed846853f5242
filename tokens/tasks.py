"""Periodic token housekeeping, scheduled in proxyproject/celery.py."""

from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.utils import timezone

from tokens.models import IssuedToken
from tokens.signing_keys import retire_expired_signing_keys, rotate_signing_key_if_due

# Expired rows are kept a while for investigations that start from the audit trail.
EXPIRED_TOKEN_RETENTION = dt.timedelta(days=7)


@shared_task(name="tokens.maintain_signing_keys")
def maintain_signing_keys() -> dict[str, object]:
    """Rotate every SIGNING_KEY_ROTATION_DAYS; retire verify-only keys whose tokens have expired."""
    rotated = rotate_signing_key_if_due()
    retired = retire_expired_signing_keys()
    return {"rotated_to": rotated.kid if rotated else None, "retired": retired}


@shared_task(name="tokens.purge_expired_tokens")
def purge_expired_tokens() -> int:
    """Issued-token rows past expiry can no longer be used or reused; drop them after a grace period."""
    deleted, _ = IssuedToken.objects.filter(expires_at__lt=timezone.now() - EXPIRED_TOKEN_RETENTION).delete()
    return deleted
