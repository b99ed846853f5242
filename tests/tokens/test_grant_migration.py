"""Migrations 0002-0003: tokens issued before grants existed are paired as they were issued, and a token
exchanged or revoked alone marks its sibling, so an old pair cannot be exchanged once per token."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("tokens", "0001_initial")]
AFTER = [("tokens", "0003_pair_existing_tokens")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_old_pairs_become_grants_carrying_their_use_and_revocation():
    apps = _migrate(BEFORE)
    try:
        Device = apps.get_model("tokens", "Device")
        IssuedToken = apps.get_model("tokens", "IssuedToken")
        device = Device.objects.create(device_id="old-laptop")
        now = timezone.now()
        later = now + dt.timedelta(hours=1)
        rows = {
            "a1": ("access", now, None, None),
            "r1": ("refresh", now, now, None),
            "a2": ("access", later, None, later),
            "r2": ("refresh", later, None, None),
        }
        for jti, (kind, issued_at, used_at, revoked_at) in rows.items():
            IssuedToken.objects.create(
                jti=jti,
                device=device,
                kind=kind,
                family="fam",
                kid="k",
                issued_at=issued_at,
                expires_at=later + dt.timedelta(days=1),
                used_at=used_at,
                revoked_at=revoked_at,
            )

        apps = _migrate(AFTER)
        tokens = {token.jti: token for token in apps.get_model("tokens", "IssuedToken").objects.all()}
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    assert tokens["a1"].grant == tokens["r1"].grant != tokens["a2"].grant == tokens["r2"].grant
    assert (tokens["a1"].used_at, tokens["a1"].revoked_at) == (now, None)
    assert (tokens["r2"].used_at, tokens["r2"].revoked_at) == (None, later)
