"""Signing keys: seeded from JWT_SECRET, rotated without logging anyone out, retired after their
tokens expire, encrypted at rest."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.utils import timezone

from proxyproject.lib.encryption import decrypt_secret
from proxyproject.lib.errors import AuthenticationFailed
from tests.tokens.client import bootstrap, error_of, jwt_parts, refresh
from tokens import signing_keys
from tokens.authentication import authenticate_wrapper_token
from tokens.models import AuditEvent, AuditKind, SigningKey, SigningKeyState
from tokens.signing_keys import (
    LATE_SIGNING_MARGIN,
    ensure_active_signing_key,
    forget_keyring,
    retire_expired_signing_keys,
    rotate_signing_key,
    rotate_signing_key_if_due,
)
from tokens.tasks import maintain_signing_keys

pytestmark = pytest.mark.django_db

authenticate = async_to_sync(authenticate_wrapper_token)


def test_first_key_is_seeded_from_jwt_secret_and_stored_encrypted(settings):
    key = ensure_active_signing_key()
    assert key.state == SigningKeyState.ACTIVE
    assert settings.JWT_SECRET not in key.encrypted_secret
    assert decrypt_secret(key.encrypted_secret) == settings.JWT_SECRET
    assert ensure_active_signing_key().pk == key.pk
    assert SigningKey.objects.count() == 1


def test_rotation_signs_new_tokens_with_the_new_kid_and_old_tokens_keep_working(client, enrolled, settings):
    old_kid = jwt_parts(enrolled["wrapper_token"])[0]["kid"]

    call_command("rotate_signing_key", stdout=open("/dev/null", "w"))

    new_key = SigningKey.objects.get(state=SigningKeyState.ACTIVE)
    old_key = SigningKey.objects.get(kid=old_kid)
    assert new_key.kid != old_kid
    assert old_key.state == SigningKeyState.VERIFY_ONLY
    lifetime = max(dt.timedelta(hours=settings.JWT_EXPIRATION_HOURS), dt.timedelta(days=settings.REFRESH_TOKEN_DAYS))
    assert old_key.verify_until == new_key.created_at + lifetime + LATE_SIGNING_MARGIN
    assert authenticate(enrolled["wrapper_token"]).device_id == "laptop-ada"
    fresh = refresh(client, enrolled["refresh_token"]).json()
    assert jwt_parts(fresh["wrapper_token"])[0]["kid"] == new_key.kid
    assert authenticate(fresh["wrapper_token"]).device_id == "laptop-ada"
    assert AuditEvent.objects.get(kind=AuditKind.SIGNING_KEY_ROTATED).detail == {"kid": new_key.kid, "previous": [old_kid]}


def test_a_process_with_a_stale_keyring_accepts_tokens_signed_by_a_key_rotated_elsewhere(client, enrolled, monkeypatch):
    authenticate(enrolled["wrapper_token"])
    stale = signing_keys.cached_keyring()
    rotate_signing_key(actor="another process")
    signed_elsewhere = bootstrap(client, "laptop-ada", device_secret=enrolled["device_secret"]).json()["wrapper_token"]
    new_kid = jwt_parts(signed_elsewhere)[0]["kid"]
    monkeypatch.setattr(signing_keys, "_cache", stale)
    assert new_kid not in stale.secrets

    assert authenticate(signed_elsewhere).device_id == "laptop-ada"
    assert new_kid in signing_keys.cached_keyring().secrets


def test_unknown_kids_reload_the_keyring_at_most_once_a_second(enrolled, django_assert_num_queries):
    header, claims = jwt_parts(enrolled["wrapper_token"])
    key = decrypt_secret(SigningKey.objects.get(kid=header["kid"]).encrypted_secret)
    made_up = [jwt.encode(claims, key, headers={"kid": f"k-made-up-{n}"}) for n in range(3)]
    authenticate(enrolled["wrapper_token"])

    with django_assert_num_queries(2):
        for token in made_up:
            with pytest.raises(AuthenticationFailed):
                authenticate(token)


def test_retirement_waits_until_the_old_key_tokens_have_expired(client, enrolled):
    old_kid = jwt_parts(enrolled["wrapper_token"])[0]["kid"]
    rotated_at = timezone.now()
    rotate_signing_key(actor="test", now=rotated_at)
    verify_until = SigningKey.objects.get(kid=old_kid).verify_until

    assert retire_expired_signing_keys(now=verify_until - dt.timedelta(seconds=1)) == []
    assert retire_expired_signing_keys(now=verify_until) == [old_kid]

    retired = SigningKey.objects.get(kid=old_kid)
    assert (retired.state, retired.encrypted_secret, retired.retired_at) == (SigningKeyState.RETIRED, "", verify_until)
    forget_keyring()
    with pytest.raises(AuthenticationFailed):
        authenticate(enrolled["wrapper_token"])
    assert error_of(refresh(client, enrolled["refresh_token"])) == (401, "authentication_error", "invalid_token")


def test_scheduled_rotation_happens_every_rotation_period(settings):
    settings.SIGNING_KEY_ROTATION_DAYS = 30
    first = ensure_active_signing_key()
    assert rotate_signing_key_if_due(now=first.created_at + dt.timedelta(days=29, hours=23)) is None
    rotated = rotate_signing_key_if_due(now=first.created_at + dt.timedelta(days=30))
    assert rotated is not None and rotated.kid != first.kid
    assert SigningKey.objects.get(kid=first.kid).state == SigningKeyState.VERIFY_ONLY


def test_maintenance_task_retires_expired_keys_and_rotates_when_due(settings):
    settings.SIGNING_KEY_ROTATION_DAYS = 30
    old = SigningKey.objects.create(
        kid="k-old",
        encrypted_secret="gone-anyway",
        state=SigningKeyState.VERIFY_ONLY,
        created_at=timezone.now() - dt.timedelta(days=90),
        verify_until=timezone.now() - dt.timedelta(minutes=1),
    )
    aged = ensure_active_signing_key()
    SigningKey.objects.filter(pk=aged.pk).update(created_at=timezone.now() - dt.timedelta(days=31))

    result = maintain_signing_keys.apply().get()

    new_kid = SigningKey.objects.get(state=SigningKeyState.ACTIVE).kid
    assert result == {"rotated_to": new_kid, "retired": [old.kid]}
    assert SigningKey.objects.get(kid=aged.kid).state == SigningKeyState.VERIFY_ONLY
