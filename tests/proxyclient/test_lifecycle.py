"""First launch, restart, refresh and its fallback, revocation and tampering, against a live gateway.

The gateway's audit trail (shared test database) is the evidence of what the client did on the
wire: one row per bootstrap, refresh and detected reuse.
"""

from __future__ import annotations

import logging
import threading

import httpx
import pytest

from proxyclient import DeviceBlocked, ProxyClient, ProxySession, TokenSource
from proxyclient.state import TOKENS_FILE
from tests.proxyclient.conftest import audit_kinds, client_config
from tests.support import poll_until
from tokens.models import AuditEvent, AuditKind, Device
from tokens.revocation import block_device, revoke_device_tokens

SEED_FIRST_LAUNCH = [
    "Bootstrapping proxy configuration...",
    "Proxy token bootstrapped successfully",
    "Proxy is healthy and ready",
    "Starting proxy token refresh service",
]
RESTART_FROM_CACHE = [
    "Bootstrapping proxy configuration...",
    "Proxy token loaded from encrypted cache",
    "Proxy is healthy and ready",
    "Starting proxy token refresh service",
]


def launch(server_url, state_dir, console=None, **overrides) -> ProxyClient:
    return ProxyClient(client_config(server_url, state_dir, **overrides), announce=console).start()


def test_first_launch_bootstraps_prints_the_seed_lines_and_starts_refreshing(gateway, tmp_path, console):
    proxy = launch(gateway.url, tmp_path, console)
    try:
        assert console == SEED_FIRST_LAUNCH
        assert proxy.refreshing is True
        assert proxy.base_url == gateway.url
        assert Device.objects.get(device_id=proxy.device_id).app_version == "9.8.7"
        assert audit_kinds(proxy.device_id) == [AuditKind.BOOTSTRAP]
    finally:
        proxy.stop()
    assert proxy.refreshing is False


def test_restart_uses_the_cached_token_and_the_same_device_id(gateway, tmp_path, console):
    first = launch(gateway.url, tmp_path)
    first.stop()
    second = launch(gateway.url, tmp_path, console)
    try:
        assert console == RESTART_FROM_CACHE
        assert second.device_id == first.device_id
        assert second.token() == first.session.grant.wrapper_token
        assert audit_kinds(second.device_id) == [AuditKind.BOOTSTRAP]
    finally:
        second.stop()


def test_refresh_service_refreshes_before_expiry(short_lived_gateway, tmp_path):
    proxy = launch(short_lived_gateway.url, tmp_path)
    try:
        first = proxy.session.grant
        assert 2.5 <= first.lifetime <= 3.6  # the JWT exp has whole seconds
        poll_until(lambda: proxy.session.grant.wrapper_token != first.wrapper_token, 10, "the refresh service to renew the token")
    finally:
        proxy.stop()
    kinds = audit_kinds(proxy.device_id)
    assert kinds[0] == AuditKind.BOOTSTRAP
    assert set(kinds[1:]) == {AuditKind.REFRESH}
    first_refresh = AuditEvent.objects.filter(device_ref=proxy.device_id, kind=AuditKind.REFRESH).order_by("occurred_at").first()
    assert first_refresh.occurred_at.timestamp() < first.expires_at


def test_refused_refresh_falls_back_to_bootstrap(gateway, tmp_path, caplog):
    session = ProxySession(client_config(gateway.url, tmp_path))
    assert session.ensure_token() is TokenSource.BOOTSTRAP
    stolen = session.grant
    assert httpx.post(f"{gateway.url}/refresh", json={"refresh_token": stolen.refresh_token}).status_code == 200
    with caplog.at_level(logging.WARNING, logger="proxyclient"):
        renewed = session.renew_rejected(stolen.wrapper_token)
    session.close()
    assert renewed.wrapper_token != stolen.wrapper_token
    assert audit_kinds(session.device_id) == [
        AuditKind.BOOTSTRAP,
        AuditKind.REFRESH,
        AuditKind.REUSE_DETECTED,
        AuditKind.BOOTSTRAP,
    ]
    assert [record.getMessage().split(":")[0] for record in caplog.records] == ["proxyclient.refresh_failed"]
    assert "(refresh_token_reused, HTTP 401)" in caplog.records[0].getMessage()


def test_revoked_device_bootstraps_again_with_its_device_secret(gateway, tmp_path):
    session = ProxySession(client_config(gateway.url, tmp_path))
    session.ensure_token()
    revoked = session.grant
    revoke_device_tokens(device=Device.objects.get(device_id=session.device_id), actor="test")
    renewed = session.renew_rejected(revoked.wrapper_token)
    session.close()
    assert renewed.wrapper_token != revoked.wrapper_token
    assert audit_kinds(session.device_id) == [AuditKind.BOOTSTRAP, AuditKind.DEVICE_REVOKED, AuditKind.BOOTSTRAP]


def test_blocked_device_gets_an_error_saying_who_can_help(gateway, tmp_path):
    session = ProxySession(client_config(gateway.url, tmp_path))
    session.ensure_token()
    block_device(device=Device.objects.get(device_id=session.device_id), actor="test")
    with pytest.raises(DeviceBlocked) as refused:
        session.renew_rejected(session.grant.wrapper_token)
    session.close()
    assert str(refused.value) == (
        f"The gateway refused to enroll device {session.device_id}: This device has been blocked by an operator. "
        "(device_blocked, HTTP 403). An operator blocked this device; only they can unblock it."
    )
    assert refused.value.exit_code == 4


def test_tampered_cache_is_discarded_and_the_device_bootstraps_again(gateway, tmp_path, console):
    first = launch(gateway.url, tmp_path)
    first.stop()
    cache = tmp_path / TOKENS_FILE
    sealed = bytearray(cache.read_bytes())
    sealed[-1] ^= 0x01
    cache.write_bytes(bytes(sealed))
    second = launch(gateway.url, tmp_path, console)
    try:
        assert console == SEED_FIRST_LAUNCH
        assert second.device_id == first.device_id
        assert second.token() != first.session.grant.wrapper_token
        assert audit_kinds(second.device_id) == [AuditKind.BOOTSTRAP, AuditKind.BOOTSTRAP]
    finally:
        second.stop()


def test_another_devices_cache_is_discarded(gateway, tmp_path, console):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    launch(gateway.url, mine).stop()
    other = launch(gateway.url, theirs)
    other.stop()
    (mine / TOKENS_FILE).write_bytes((theirs / TOKENS_FILE).read_bytes())
    again = launch(gateway.url, mine, console)
    try:
        assert console == SEED_FIRST_LAUNCH
        assert again.token() != other.session.grant.wrapper_token
    finally:
        again.stop()


def test_concurrent_renewals_share_one_refresh(gateway, tmp_path):
    """Two sessions on one state directory (the app and Claude Code's helper) renewing at once
    send the refresh token once: no reuse is detected."""
    sessions = [ProxySession(client_config(gateway.url, tmp_path)) for _ in range(2)]
    assert sessions[0].ensure_token() is TokenSource.BOOTSTRAP
    assert sessions[1].ensure_token() is TokenSource.CACHE
    stale = sessions[0].grant.wrapper_token
    results: list[str] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.renew_rejected(stale).wrapper_token)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for session in sessions:
        session.close()
    assert len(results) == 2 and results[0] == results[1] != stale
    assert audit_kinds(sessions[0].device_id) == [AuditKind.BOOTSTRAP, AuditKind.REFRESH]
