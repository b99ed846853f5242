"""System checks for enrollment and signing keys (ids asserted by tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError

from tokens.enrollment_modes import bootstrap_mode


@register(Tags.security, deploy=True)
def check_enrollment_mode(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if bootstrap_mode() == "open" and not settings.DEBUG:
        return [
            Warning(
                "ENROLLMENT_MODE=open lets anyone who can reach /bootstrap enroll a device and spend on your API key.",
                hint="Use ENROLLMENT_MODE=secret (with BOOTSTRAP_SECRET) or ENROLLMENT_MODE=approval.",
                id="tokens.W001",
            )
        ]
    return []


@register()
def check_revocation_delay(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if settings.REVOCATION_CACHE_SECONDS > 5:
        return [
            Warning(
                f"REVOCATION_CACHE_SECONDS={settings.REVOCATION_CACHE_SECONDS}: "
                "a revoked token keeps working that long on other processes.",
                hint="Keep it at 5 seconds or less (default 2).",
                id="tokens.W002",
            )
        ]
    return []


@register(Tags.database)
def check_signing_keys_decrypt(
    app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Only with --database (`manage.py check --database default`), since it reads the table: a
    changed FIELD_ENCRYPTION_KEY (or DJANGO_SECRET_KEY) would make every token issue fail."""
    if not databases:
        return []
    from proxyproject.lib.encryption import SecretDecryptionFailed, decrypt_secret
    from tokens.models import SigningKey, SigningKeyState

    try:
        keys = list(SigningKey.objects.exclude(state=SigningKeyState.RETIRED))
    except DatabaseError:
        return []  # not migrated yet: `migrate` runs the database checks before it creates the table
    unreadable = []
    for key in keys:
        try:
            decrypt_secret(key.encrypted_secret)
        except SecretDecryptionFailed:
            unreadable.append(key.kid)
    if unreadable:
        return [
            Error(
                f"Signing keys {', '.join(unreadable)} cannot be decrypted: FIELD_ENCRYPTION_KEY or DJANGO_SECRET_KEY changed.",
                hint="Put the previous key after the new one in FIELD_ENCRYPTION_KEY (comma-separated).",
                id="tokens.E001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_development_signing_keys(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """Reads the signing-key table even without --database: a development key left in a production
    database is the one thing a deploy must not miss (with debug off it is ignored, never used)."""
    from tokens.signing_keys import development_keys_refused, stranded_development_kids

    if not development_keys_refused():
        return []  # development: JWT_SECRET is the default itself, settings refuse it with debug off
    try:
        kids = stranded_development_kids()
    except DatabaseError:
        return []  # not migrated yet: no key at all
    if kids:
        return [
            Warning(
                f"Signing keys {', '.join(kids)} were seeded from the public development JWT_SECRET: anyone can forge "
                "tokens with them. With a real JWT_SECRET (always, with debug off) they neither sign nor verify.",
                hint="Retire them: manage.py rotate_signing_key",
                id="tokens.W003",
            )
        ]
    return []
