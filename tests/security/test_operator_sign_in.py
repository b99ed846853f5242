"""Operators sign in to the console with the company's OpenID Connect provider. Each refusal a
relying party owes is tested against a provider that misbehaves that way: an ID token for another
client or from another issuer, expired, carrying another sign-in's nonce, or signed by a key the
provider does not publish; a forged state; a person outside the console groups. Group membership
is decided again at every sign-in."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from proxyproject.operator_sign_in import BACKEND_PATH, discovery
from tests.oidc_provider import OIDCProvider, SigningKey

pytestmark = pytest.mark.django_db

FAILED = "/admin/login/?sign_in=failed"


@pytest.fixture
def provider(settings):
    running = OIDCProvider().start()
    settings.OIDC_ISSUER = running.issuer
    settings.OIDC_CLIENT_ID = settings.OIDC_RP_CLIENT_ID = running.client_id
    settings.OIDC_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET = running.client_secret
    settings.OPERATOR_SIGN_IN_OIDC = True
    settings.OIDC_STAFF_GROUPS = ["llm-gateway-operators"]
    settings.OIDC_SUPERUSER_GROUPS = ["llm-gateway-admins"]
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, BACKEND_PATH]
    discovery.forget()
    yield running
    discovery.forget()
    running.stop()


def sign_in(client: Client, *, state: str | None = None):
    """The browser's round trip: the gateway sends it to the provider, the provider back with a code."""
    start = client.get("/oidc/authenticate/", {"next": "/admin/"})
    assert start.status_code == 302, start.content
    back = httpx.get(start["Location"], follow_redirects=False)
    callback = urlsplit(back.headers["location"])
    query = callback.query if state is None else callback.query.replace("state=", f"state={state}&ignored=")
    return client.get(f"{callback.path}?{query}")


def test_a_person_in_the_operators_group_signs_in_to_the_console(provider):
    client = Client()
    assert sign_in(client)["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    user = get_user_model().objects.get(username="alice@example.com")
    assert (user.is_staff, user.is_superuser, user.has_usable_password(), user.first_name) == (True, False, False, "Alice")


def test_the_admins_group_makes_a_superuser_and_leaving_it_demotes_at_the_next_sign_in(provider):
    provider.person["groups"] = ["llm-gateway-admins"]
    sign_in(Client())
    assert get_user_model().objects.get(username="alice@example.com").is_superuser
    provider.person["groups"] = ["llm-gateway-operators"]
    sign_in(Client())
    assert not get_user_model().objects.get(username="alice@example.com").is_superuser


def test_a_person_in_no_console_group_is_refused_and_no_account_is_made(provider):
    provider.person["groups"] = ["sales"]
    client = Client()
    assert sign_in(client)["Location"] == FAILED
    assert not get_user_model().objects.filter(username="alice@example.com").exists()
    assert client.get("/admin/").status_code == 302


def test_a_person_removed_from_the_group_loses_the_console_at_the_next_sign_in(provider):
    sign_in(Client())
    provider.person["groups"] = []
    client = Client()
    assert sign_in(client)["Location"] == FAILED
    assert client.get("/admin/").status_code == 302


def test_an_unverified_email_is_refused(provider):
    provider.person["email_verified"] = False
    assert sign_in(Client())["Location"] == FAILED


def test_an_id_token_for_another_client_is_refused(provider):
    provider.audience = "some-other-app"
    assert sign_in(Client())["Location"] == FAILED


def test_an_id_token_from_another_issuer_is_refused(provider):
    provider.issuer_claim = "https://evil.example.com"
    assert sign_in(Client())["Location"] == FAILED


def test_an_expired_id_token_is_refused(provider):
    provider.lifetime = -60
    assert sign_in(Client())["Location"] == FAILED


def test_an_id_token_carrying_another_sign_in_s_nonce_is_refused(provider):
    sign_in(Client())
    provider.nonce_override = provider.nonces_seen[0]
    assert sign_in(Client())["Location"] == FAILED


def test_an_id_token_signed_by_a_key_the_provider_does_not_publish_is_refused(provider):
    provider.unpublished_key = SigningKey("key-1")
    assert sign_in(Client())["Location"] == FAILED


def test_a_rotated_provider_key_is_picked_up_at_the_next_sign_in(provider):
    sign_in(Client())
    provider.rotate_keys()
    client = Client()
    assert sign_in(client)["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_forged_state_is_refused(provider):
    client = Client(raise_request_exception=False)
    assert sign_in(client, state="forged").status_code == 400
    assert client.get("/admin/").status_code == 302


def test_a_superuser_signed_in_by_the_provider_passes_the_console_s_second_factor_rule(provider, settings):
    settings.ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS = True
    provider.person["groups"] = ["llm-gateway-admins"]
    client = Client()
    sign_in(client)
    assert client.get("/admin/").status_code == 200


def test_the_login_page_offers_the_provider_only_when_one_is_configured(provider, settings):
    assert "Sign in with your company account" in Client().get("/admin/login/").content.decode()
    settings.OPERATOR_SIGN_IN_OIDC = False
    assert "Sign in with your company account" not in Client().get("/admin/login/").content.decode()
    assert Client().get("/oidc/authenticate/").status_code == 404
    assert Client().get("/oidc/callback/").status_code == 404
