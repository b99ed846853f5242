"""ENROLLMENT_MODE open / secret / approval, and blocked devices on every endpoint."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.tokens.client import bootstrap, error_of, refresh
from tokens.device_secrets import device_secret_matches
from tokens.models import AuditEvent, AuditKind, Device, DeviceStatus
from tokens.revocation import block_device

pytestmark = pytest.mark.django_db

BOOTSTRAP_SECRET = "enroll-secret-for-tests-0123456789"


@pytest.fixture
def secret_mode(settings):
    settings.ENROLLMENT_MODE = "secret"
    settings.BOOTSTRAP_SECRET = BOOTSTRAP_SECRET


@pytest.fixture
def approval_mode(settings):
    settings.ENROLLMENT_MODE = "approval"


def test_open_mode_enrolls_anyone(client):
    assert bootstrap(client, "anyone").status_code == 200


@pytest.mark.parametrize("presented", [None, "", "wrong-secret", BOOTSTRAP_SECRET[:-1], BOOTSTRAP_SECRET + "x"])
def test_secret_mode_refuses_a_missing_or_wrong_bootstrap_secret(client, secret_mode, presented):
    headers = {} if presented is None else {"x-bootstrap-secret": presented}
    response = bootstrap(client, "dev-secret", headers=headers)
    assert error_of(response) == (401, "authentication_error", "bootstrap_secret_invalid")
    assert not Device.objects.filter(device_id="dev-secret").exists()


def test_secret_mode_enrolls_with_the_bootstrap_secret(client, secret_mode):
    response = bootstrap(client, "dev-secret", headers={"x-bootstrap-secret": BOOTSTRAP_SECRET})
    assert response.status_code == 200
    assert Device.objects.get(device_id="dev-secret").status == DeviceStatus.ACTIVE


def test_secret_mode_without_a_configured_secret_refuses_everyone(client, settings):
    settings.ENROLLMENT_MODE = "secret"
    settings.BOOTSTRAP_SECRET = ""
    response = bootstrap(client, "dev-secret", headers={"x-bootstrap-secret": ""})
    assert error_of(response)[2] == "bootstrap_secret_invalid"


def test_approval_mode_creates_a_pending_device_and_hands_over_its_secret(client, approval_mode):
    response = bootstrap(client, "dev-wait")

    assert error_of(response) == (403, "permission_error", "device_pending_approval")
    secret = response.json()["error"]["details"]["device_secret"]
    assert len(secret) >= 32
    device = Device.objects.get(device_id="dev-wait")
    assert device.status == DeviceStatus.PENDING
    # Polling again with the secret: still pending, and the secret is not repeated.
    again = bootstrap(client, "dev-wait", device_secret=secret)
    assert error_of(again)[2] == "device_pending_approval"
    assert again.json()["error"]["details"] == {"error_code": "device_pending_approval"}
    # Without the secret: the answer of a first enrollment, whose secret is a decoy that proves nothing.
    stranger = bootstrap(client, "dev-wait")
    assert error_of(stranger)[2] == "device_pending_approval"
    decoy = stranger.json()["error"]["details"]["device_secret"]
    assert decoy != secret
    assert error_of(bootstrap(client, "dev-wait", device_secret=decoy))[2] == "device_pending_approval"
    assert not device_secret_matches(decoy, Device.objects.get(device_id="dev-wait").secret_hash)


def test_approved_device_gets_tokens_on_its_next_bootstrap(client, approval_mode):
    secret = bootstrap(client, "dev-wait").json()["error"]["details"]["device_secret"]
    operator = get_user_model().objects.create_superuser("ops", password="ops-password-123")
    client.force_login(operator)
    response = client.post(
        "/admin/tokens/device/",
        {"action": "approve", "_selected_action": [Device.objects.get(device_id="dev-wait").pk]},
    )
    assert response.status_code == 302
    client.logout()

    approved = bootstrap(client, "dev-wait", device_secret=secret)
    assert approved.status_code == 200
    assert "device_secret" not in approved.json()
    event = AuditEvent.objects.get(kind=AuditKind.DEVICE_APPROVED)
    assert (event.device_ref, event.actor, event.detail) == ("dev-wait", "user:ops", {"previous_status": "pending"})


def test_approval_mode_lets_already_active_devices_in(client, settings):
    first = bootstrap(client, "dev-before").json()
    settings.ENROLLMENT_MODE = "approval"
    assert bootstrap(client, "dev-before", device_secret=first["device_secret"]).status_code == 200


def test_blocked_device_is_refused_on_bootstrap_and_refresh(client, enrolled):
    block_device(device=Device.objects.get(device_id="laptop-ada"), actor="test")

    blocked_bootstrap = bootstrap(client, "laptop-ada", device_secret=enrolled["device_secret"])
    assert error_of(blocked_bootstrap) == (403, "permission_error", "device_blocked")
    assert blocked_bootstrap["x-should-retry"] == "false"
    assert error_of(refresh(client, enrolled["refresh_token"])) == (403, "permission_error", "device_blocked")
    # Even someone without the secret learns only that the device is blocked.
    assert error_of(bootstrap(client, "laptop-ada"))[2] == "device_blocked"
