"""Once, through the real broker: a Celery worker process runs the signing-key maintenance."""

from __future__ import annotations

import datetime as dt
import time

from tests import servers
from tokens.models import SigningKey, SigningKeyState
from tokens.signing_keys import ensure_active_signing_key
from tokens.tasks import maintain_signing_keys


def test_a_worker_rotates_a_signing_key_that_is_due(redis_required, transactional_db, settings):
    old = ensure_active_signing_key()
    SigningKey.objects.filter(pk=old.pk).update(
        created_at=old.created_at - dt.timedelta(days=settings.SIGNING_KEY_ROTATION_DAYS + 1)
    )
    worker = servers.celery_worker_process()
    try:
        maintain_signing_keys.delay()
        deadline = time.monotonic() + 30
        while not SigningKey.objects.filter(state=SigningKeyState.ACTIVE).exclude(pk=old.pk).exists():
            assert time.monotonic() < deadline, "the worker did not rotate the key in time"
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    old.refresh_from_db()
    assert old.state == SigningKeyState.VERIFY_ONLY
    assert SigningKey.objects.filter(state=SigningKeyState.ACTIVE).count() == 1
