"""System checks of the tokens app, by id."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.utils import timezone

from tokens.models import SigningKey, SigningKeyState


def _ids(**kwargs) -> set[str]:
    return {message.id for message in run_checks(**kwargs) if message.id.startswith("tokens.")}


def test_open_enrollment_without_debug_is_warned_on_deploy(settings):
    settings.DEBUG = False
    settings.ENROLLMENT_MODE = "open"
    assert "tokens.W001" in _ids(include_deployment_checks=True)
    settings.ENROLLMENT_MODE = "approval"
    assert "tokens.W001" not in _ids(include_deployment_checks=True)


def test_slow_revocation_is_warned(settings):
    settings.REVOCATION_CACHE_SECONDS = 6
    assert "tokens.W002" in _ids()
    settings.REVOCATION_CACHE_SECONDS = 5
    assert "tokens.W002" not in _ids()


@pytest.mark.django_db
def test_signing_key_unreadable_with_the_current_encryption_key_is_an_error(settings):
    SigningKey.objects.create(
        kid="k-lost", encrypted_secret="gAAAAAB-not-decryptable", state=SigningKeyState.ACTIVE, created_at=timezone.now()
    )
    assert "tokens.E001" in _ids(databases=["default"])
    assert "tokens.E001" not in _ids()


@pytest.mark.django_db
def test_development_signing_key_left_beside_a_real_jwt_secret_is_warned_on_deploy(settings):
    from tokens.signing_keys import development_kids

    SigningKey.objects.create(
        kid=next(iter(development_kids())), encrypted_secret="x", state=SigningKeyState.VERIFY_ONLY, created_at=timezone.now()
    )
    assert "tokens.W003" not in _ids(include_deployment_checks=True)  # JWT_SECRET is the default: development
    settings.JWT_SECRET = "a-real-secret-of-at-least-32-bytes-0123456789"
    assert "tokens.W003" in _ids(include_deployment_checks=True)
    assert "tokens.W003" not in _ids()
