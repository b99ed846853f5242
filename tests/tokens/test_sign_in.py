"""People sign in on their devices with the company's identity provider (tokens.sign_in): the device
grant and the authorization code flow with PKCE, against the test provider on 127.0.0.1."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from tests.oidc_provider import Grant
from tests.tokens.client import bootstrap, error_of, jwt_parts, refresh
from tests.tokens.sign_in_client import LOOPBACK, device_sign_in, pkce_sign_in, poll, start
from tokens.identity_provider import JWKS_REFETCH_SECONDS, provider_cache
from tokens.models import AuditEvent, AuditKind, Device, GroupOrganization, Organization, Person

pytestmark = pytest.mark.django_db


def test_device_grant_start_answers_what_the_person_must_see(people_provider):
    body = start(Client()).json()
    grant = people_provider.device_grants[body["user_code"]]
    assert body == {
        "sign_in": body["sign_in"],
        "flow": "device",
        "expires_in": 600,
        "verification_uri": f"{people_provider.issuer}/device",
        "verification_uri_complete": f"{people_provider.issuer}/device?user_code={body['user_code']}",
        "user_code": grant.user_code,
        "interval": 5,
    }
    assert grant.scope == "openid email profile offline_access"


def test_polling_before_the_person_approved_answers_pending(people_provider):
    client = Client()
    handle = start(client).json()["sign_in"]
    response = poll(client, handle)
    assert (response.status_code, response.json()) == (202, {"status": "authorization_pending", "interval": 5})


def test_the_gateway_asks_the_provider_at_most_once_per_interval(people_provider):
    client = Client()
    handle = start(client).json()["sign_in"]
    for _ in range(3):
        assert poll(client, handle).status_code == 202
    polls = [form for form in people_provider.token_requests if form["grant_type"].endswith("device_code")]
    assert len(polls) == 1


def test_an_approved_device_grant_enrolls_the_device_as_the_persons(people_provider):
    response = device_sign_in(Client(), people_provider)
    assert response.status_code == 200, response.content
    body = response.json()
    device = Device.objects.select_related("person").get(device_id="laptop-alice")
    assert (device.person.email, device.person.subject, device.person.display_name) == (
        "alice@example.com",
        "alice-0001",
        "Alice",
    )
    assert device.status == "active" and device.provider_refresh_token != ""
    assert body["device_id"] == "laptop-alice" and len(body["device_secret"]) >= 32
    assert jwt_parts(body["wrapper_token"])[1]["sub"] == "laptop-alice"
    assert AuditEvent.objects.filter(kind=AuditKind.PERSON_SIGNED_IN, person=device.person).count() == 1


def test_the_signed_in_device_refreshes_silently(people_provider):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    response = refresh(client, body["refresh_token"])
    assert response.status_code == 200, response.content


def test_a_second_device_of_the_same_person_is_the_same_person(people_provider):
    client = Client()
    device_sign_in(client, people_provider, "laptop-alice")
    device_sign_in(client, people_provider, "desktop-alice")
    person = Person.objects.get()
    assert sorted(person.devices.values_list("device_id", flat=True)) == ["desktop-alice", "laptop-alice"]


def test_the_persons_group_places_the_device_in_the_mapped_organization(people_provider):
    engineering = Organization.objects.create(name="Engineering")
    GroupOrganization.objects.create(group="llm-gateway-operators", organization=engineering)
    device_sign_in(Client(), people_provider)
    assert Device.objects.get(device_id="laptop-alice").organization == engineering
    assert Person.objects.get().organization == engineering


def test_a_declined_sign_in_is_refused(people_provider):
    client = Client()
    handle = start(client).json()["sign_in"]
    people_provider.deny()
    assert error_of(poll(client, handle)) == (403, "permission_error", "sign_in_denied")
    assert not Device.objects.exists()


def test_a_finished_sign_in_cannot_be_polled_again(people_provider):
    client = Client()
    started = start(client).json()
    people_provider.approve(started["user_code"])
    assert poll(client, started["sign_in"]).status_code == 200
    assert error_of(poll(client, started["sign_in"])) == (400, "invalid_request_error", "sign_in_expired")


def test_pkce_sign_in_enrolls_the_device(people_provider):
    people_provider.device_grant_offered = False
    response = pkce_sign_in(Client())
    assert response.status_code == 200, response.content
    assert Device.objects.get(device_id="laptop-alice").person.email == "alice@example.com"


def test_pkce_start_sends_the_browser_with_a_s256_challenge_and_the_loopback_redirect(people_provider):
    people_provider.device_grant_offered = False
    body = start(Client(), redirect_uri=LOOPBACK).json()
    assert body["flow"] == "pkce"
    assert body["authorization_url"].startswith(
        f"{people_provider.issuer}/authorize?response_type=code&client_id=gateway-devices"
    )
    assert "code_challenge_method=S256" in body["authorization_url"]


def test_without_a_device_grant_a_start_without_redirect_uri_says_what_is_missing(people_provider):
    people_provider.device_grant_offered = False
    response = start(Client())
    assert error_of(response) == (400, "invalid_request_error", "invalid_request")
    assert response.json()["error"]["message"].startswith("redirect_uri: required for the pkce flow")


def test_a_device_that_signed_in_no_longer_bootstraps_with_its_secret(people_provider):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    response = bootstrap(
        client,
        "laptop-alice",
        device_secret=body["device_secret"],
        headers={"x-bootstrap-secret": "machines-bootstrap-secret-0123456789"},
    )
    assert error_of(response) == (403, "permission_error", "sign_in_required")


def test_machines_still_bootstrap_with_the_secret_beside_sign_in(people_provider):
    response = bootstrap(Client(), "build-01", headers={"x-bootstrap-secret": "machines-bootstrap-secret-0123456789"})
    assert response.status_code == 200, response.content


def test_with_oidc_alone_bootstrap_asks_for_a_sign_in(people_provider, settings):
    settings.ENROLLMENT_MODE = "oidc"
    assert error_of(bootstrap(Client(), "build-01")) == (403, "permission_error", "sign_in_required")


def test_sign_in_is_refused_when_the_modes_do_not_include_oidc(people_provider, settings):
    settings.ENROLLMENT_MODE = "secret"
    assert error_of(start(Client())) == (403, "permission_error", "sign_in_not_enabled")
    assert error_of(poll(Client(), "x" * 43)) == (403, "permission_error", "sign_in_not_enabled")


def test_a_rotated_provider_key_is_fetched_when_a_token_names_it(people_provider, monkeypatch):
    client = Client()
    assert device_sign_in(client, people_provider, "laptop-alice").status_code == 200
    people_provider.rotate_keys()
    later = time.monotonic() + JWKS_REFETCH_SECONDS
    monkeypatch.setattr(provider_cache, "clock", lambda: later)
    response = device_sign_in(client, people_provider, "desktop-alice")
    assert response.status_code == 200, response.content
    assert jwt_parts(people_provider.id_token(Grant("gateway-devices", "", None, None, {})))[0]["kid"] == "key-2"


def test_an_unknown_key_refetches_the_provider_keys_at_most_once_per_interval(people_provider):
    client = Client()
    assert device_sign_in(client, people_provider, "laptop-alice").status_code == 200
    people_provider.rotate_keys()
    response = device_sign_in(client, people_provider, "desktop-alice")
    assert error_of(response) == (401, "authentication_error", "id_token_rejected")


def test_each_refresh_renews_the_provider_session_with_its_rotated_refresh_token(people_provider):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    for _ in range(3):
        response = refresh(client, body["refresh_token"])
        assert response.status_code == 200, response.content
        body = response.json()
    renewals = [form for form in people_provider.token_requests if form["grant_type"] == "refresh_token"]
    assert len(renewals) == 3 and len({form["refresh_token"] for form in renewals}) == 3


def test_a_device_pending_approval_is_approved_by_its_persons_sign_in(people_provider):
    Device.objects.create(device_id="laptop-alice", status="pending")
    response = device_sign_in(Client(), people_provider)
    assert response.status_code == 200, response.content
    assert Device.objects.get(device_id="laptop-alice").status == "active"
