"""Attacks on budget webhooks: the secret leaking (admin pages, logs, the database), the receiver
steering the gateway (redirects, huge or slow answers), URLs that are not http(s), and forged or
replayed bodies (the signature covers the timestamp and every byte of the body)."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.usage.webhook_receiver import WebhookReceiver, signature_is_valid
from tokens.budget_webhooks import set_organization_webhook_secret
from tokens.models import Device, Organization
from usage.budget_alerts import Crossing, record_budget_alerts
from usage.budget_delivery import EXCERPT_BYTES, deliver_budget_webhook, sign_webhook_body
from usage.models import BudgetAlert, WebhookDelivery

pytestmark = pytest.mark.django_db
SECRET = "budget-webhook-secret-" + "q" * 16


@pytest.fixture
def receiver(settings):
    with WebhookReceiver() as receiver:
        settings.BUDGET_WEBHOOK_URL, settings.BUDGET_WEBHOOK_SECRET = receiver.url, SECRET
        yield receiver


@pytest.fixture
def operator(client):
    client.force_login(get_user_model().objects.create_superuser("ops", password="ops-password-123"))
    return client


def an_alert(organization: Organization | None = None) -> BudgetAlert:
    device = Device.objects.create(device_id="laptop-1", organization=organization)
    start = dt.datetime.combine(timezone.now().date(), dt.time(), tzinfo=dt.UTC)
    [alert] = record_budget_alerts([Crossing("device", device.pk, "day", start, 50, Decimal("1.00"), Decimal("0.5"))])
    return alert


def test_the_organizations_webhook_secret_is_not_in_the_admin_html(operator):
    organization = Organization.objects.create(name="Acme", budget_webhook_url="https://hooks.acme.example/budget")
    set_organization_webhook_secret(organization=organization, secret=SECRET)
    page = operator.get(f"/admin/tokens/organization/{organization.pk}/change/").content.decode()
    assert SECRET not in page and organization.budget_webhook_secret_encrypted not in page
    assert "set (stored encrypted, never shown)" in page


def test_the_webhook_secret_is_stored_encrypted(db):
    organization = Organization.objects.create(name="Acme")
    set_organization_webhook_secret(organization=organization, secret=SECRET)
    stored = Organization.objects.values_list("budget_webhook_secret_encrypted", flat=True).get()
    assert stored and SECRET not in stored


def test_saving_the_organization_without_typing_the_secret_keeps_it(operator):
    organization = Organization.objects.create(name="Acme", budget_webhook_url="https://hooks.acme.example/budget")
    set_organization_webhook_secret(organization=organization, secret=SECRET)
    before = Organization.objects.get().budget_webhook_secret_encrypted
    answer = operator.post(
        f"/admin/tokens/organization/{organization.pk}/change/",
        {"name": "Acme", "budget_webhook_url": "https://hooks.acme.example/budget", "budget_webhook_secret": ""},
    )
    assert answer.status_code == 302
    assert Organization.objects.get().budget_webhook_secret_encrypted == before


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://hooks.example/budget", "gopher://127.0.0.1:6379/_FLUSHALL"])
def test_a_webhook_url_that_is_not_http_is_refused_in_the_admin(operator, url):
    answer = operator.post(
        "/admin/tokens/organization/add/", {"name": "Acme", "budget_webhook_url": url, "budget_webhook_secret": SECRET}
    )
    assert answer.status_code == 200 and not Organization.objects.exists()
    assert "budget_webhook_url" in answer.context["adminform"].form.errors


def test_a_webhook_url_that_is_not_http_is_never_posted_to(db):
    organization = Organization.objects.create(name="Acme")
    Organization.objects.filter(pk=organization.pk).update(budget_webhook_url="file:///etc/passwd")  # past the validators
    set_organization_webhook_secret(organization=Organization.objects.get(), secret=SECRET)
    alert = an_alert(Organization.objects.get())
    delivery = deliver_budget_webhook(alert=alert, target="organization", attempt=1)
    assert (delivery.delivered, delivery.status_code, delivery.error) == (
        False,
        None,
        "URL refused: only http and https URLs are posted to",
    )


def test_a_redirect_from_the_receiver_is_not_followed(receiver):
    with WebhookReceiver() as elsewhere:
        receiver.statuses, receiver.redirect_to = [307], elsewhere.url
        delivery = deliver_budget_webhook(alert=an_alert(), target="setting", attempt=1)
        assert elsewhere.received == []
    assert (delivery.delivered, delivery.status_code, delivery.error) == (False, 307, "redirect not followed")


def test_the_receivers_answer_is_stored_no_further_than_a_few_hundred_bytes(receiver):
    receiver.answer_body = b"A" * 1_000_000
    delivery = deliver_budget_webhook(alert=an_alert(), target="setting", attempt=1)
    assert delivery.delivered and delivery.response_excerpt == "A" * EXCERPT_BYTES


def test_the_webhook_secret_is_never_logged(receiver, caplog):
    receiver.statuses = [500]
    with caplog.at_level(logging.DEBUG):
        deliver_budget_webhook(alert=an_alert(), target="setting", attempt=1)
    assert caplog.records and SECRET not in caplog.text


def test_the_signature_changes_with_the_body_the_timestamp_and_the_secret():
    signed = sign_webhook_body(secret=SECRET, timestamp=1_800_000_000, body=b'{"spent":"0.5"}')
    assert signed.startswith("sha256=") and len(signed) == 7 + 64
    assert sign_webhook_body(secret=SECRET, timestamp=1_800_000_000, body=b'{"spent":"0.6"}') != signed
    assert sign_webhook_body(secret=SECRET, timestamp=1_800_000_001, body=b'{"spent":"0.5"}') != signed
    assert sign_webhook_body(secret=SECRET + "x", timestamp=1_800_000_000, body=b'{"spent":"0.5"}') != signed


def test_a_body_altered_in_transit_fails_the_receivers_check(receiver):
    deliver_budget_webhook(alert=an_alert(), target="setting", attempt=1)
    [received] = receiver.received
    assert signature_is_valid(received, SECRET)
    forged = type(received)(received.path, received.headers, received.body.replace(b'"0.5"', b'"0.0"'))
    assert not signature_is_valid(forged, SECRET)


def test_the_delivery_log_is_read_only_in_the_admin(operator, receiver):
    deliver_budget_webhook(alert=an_alert(), target="setting", attempt=1)
    delivery = WebhookDelivery.objects.get()
    page = operator.get(f"/admin/usage/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert 'name="_save"' not in page and SECRET not in page
    assert operator.post(f"/admin/usage/webhookdelivery/{delivery.pk}/delete/", {"post": "yes"}).status_code == 403


def test_a_receiver_that_never_answers_is_given_up_after_the_timeout(settings):
    """A socket that accepts and stays silent: the attempt ends at BUDGET_WEBHOOK_TIMEOUT_SECONDS."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings.BUDGET_WEBHOOK_URL = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        settings.BUDGET_WEBHOOK_SECRET = SECRET
        settings.BUDGET_WEBHOOK_TIMEOUT_SECONDS = 0.2
        delivery = deliver_budget_webhook(alert=an_alert(), target="setting", attempt=1)
    assert (delivery.delivered, delivery.status_code) == (False, None)
    assert delivery.error.startswith("ReadTimeout")
