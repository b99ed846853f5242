"""Errors a user can act on: gateway down, enrollment refused (pending approval, wrong bootstrap
secret, lost device secret), clock skew. Each names the problem and says what to do."""

from __future__ import annotations

import time

import pytest

from proxyclient import (
    BootstrapSecretInvalid,
    ClockSkewError,
    DevicePendingApproval,
    DeviceSecretRejected,
    GatewayUnreachable,
    ProxyClient,
    ProxySession,
)
from proxyclient.state import DEVICE_SECRET_FILE, TOKENS_FILE
from tests.proxyclient.conftest import client_config, start_gateway
from tests.servers import free_port
from tokens.models import Device
from tokens.revocation import approve_device, reset_device_secret

BOOTSTRAP_SECRET = "enroll-me-0123456789abcdef"


@pytest.fixture
def approval_gateway(transactional_db):
    server = start_gateway(ENROLLMENT_MODE="approval")
    yield server
    server.stop()


@pytest.fixture
def secret_gateway(transactional_db):
    server = start_gateway(ENROLLMENT_MODE="secret", BOOTSTRAP_SECRET=BOOTSTRAP_SECRET)
    yield server
    server.stop()


def test_gateway_down_says_where_it_looked_and_what_to_check(tmp_path, console):
    port = free_port()
    proxy = ProxyClient(client_config(f"http://127.0.0.1:{port}", tmp_path), announce=console)
    with pytest.raises(GatewayUnreachable) as down:
        proxy.start()
    assert console == ["Bootstrapping proxy configuration..."]
    assert down.value.message.startswith(f"Cannot reach the gateway at http://127.0.0.1:{port} (")
    assert down.value.hint == (
        "Check that the gateway is running (curl its /healthz), that PROXY_BOOTSTRAP_URL and "
        "PROXY_HEALTH_URL point at it, and that no firewall or proxy blocks the connection."
    )
    assert down.value.exit_code == 3


def test_pending_device_is_told_to_ask_for_approval_and_enrolls_once_approved(approval_gateway, tmp_path):
    session = ProxySession(client_config(approval_gateway.url, tmp_path))
    with pytest.raises(DevicePendingApproval) as pending:
        session.ensure_token()
    assert str(pending.value) == (
        f"The gateway refused to enroll device {session.device_id}: This device is waiting for an operator's approval. "
        "(device_pending_approval, HTTP 403). "
        "Ask the gateway's operator to approve this device in the admin; the client keeps trying meanwhile."
    )
    approve_device(device=Device.objects.get(device_id=session.device_id), actor="test")
    session.ensure_token()
    session.close()
    assert session.grant.proxy_base_url == approval_gateway.url


def test_wrong_bootstrap_secret_says_which_variable_to_set(secret_gateway, tmp_path):
    wrong = ProxySession(client_config(secret_gateway.url, tmp_path / "wrong", bootstrap_secret="guess"))
    with pytest.raises(BootstrapSecretInvalid) as refused:
        wrong.ensure_token()
    wrong.close()
    assert refused.value.error_code == "bootstrap_secret_invalid"
    assert (
        refused.value.hint
        == "Set PROXY_BOOTSTRAP_SECRET to the enrollment secret your operator gave you (it is missing or wrong)."
    )
    right = ProxySession(client_config(secret_gateway.url, tmp_path / "right", bootstrap_secret=BOOTSTRAP_SECRET))
    right.ensure_token()
    right.close()
    assert right.grant is not None


def test_lost_device_secret_is_refused_until_the_operator_resets_it(gateway, tmp_path):
    session = ProxySession(client_config(gateway.url, tmp_path))
    session.ensure_token()
    session.close()
    (tmp_path / DEVICE_SECRET_FILE).unlink()
    (tmp_path / TOKENS_FILE).unlink()
    reinstalled = ProxySession(client_config(gateway.url, tmp_path))
    with pytest.raises(DeviceSecretRejected) as refused:
        reinstalled.ensure_token()
    assert refused.value.error_code == "device_secret_invalid"
    assert "Ask the operator to reset this device's secret" in refused.value.hint
    reset_device_secret(device=Device.objects.get(device_id=session.device_id), actor="test")
    reinstalled.ensure_token()
    reinstalled.close()
    assert reinstalled.device_id == session.device_id


def test_clock_ahead_of_the_gateway_stops_the_launch_with_the_fix_but_keeps_the_token(gateway, tmp_path, console):
    """The token pair is kept, its times moved onto the local clock: the gateway has already
    spent the refresh token that produced it."""
    skewed_clock = lambda: time.time() + 2 * 3600 + 5 * 60  # noqa: E731
    proxy = ProxyClient(client_config(gateway.url, tmp_path), clock=skewed_clock, announce=console)
    with pytest.raises(ClockSkewError) as skewed:
        proxy.start()
    proxy.stop()
    assert console == ["Bootstrapping proxy configuration...", "Proxy token bootstrapped successfully"]
    assert skewed.value.message.startswith("This computer's clock is 2 h 05 min ahead of the gateway's (local ")
    assert skewed.value.hint == "Turn on automatic date and time (network time) in your system settings, then try again."
    assert skewed.value.exit_code == 5
    grant = proxy.session.grant
    assert 24 * 3600 - 60 < grant.seconds_left(skewed_clock()) <= 24 * 3600 + 1  # the Date header has whole seconds


def test_clock_behind_is_caught_by_the_health_check_too(gateway, tmp_path):
    session = ProxySession(client_config(gateway.url, tmp_path), clock=lambda: time.time() - 600)
    with pytest.raises(ClockSkewError) as skewed:
        session.check_health()
    session.close()
    assert skewed.value.message.startswith("This computer's clock is 10 min behind the gateway's")
