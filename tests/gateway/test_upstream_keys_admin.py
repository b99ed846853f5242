"""The upstream key pool in the Django admin: masked secrets, add and rotate forms, actions calling
the same services as the commands, and warnings about keys to rotate or out of rotation."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from fake_anthropic import FakeAnthropic
from gateway.models import UpstreamKey, UpstreamKeyState
from gateway.upstream_keys import add_upstream_key, flag_upstream_key, rotate_upstream_key
from proxyproject.lib.encryption import decrypt_secret

pytestmark = pytest.mark.django_db

FIRST = "sk-ant-api03-first-" + "f" * 30 + "F1R5"
SECOND = "sk-ant-api03-second-" + "s" * 30 + "S3C0"
THIRD = "sk-ant-api03-third-" + "t" * 30 + "TH1R"
UNKNOWN = "sk-ant-api03-unknown-" + "u" * 30 + "UNKN"
LIST_URL = "/admin/gateway/upstreamkey/"


@pytest.fixture(autouse=True)
def upstream(settings):
    """The forms check a key with the upstream before it serves: the fake knows this file's keys."""
    with FakeAnthropic(api_keys={FIRST, SECOND, THIRD}) as fake:
        settings.ANTHROPIC_BASE_URL = fake.base_url
        yield fake


@pytest.fixture
def admin_client(operator_client):
    return operator_client


@pytest.fixture
def first():
    return add_upstream_key(name="prod-1", secret=FIRST, weight=2, actor="test")


def act(admin_client, action: str, *keys: UpstreamKey):
    return admin_client.post(LIST_URL, {"action": action, "_selected_action": [key.pk for key in keys]}, follow=True)


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_the_list_and_the_key_page_show_the_fingerprint_never_the_secret(admin_client, first):
    listing = admin_client.get(LIST_URL).content.decode()
    page = admin_client.get(f"{LIST_URL}{first.pk}/change/").content.decode()
    assert "prod-1" in listing and "…F1R5" in listing and "…F1R5" in page
    for html in (listing, page):
        assert FIRST not in html and first.encrypted_secret not in html and first.secret_sha256 not in html


def test_adding_a_key_takes_the_secret_in_a_password_field_and_calls_the_service(admin_client, caplog):
    caplog.set_level(logging.INFO)
    form = admin_client.get(f"{LIST_URL}add/")
    assert form.status_code == 200 and "no-store" in form["cache-control"]
    assert 'type="password" name="secret"' in form.content.decode()
    response = admin_client.post(f"{LIST_URL}add/", {"name": "prod-1", "secret": FIRST, "weight": "3"}, follow=True)
    key = UpstreamKey.objects.get()
    assert (key.name, key.weight, key.created_by, decrypt_secret(key.encrypted_secret)) == ("prod-1", 3, "user:ops", FIRST)
    assert messages_of(response) == ["Upstream key 'prod-1' (…F1R5) added and active."]
    assert FIRST not in response.content.decode() and FIRST not in caplog.text


def test_a_refused_key_is_explained_and_its_secret_not_echoed(admin_client, first):
    response = admin_client.post(f"{LIST_URL}add/", {"name": "prod-2", "secret": FIRST, "weight": "1"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "This secret is already in the pool as &#x27;prod-1&#x27; (active)." in html
    assert FIRST not in html
    assert UpstreamKey.objects.count() == 1


def test_rotating_from_the_list_asks_for_the_new_secret_then_drains_the_old_key(admin_client, first):
    asked = act(admin_client, "rotate", first)
    assert asked.redirect_chain == [(f"{LIST_URL}{first.pk}/rotate/", 302)]
    assert 'type="password" name="secret"' in asked.content.decode()
    done = admin_client.post(f"{LIST_URL}{first.pk}/rotate/", {"secret": SECOND, "new_name": "prod-2"}, follow=True)
    assert messages_of(done) == [
        "Key 'prod-2' (…S3C0) is active; 'prod-1' is draining and is retired once no request is in flight on it."
    ]
    old, new = UpstreamKey.objects.get(name="prod-1"), UpstreamKey.objects.get(name="prod-2")
    assert (old.state, old.replaced_by_id, new.state, new.weight, new.created_by) == ("draining", new.pk, "active", 2, "user:ops")


def test_rotating_needs_exactly_one_key(admin_client, first):
    second = add_upstream_key(name="prod-2", secret=SECOND, actor="test")
    response = act(admin_client, "rotate", first, second)
    assert messages_of(response) == ["Select exactly one key to rotate."]
    assert UpstreamKey.objects.filter(state=UpstreamKeyState.ACTIVE).count() == 2


def test_rotating_a_draining_key_is_refused_on_the_form(admin_client, first):
    rotate_upstream_key(name="prod-1", secret=SECOND, new_name="prod-2", actor="test")
    response = admin_client.post(f"{LIST_URL}{first.pk}/rotate/", {"secret": THIRD})
    assert "Key &#x27;prod-1&#x27; is draining: only an active key can be rotated." in response.content.decode()
    assert UpstreamKey.objects.count() == 2


def test_retiring_from_the_list_keeps_the_last_usable_key(admin_client, first):
    refused = act(admin_client, "retire", first)
    assert messages_of(refused) == [
        "Key 'prod-1' is the last usable key: retiring it would refuse every request. "
        "Add or rotate in a new key first (or force it)."
    ]
    second = add_upstream_key(name="prod-2", secret=SECOND, actor="test")
    assert messages_of(act(admin_client, "retire", second)) == ["prod-2: retired."]
    assert (UpstreamKey.objects.get(name="prod-2").state, UpstreamKey.objects.get(name="prod-1").state) == ("retired", "active")


def test_reactivating_unflags_a_key_and_stops_a_drain(admin_client, first):
    rotation = rotate_upstream_key(name="prod-1", secret=SECOND, new_name="prod-2", actor="test")
    flag_upstream_key(key_id=rotation.new.pk, reason="Upstream answered 401")
    response = act(admin_client, "reactivate", first, rotation.new)
    assert sorted(messages_of(response)) == ["prod-1: back in rotation.", "prod-2: back in rotation."]
    for key in UpstreamKey.objects.all():
        assert (key.state, key.flagged_at, key.flagged_reason, key.draining_since) == ("active", None, "", None)


def test_the_weight_is_the_one_editable_field_and_changes_through_the_service(admin_client, first, caplog):
    caplog.set_level(logging.INFO)
    response = admin_client.post(f"{LIST_URL}{first.pk}/change/", {"weight": "7"})
    assert response.status_code == 302
    assert UpstreamKey.objects.get().weight == 7
    [line] = [record for record in caplog.records if record.getMessage() == "Upstream key audit: reweighted"]
    assert (line.event_fields["weight"], line.event_fields["previousWeight"], line.event_fields["actor"]) == (7, 2, "user:ops")


def test_the_list_warns_about_keys_to_rotate_and_keys_out_of_rotation(admin_client, settings):
    settings.UPSTREAM_KEY_ROTATION_DAYS = 30
    add_upstream_key(name="aged", secret=FIRST, actor="test", now=timezone.now() - dt.timedelta(days=45))
    rejected = add_upstream_key(name="rejected", secret=SECOND, actor="test")
    flag_upstream_key(key_id=rejected.pk, reason="Upstream answered 401")
    response = admin_client.get(LIST_URL)
    assert messages_of(response) == [
        "Key 'aged' is older than 30 days: rotate it.",
        "Key 'rejected' is out of rotation: Upstream answered 401. Rotate it, or reactivate it once it works again.",
    ]
    assert "45 (rotate)" in response.content.decode()


def test_keys_cannot_be_deleted_only_retired(admin_client, first):
    assert admin_client.get(f"{LIST_URL}{first.pk}/delete/").status_code == 403
    assert 'value="delete_selected"' not in admin_client.get(LIST_URL).content.decode()


def test_a_key_the_upstream_refuses_is_not_added(admin_client, upstream):
    response = admin_client.post(f"{LIST_URL}add/", {"name": "prod-9", "secret": UNKNOWN, "weight": "1"})
    html = response.content.decode()
    assert "Key not added: the upstream refused the key (GET /v1/models: 401)." in html
    assert UNKNOWN not in html and not UpstreamKey.objects.exists()
    assert [(seen.path, seen.api_key_used) for seen in upstream.requests] == [("/v1/models", "UNKN")]


def test_rotating_to_a_key_the_upstream_refuses_keeps_the_old_key_serving(admin_client, first):
    response = admin_client.post(f"{LIST_URL}{first.pk}/rotate/", {"secret": UNKNOWN, "new_name": "prod-2"})
    assert "Key not added: the upstream refused the key" in response.content.decode()
    assert list(UpstreamKey.objects.values_list("name", "state")) == [("prod-1", "active")]


def test_the_test_key_action_reports_each_key_and_flags_a_refused_one(admin_client, first, upstream):
    second = add_upstream_key(name="prod-2", secret=SECOND, actor="test")
    upstream.set_api_keys({FIRST})
    response = act(admin_client, "test_keys", first, second)
    assert sorted(messages_of(response)) == [
        "Key 'prod-2' is out of rotation: Test: the upstream refused the key (GET /v1/models: 401). "
        "Rotate it, or reactivate it once it works again.",
        "prod-1: the upstream accepted the key (GET /v1/models: 200).",
        "prod-2: the upstream refused the key (GET /v1/models: 401). It is flagged out of rotation.",
    ]
    flagged = UpstreamKey.objects.get(name="prod-2")
    assert flagged.flagged_reason == "Test: the upstream refused the key (GET /v1/models: 401)"
    assert UpstreamKey.objects.get(name="prod-1").flagged_at is None
