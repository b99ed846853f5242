"""The operators' admin for devices, organizations, tokens, keys and the audit trail."""

from __future__ import annotations

import hashlib
import re

import pytest
from asgiref.sync import async_to_sync

from proxyproject.lib.errors import DeviceBlocked, TokenRevoked
from tests.tokens.client import bootstrap, error_of
from tokens.authentication import authenticate_wrapper_token
from tokens.models import AuditEvent, AuditKind, Device, DeviceStatus, IssuedToken, OperatorApiKey, Organization, SigningKey

pytestmark = pytest.mark.django_db(transaction=True)

authenticate = async_to_sync(authenticate_wrapper_token)


@pytest.fixture
def admin_client(operator_client):
    return operator_client


def _act(admin_client, action: str, *devices: Device):
    return admin_client.post("/admin/tokens/device/", {"action": action, "_selected_action": [device.pk for device in devices]})


def test_device_list_shows_status_org_version_and_last_seen(admin_client, client):
    organization = Organization.objects.create(name="Acme Corp")
    Device.objects.create(device_id="dev-listed", organization=organization, app_version="3.1.4", status=DeviceStatus.PENDING)
    html = admin_client.get("/admin/tokens/device/").content.decode()
    assert "dev-listed" in html and "Acme Corp" in html and "3.1.4" in html and "Pending approval" in html
    assert "Last seen at" in html


def test_device_list_filters_and_searches(admin_client, blocked_device, lone_device):
    blocked = admin_client.get("/admin/tokens/device/?status__exact=blocked").content.decode()
    assert "laptop-blocked" in blocked and "laptop-lone" not in blocked
    searched = admin_client.get("/admin/tokens/device/?q=lone").content.decode()
    assert "laptop-lone" in searched and "laptop-blocked" not in searched


def test_block_action_refuses_the_device_at_once_and_is_audited(admin_client, client, enrolled):
    device = Device.objects.get(device_id="laptop-ada")
    authenticate(enrolled["wrapper_token"])

    assert _act(admin_client, "block", device).status_code == 302

    device.refresh_from_db()
    assert device.status == DeviceStatus.BLOCKED
    with pytest.raises(DeviceBlocked):
        authenticate(enrolled["wrapper_token"])
    event = AuditEvent.objects.get(kind=AuditKind.DEVICE_BLOCKED)
    assert (event.actor, event.device_ref, event.detail) == ("user:ops", "laptop-ada", {"revoked_tokens": 2})


def test_revoke_tokens_action_revokes_every_token_of_the_device(admin_client, enrolled):
    authenticate(enrolled["wrapper_token"])
    _act(admin_client, "revoke_tokens", Device.objects.get(device_id="laptop-ada"))
    with pytest.raises(TokenRevoked):
        authenticate(enrolled["wrapper_token"])
    assert IssuedToken.objects.filter(revoked_at__isnull=True).count() == 0
    assert AuditEvent.objects.get(kind=AuditKind.DEVICE_REVOKED).actor == "user:ops"


def test_reset_secret_action_lets_the_next_bootstrap_set_a_new_secret(admin_client, client, enrolled):
    _act(admin_client, "reset_secret", Device.objects.get(device_id="laptop-ada"))
    client.logout()
    response = bootstrap(client, "laptop-ada")
    assert response.status_code == 200
    assert response.json()["device_secret"] != enrolled["device_secret"]
    assert AuditEvent.objects.get(kind=AuditKind.DEVICE_SECRET_RESET).actor == "user:ops"


def test_status_cannot_be_edited_in_the_form(admin_client):
    device = Device.objects.create(device_id="dev-form", status=DeviceStatus.BLOCKED)
    form = {"device_id": "dev-form", "status": "active", "user_label": "x", "app_version": ""}
    admin_client.post(f"/admin/tokens/device/{device.pk}/change/", form)
    device.refresh_from_db()
    assert (device.status, device.user_label) == (DeviceStatus.BLOCKED, "x")


def _device_form(device: Device, **policy) -> dict:
    form = {"device_id": device.device_id, "organization": device.organization_id or "", "user_label": "", "app_version": ""}
    policy_fields = (
        "allowed_models",
        "requests_per_window",
        "window_ms",
        "tokens_per_minute",
        "daily_spend_cap_usd",
        "monthly_spend_cap_usd",
    )
    form.update({field: "" for field in policy_fields})
    form.update(policy)
    return form


def test_editing_device_policy_takes_effect_on_the_next_request(admin_client, enrolled):
    device = Device.objects.get(device_id="laptop-ada")
    assert authenticate(enrolled["wrapper_token"]).policy.requests_per_window == 100

    response = admin_client.post(
        f"/admin/tokens/device/{device.pk}/change/",
        _device_form(device, requests_per_window="7", allowed_models="claude-haiku-*", daily_spend_cap_usd="2.50"),
    )
    assert response.status_code == 302

    policy = authenticate(enrolled["wrapper_token"]).policy
    assert (policy.requests_per_window, policy.allowed_models) == (7, ("claude-haiku-*",))
    assert str(policy.device_daily_cap_usd) == "2.50"


def test_editing_organization_policy_reaches_its_devices(admin_client, client):
    organization = Organization.objects.create(name="Acme")
    Device.objects.create(device_id="dev-org", organization=organization)
    token = bootstrap(client, "dev-org").json()["wrapper_token"]
    assert authenticate(token).policy.tokens_per_minute == 0

    form = {
        "name": "Acme",
        "allowed_models": "",
        "requests_per_window": "",
        "window_ms": "",
        "tokens_per_minute": "1234",
        "daily_spend_cap_usd": "",
        "monthly_spend_cap_usd": "99.00",
    }
    assert admin_client.post(f"/admin/tokens/organization/{organization.pk}/change/", form).status_code == 302

    policy = authenticate(token).policy
    assert (policy.tokens_per_minute, str(policy.org_monthly_cap_usd)) == (1234, "99.00")


def test_organization_revoke_action(admin_client, client):
    organization = Organization.objects.create(name="Acme")
    Device.objects.create(device_id="dev-org", organization=organization)
    token = bootstrap(client, "dev-org").json()["wrapper_token"]
    admin_client.post("/admin/tokens/organization/", {"action": "revoke_tokens", "_selected_action": [organization.pk]})
    with pytest.raises(TokenRevoked):
        authenticate(token)
    event = AuditEvent.objects.get(kind=AuditKind.ORG_REVOKED)
    assert (event.organization_id, event.actor, event.detail["revoked_tokens"]) == (organization.pk, "user:ops", 2)


def test_issued_token_revoke_action(admin_client, enrolled):
    access = IssuedToken.objects.get(kind="access")
    admin_client.post("/admin/tokens/issuedtoken/", {"action": "revoke", "_selected_action": [access.pk]})
    with pytest.raises(TokenRevoked):
        authenticate(enrolled["wrapper_token"])


def test_audit_trail_is_read_only(admin_client, enrolled):
    event = AuditEvent.objects.get(kind=AuditKind.BOOTSTRAP)
    assert admin_client.get("/admin/tokens/auditevent/").status_code == 200
    assert "laptop-ada" in admin_client.get("/admin/tokens/auditevent/").content.decode()
    assert admin_client.get("/admin/tokens/auditevent/add/").status_code == 403
    assert admin_client.post(f"/admin/tokens/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    page = admin_client.get(f"/admin/tokens/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()


def test_signing_key_admin_never_shows_the_secret(admin_client, enrolled, settings):
    key = SigningKey.objects.get()
    page = admin_client.get(f"/admin/tokens/signingkey/{key.pk}/change/").content.decode()
    assert key.kid in page
    assert key.encrypted_secret not in page and settings.JWT_SECRET not in page


def test_operator_key_is_shown_once_and_only_its_hash_stored(admin_client):
    response = admin_client.post("/admin/tokens/operatorapikey/add/", {"name": "prometheus"})

    assert response.status_code == 200
    assert "no-store" in response["cache-control"]
    secret = re.search(r'id="operator-key-secret"[^>]*>([^<]+)<', response.content.decode()).group(1)
    key = OperatorApiKey.objects.get(name="prometheus")
    assert key.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert key.prefix == secret[:12]
    assert key.created_by.username == "ops"
    assert secret not in admin_client.get(f"/admin/tokens/operatorapikey/{key.pk}/change/").content.decode()
    assert secret not in admin_client.get("/admin/tokens/operatorapikey/").content.decode()


def test_admin_needs_a_login(client):
    assert client.get("/admin/tokens/device/").status_code == 302
    assert error_of(bootstrap(client, "x" * 129))[0] == 400


def test_admin_pages_render(admin_client, enrolled):
    device = Device.objects.get(device_id="laptop-ada")
    for url in (
        "/admin/tokens/device/add/",
        f"/admin/tokens/device/{device.pk}/change/",
        "/admin/tokens/organization/",
        "/admin/tokens/organization/add/",
        "/admin/tokens/operatorapikey/add/",
        "/admin/tokens/signingkey/",
        f"/admin/tokens/issuedtoken/?device__id__exact={device.pk}",
    ):
        assert admin_client.get(url).status_code == 200, url
    tokens_page = admin_client.get(f"/admin/tokens/issuedtoken/?device__id__exact={device.pk}").content.decode()
    assert tokens_page.count("laptop-ada") >= 2


def test_an_operator_key_created_for_an_organization_keeps_that_scope(admin_client):
    acme = Organization.objects.create(name="Acme")
    response = admin_client.post("/admin/tokens/operatorapikey/add/", {"name": "acme-ops", "organization": acme.pk})
    assert response.status_code == 200
    key = OperatorApiKey.objects.get(name="acme-ops")
    assert key.organization == acme
    admin_client.post(f"/admin/tokens/operatorapikey/{key.pk}/change/", {"name": "acme-ops", "organization": ""})
    key.refresh_from_db()
    assert key.organization == acme
    assert "Organization: Acme" in admin_client.get("/admin/tokens/operatorapikey/").content.decode()


def test_unblock_acts_on_blocked_devices_and_approve_only_on_pending_ones(admin_client, enrolled):
    device = Device.objects.get(device_id="laptop-ada")
    changelist = "/admin/tokens/device/"
    admin_client.post(changelist, {"action": "approve", "_selected_action": [device.pk]})
    assert not AuditEvent.objects.filter(kind=AuditKind.DEVICE_APPROVED).exists()
    admin_client.post(changelist, {"action": "block", "_selected_action": [device.pk]})
    response = admin_client.post(changelist, {"action": "unblock", "_selected_action": [device.pk]}, follow=True)
    assert "1 device unblocked." in response.content.decode()
    device.refresh_from_db()
    assert device.status == DeviceStatus.ACTIVE
    assert AuditEvent.objects.filter(kind=AuditKind.DEVICE_UNBLOCKED).count() == 1
