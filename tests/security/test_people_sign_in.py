"""People signing in on devices (/auth/oidc/start, /auth/oidc/poll): every refusal a relying party
owes, each against a test provider that misbehaves that way, and every way around a person's block
or a provider's disabling of the account. A refused sign-in enrolls nothing and is in the audit trail."""

from __future__ import annotations

import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from proxyproject.lib.errors import TokenRevoked
from tests.oidc_provider import SigningKey
from tests.tokens.client import bootstrap, error_of, refresh
from tests.tokens.sign_in_client import LOOPBACK, browser_redirect, device_sign_in, pkce_sign_in, poll, start
from tokens.authentication import authenticate_wrapper_token
from tokens.models import AuditEvent, AuditKind, Device, Person
from tokens.revocation import block_device, block_person

pytestmark = pytest.mark.django_db
REJECTED = (401, "authentication_error", "id_token_rejected")


@pytest.fixture(autouse=True)
def isolated(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000


def _refused_and_nothing_enrolled(response, expected=REJECTED) -> str:
    assert error_of(response) == expected
    assert not Device.objects.exists()
    event = AuditEvent.objects.get(kind=AuditKind.SIGN_IN_REFUSED)
    return event.detail["reason"]


def test_id_token_for_another_client_is_refused(people_provider):
    people_provider.audience = "another-client"
    reason = _refused_and_nothing_enrolled(device_sign_in(Client(), people_provider))
    assert reason == "id_token_rejected: The ID token is for another client."


def test_id_token_from_another_issuer_is_refused(people_provider):
    people_provider.issuer_claim = "https://evil.example"
    reason = _refused_and_nothing_enrolled(device_sign_in(Client(), people_provider))
    assert reason == "id_token_rejected: The ID token is from another issuer."


def test_expired_id_token_is_refused(people_provider):
    people_provider.lifetime = -120
    reason = _refused_and_nothing_enrolled(device_sign_in(Client(), people_provider))
    assert reason == "id_token_rejected: The ID token has expired."


def test_replayed_nonce_is_refused_in_the_pkce_flow(people_provider):
    client = Client()
    people_provider.device_grant_offered = False
    first = start(client, flow="pkce", redirect_uri=LOOPBACK).json()
    browser_redirect(first["authorization_url"])
    people_provider.nonce_override = people_provider.nonces_seen[0]  # the ID token of the first sign-in, replayed
    reason = _refused_and_nothing_enrolled(pkce_sign_in(client))
    assert reason == "id_token_rejected: The ID token's nonce is not this sign-in's."


def test_replayed_nonce_is_refused_in_the_device_grant(people_provider):
    client = Client()
    start(client)
    people_provider.nonce_override = people_provider.nonces_seen[0]
    reason = _refused_and_nothing_enrolled(device_sign_in(client, people_provider))
    assert reason == "id_token_rejected: The ID token's nonce is not this sign-in's."


def test_pkce_id_token_without_nonce_is_refused(people_provider, monkeypatch):
    people_provider.device_grant_offered = False
    original = people_provider.authorize
    monkeypatch.setattr(people_provider, "authorize", lambda query: original({k: v for k, v in query.items() if k != "nonce"}))
    reason = _refused_and_nothing_enrolled(pkce_sign_in(Client()))
    assert reason == "id_token_rejected: The ID token's nonce is not this sign-in's."


def test_id_token_signed_by_an_unpublished_key_is_refused(people_provider):
    people_provider.unpublished_key = SigningKey("key-forged")
    reason = _refused_and_nothing_enrolled(device_sign_in(Client(), people_provider))
    assert reason == "id_token_rejected: The ID token is signed by a key the provider does not publish."


@pytest.mark.parametrize("algorithm", ["none", "HS256"])
def test_id_token_without_an_asymmetric_signature_is_refused(people_provider, algorithm):
    people_provider.forged_algorithm = algorithm
    reason = _refused_and_nothing_enrolled(device_sign_in(Client(), people_provider))
    assert reason == f"id_token_rejected: The ID token's algorithm {algorithm!r} is not accepted."


def test_sign_in_on_a_blocked_device_is_refused(people_provider):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    block_device(device=Device.objects.get(device_id="laptop-alice"), actor="test")
    response = device_sign_in(client, people_provider, device_secret=body["device_secret"])
    assert error_of(response) == (403, "permission_error", "device_blocked")


def test_unverified_email_is_refused(people_provider):
    people_provider.person["email_verified"] = False
    reason = _refused_and_nothing_enrolled(device_sign_in(Client(), people_provider))
    assert reason == "id_token_rejected: The person's email is not verified at the provider."


def test_declined_sign_in_is_refused(people_provider):
    client = Client()
    handle = start(client).json()["sign_in"]
    people_provider.deny()
    _refused_and_nothing_enrolled(poll(client, handle), (403, "permission_error", "sign_in_denied"))


def test_guessed_sign_in_handle_is_refused(people_provider):
    start(Client())
    assert error_of(poll(Client(), "guessed-handle-0000000000000000000000000000")) == (
        400,
        "invalid_request_error",
        "sign_in_expired",
    )


def test_pkce_state_from_another_sign_in_is_refused_and_the_code_is_not_exchanged(people_provider):
    client = Client()
    people_provider.device_grant_offered = False
    started = start(client, flow="pkce", redirect_uri=LOOPBACK).json()
    redirect = browser_redirect(started["authorization_url"])
    response = poll(client, started["sign_in"], code=redirect["code"], state="someone-elses-state")
    _refused_and_nothing_enrolled(response, (400, "invalid_request_error", "sign_in_expired"))
    assert not [form for form in people_provider.token_requests if form.get("grant_type") == "authorization_code"]


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        "http://localhost:53682/callback",
        "http://127.0.0.1/callback",
        "http://user@127.0.0.1:53682/callback",
        "http://127.0.0.1:53682/callback?next=https://evil.example",
        "http://10.0.0.5:53682/callback",
    ],
)
def test_redirect_uri_other_than_a_loopback_listener_is_refused(people_provider, redirect_uri):
    people_provider.device_grant_offered = False
    response = start(Client(), flow="pkce", redirect_uri=redirect_uri)
    assert error_of(response) == (400, "invalid_request_error", "invalid_request")
    assert response.json()["error"]["message"].startswith("redirect_uri: must be http://127.0.0.1")


def test_sign_in_on_someone_elses_device_id_without_its_secret_is_refused(people_provider):
    client = Client()
    assert device_sign_in(client, people_provider, "laptop-alice").status_code == 200
    people_provider.person = {**people_provider.person, "sub": "mallory-0002", "email": "mallory@example.com"}
    response = device_sign_in(client, people_provider, "laptop-alice")
    assert error_of(response) == (401, "authentication_error", "device_secret_invalid")
    assert Device.objects.get(device_id="laptop-alice").person.email == "alice@example.com"


def test_sign_in_when_the_modes_do_not_include_oidc_is_refused(people_provider, settings):
    settings.ENROLLMENT_MODE = "approval"
    assert error_of(start(Client())) == (403, "permission_error", "sign_in_not_enabled")


def test_sign_in_flood_from_one_address_is_rate_limited(people_provider, settings):
    settings.ENROLLMENT_RATE_LIMIT_MAX = 2
    client = Client()
    assert [start(client).status_code for _ in range(2)] == [200, 200]
    assert error_of(start(client)) == (429, "rate_limit_error", "enrollment_rate_limited")


def test_account_disabled_at_the_provider_loses_access_at_the_next_refresh(people_provider):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    people_provider.disable_account()
    assert error_of(refresh(client, body["refresh_token"])) == (403, "permission_error", "sign_in_required")
    with pytest.raises(TokenRevoked):
        async_to_sync(authenticate_wrapper_token)(body["wrapper_token"])
    assert Device.objects.get().provider_refresh_token == ""
    assert Person.objects.get().active is False


def test_account_the_provider_refuses_at_userinfo_loses_access_on_every_device_at_the_next_refresh(people_provider):
    """A provider that keeps renewing a disabled account's refresh tokens but refuses its access
    tokens at the userinfo endpoint (401 invalid_token)."""
    client = Client()
    laptop = device_sign_in(client, people_provider, "laptop-alice").json()
    desktop = device_sign_in(client, people_provider, "desktop-alice").json()
    people_provider.disable_account("userinfo")
    response = refresh(client, laptop["refresh_token"])
    assert error_of(response) == (403, "permission_error", "person_disabled")
    assert "account as disabled" in response.json()["error"]["message"]
    for body in (laptop, desktop):
        with pytest.raises(TokenRevoked):
            async_to_sync(authenticate_wrapper_token)(body["wrapper_token"])
    assert refresh(client, desktop["refresh_token"]).status_code == 401
    person = Person.objects.get()
    assert person.active is False
    assert set(Device.objects.values_list("provider_refresh_token", flat=True)) == {""}
    event = AuditEvent.objects.get(kind=AuditKind.PROVIDER_SESSION_ENDED)
    assert (event.person, event.detail["reason"]) == (person, "account disabled: userinfo answered 401 invalid_token")


def test_account_the_provider_answers_as_inactive_at_userinfo_loses_access_at_the_next_refresh(people_provider):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    people_provider.disable_account("inactive")
    assert error_of(refresh(client, body["refresh_token"])) == (403, "permission_error", "person_disabled")
    with pytest.raises(TokenRevoked):
        async_to_sync(authenticate_wrapper_token)(body["wrapper_token"])
    event = AuditEvent.objects.get(kind=AuditKind.PROVIDER_SESSION_ENDED)
    assert event.detail["reason"] == "account disabled: userinfo answered active: false"


def test_account_disabled_at_the_provider_cannot_sign_in_again_with_the_device_secret(people_provider):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    people_provider.disable_account("userinfo")
    assert error_of(refresh(client, body["refresh_token"]))[2] == "person_disabled"
    response = bootstrap(
        client,
        "laptop-alice",
        device_secret=body["device_secret"],
        headers={"x-bootstrap-secret": "machines-bootstrap-secret-0123456789"},
    )
    assert error_of(response) == (403, "permission_error", "sign_in_required")


def test_an_unreachable_provider_does_not_log_people_out(people_provider):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    people_provider.token_endpoint_down = True
    assert refresh(client, body["refresh_token"]).status_code == 200
    assert Device.objects.get().provider_refresh_token != ""


def test_blocked_person_is_refused_at_refresh_on_every_device(people_provider):
    client = Client()
    laptop = device_sign_in(client, people_provider, "laptop-alice").json()
    desktop = device_sign_in(client, people_provider, "desktop-alice").json()
    block_person(person=Person.objects.get(), actor="test")
    for body in (laptop, desktop):
        assert error_of(refresh(client, body["refresh_token"])) == (403, "permission_error", "person_blocked")


def test_blocked_person_cannot_sign_in_again(people_provider):
    client = Client()
    laptop = device_sign_in(client, people_provider).json()
    block_person(person=Person.objects.get(), actor="test")
    response = device_sign_in(client, people_provider, device_secret=laptop["device_secret"])
    assert error_of(response) == (403, "permission_error", "person_blocked")


@pytest.mark.django_db(transaction=True)  # the block's cache invalidation runs once it is committed
def test_blocked_persons_wrapper_tokens_are_refused_within_5_seconds(people_provider, settings):
    settings.REVOCATION_CACHE_SECONDS = 2.0
    client = Client()
    body = device_sign_in(client, people_provider).json()
    authenticate = async_to_sync(authenticate_wrapper_token)
    assert authenticate(body["wrapper_token"]).device_id == "laptop-alice"  # this process's cache is warm
    block_person(person=Person.objects.get(), actor="test")
    blocked_at = time.monotonic()
    refused = False
    while not refused and time.monotonic() < blocked_at + 5.0:
        try:
            authenticate(body["wrapper_token"])
            time.sleep(0.05)
        except TokenRevoked:
            refused = True
    assert refused, "a blocked person's token was still accepted 5 s later"


def test_poll_flood_with_made_up_sign_ins_is_limited_per_address_without_asking_the_database(
    people_provider, settings, django_assert_num_queries
):
    settings.PEOPLE_SIGN_IN_UNKNOWN_POLL_MAX = 3
    client = Client()
    made_up = [f"made-up-handle-{n:028d}" for n in range(4)]
    assert [error_of(poll(client, handle))[2] for handle in made_up[:3]] == ["sign_in_expired"] * 3
    with django_assert_num_queries(0):
        response = poll(client, made_up[3])
    assert error_of(response) == (429, "rate_limit_error", "enrollment_rate_limited")


def test_polls_of_one_sign_in_beyond_its_own_limit_are_refused(people_provider, settings):
    settings.PEOPLE_SIGN_IN_POLL_MAX = 3
    client = Client()
    handle = start(client).json()["sign_in"]
    assert [poll(client, handle).status_code for _ in range(3)] == [202, 202, 202]
    assert error_of(poll(client, handle)) == (429, "rate_limit_error", "enrollment_rate_limited")
    other = start(client).json()["sign_in"]
    assert poll(client, other).status_code == 202  # the limit is the sign-in's, not the address's


@pytest.mark.parametrize(("interval", "used"), [("soon", 5), ([5], 5), (10**20, 600), ("900", 600)])
def test_a_provider_interval_of_the_wrong_type_or_past_the_sign_in_s_life_is_no_server_error(people_provider, interval, used):
    people_provider.interval = interval
    started = start(Client())
    assert started.status_code == 200, started.content
    assert started.json()["interval"] == used
