"""Revocation across real processes sharing PostgreSQL/SQLite and Redis: a family revoked through one
gateway process is refused by every other process within 5 seconds, including one whose cache
was warm (this test process plays that one, through authenticate_wrapper_token)."""

from __future__ import annotations

import time

import httpx
from asgiref.sync import async_to_sync

from proxyproject.lib.errors import TokenRevoked
from tokens.authentication import authenticate_wrapper_token

authenticate = async_to_sync(authenticate_wrapper_token)


def _error_code(response: httpx.Response) -> str:
    return response.json()["error"]["details"]["error_code"]


def test_family_revoked_through_one_process_is_refused_everywhere_within_5_seconds(two_gateways, settings):
    settings.REVOCATION_CACHE_SECONDS = 2.0
    _, first, second = two_gateways
    enrolled = httpx.post(first.url + "/bootstrap", json={"device_id": "live-dev", "app_version": "1.0"}, timeout=10).json()
    rotated = httpx.post(first.url + "/refresh", json={"refresh_token": enrolled["refresh_token"]}, timeout=10).json()
    assert authenticate(rotated["wrapper_token"]).device_id == "live-dev"  # this process's cache is now warm

    reused = httpx.post(second.url + "/refresh", json={"refresh_token": enrolled["refresh_token"]}, timeout=10)
    assert (reused.status_code, _error_code(reused)) == (401, "refresh_token_reused")
    revoked_at = time.monotonic()

    deadline = revoked_at + 5.0
    refused_after = None
    while time.monotonic() < deadline:
        try:
            authenticate(rotated["wrapper_token"])
        except TokenRevoked:
            refused_after = time.monotonic() - revoked_at
            break
        time.sleep(0.05)
    assert refused_after is not None, "the revoked token was still accepted 5 s after the revocation"
    again = httpx.post(first.url + "/refresh", json={"refresh_token": rotated["refresh_token"]}, timeout=10)
    assert (again.status_code, _error_code(again)) == (401, "token_revoked")
