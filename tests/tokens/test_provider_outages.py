"""A provider outage at a device refresh (tokens.provider_sessions): no answer in time or a 5xx,
at the token endpoint or at the userinfo endpoint, never logs a person out. The refresh goes on with
the gateway's own tokens, the provider refresh token is kept (the renewed one, when the provider
renewed it before failing), and the next refresh asks the provider again."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from tests.tokens.client import refresh
from tests.tokens.sign_in_client import device_sign_in
from tokens.models import Device, Person

pytestmark = pytest.mark.django_db


def _renewals(provider) -> int:
    return len([form for form in provider.token_requests if form["grant_type"] == "refresh_token"])


def _still_signed_in() -> None:
    device = Device.objects.get()
    assert device.provider_refresh_token != ""
    assert Person.objects.get().active is True


def test_a_token_endpoint_that_answers_too_late_does_not_log_people_out(people_provider, settings, caplog):
    settings.OIDC_TIMEOUT = 0.5
    client = Client()
    body = device_sign_in(client, people_provider).json()
    people_provider.token_delay_seconds = 1.5
    with caplog.at_level(logging.WARNING, logger="tokens.provider_sessions"):
        response = refresh(client, body["refresh_token"])
    assert response.status_code == 200, response.content
    _still_signed_in()
    assert [record.getMessage() for record in caplog.records] == ["Provider session not renewed: provider unavailable"]


def test_a_userinfo_endpoint_in_an_outage_does_not_log_people_out_and_the_renewed_session_is_kept(people_provider, caplog):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    people_provider.userinfo_down = True
    before = Device.objects.get().provider_refresh_token
    with caplog.at_level(logging.WARNING, logger="tokens.provider_sessions"):
        response = refresh(client, body["refresh_token"])
    assert response.status_code == 200, response.content
    _still_signed_in()
    assert Device.objects.get().provider_refresh_token != before  # the provider rotated it; the spent one is gone
    assert [record.getMessage() for record in caplog.records] == ["Provider account not checked: provider unavailable"]


def test_a_userinfo_endpoint_that_answers_too_late_does_not_log_people_out(people_provider, settings, caplog):
    settings.OIDC_TIMEOUT = 0.5
    client = Client()
    body = device_sign_in(client, people_provider).json()
    people_provider.userinfo_delay_seconds = 1.5
    with caplog.at_level(logging.WARNING, logger="tokens.provider_sessions"):
        response = refresh(client, body["refresh_token"])
    assert response.status_code == 200, response.content
    _still_signed_in()
    assert [record.getMessage() for record in caplog.records] == ["Provider account not checked: provider unavailable"]


def test_after_an_outage_the_next_refresh_asks_the_provider_again_and_learns_of_the_disabling(people_provider):
    client = Client()
    body = device_sign_in(client, people_provider).json()
    people_provider.token_endpoint_down = True
    body = refresh(client, body["refresh_token"]).json()
    people_provider.token_endpoint_down = False
    people_provider.disable_account("userinfo")
    response = refresh(client, body["refresh_token"])
    assert response.status_code == 403 and response.json()["error"]["details"]["error_code"] == "person_disabled"
    assert _renewals(people_provider) == 1
