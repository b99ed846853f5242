"""Signing keys for wrapper and refresh tokens: one active signer, older keys verifying until the
tokens they signed have expired, then retired.

Every process keeps the keyring in memory (verification runs on every /v1 request and must not
touch the database); it reloads it every KEYRING_CACHE_SECONDS, and at once (throttled) when a token
names a kid it does not know, which is how a rotation made by another process is picked up.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from proxyproject.database import read_database
from proxyproject.logging import log_event
from tokens.audit import record_audit_event
from tokens.encryption import decrypt_secret, encrypt_secret
from tokens.models import AuditKind, SigningKey, SigningKeyState

logger = logging.getLogger("tokens.signing_keys")

KEYRING_CACHE_SECONDS = 60.0
UNKNOWN_KID_RELOAD_INTERVAL = 1.0
# A process may keep signing with a key for up to KEYRING_CACHE_SECONDS after another process
# rotated it; this margin keeps the old key verifying for those late tokens too.
LATE_SIGNING_MARGIN = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Keyring:
    signer_kid: str
    secrets: dict[str, bytes]
    loaded_at: float

    @property
    def signing_secret(self) -> bytes:
        return self.secrets[self.signer_kid]


_cache: Keyring | None = None
_last_forced_reload = 0.0
_lock = threading.Lock()


def _seed_kid(secret: str) -> str:
    """Deterministic, so processes racing to seed the first key from JWT_SECRET create one row."""
    return "k" + hashlib.sha256(b"llm-gateway kid:" + secret.encode()).hexdigest()[:12]


def longest_token_lifetime() -> dt.timedelta:
    return max(dt.timedelta(hours=settings.JWT_EXPIRATION_HOURS), dt.timedelta(days=settings.REFRESH_TOKEN_DAYS))


def ensure_active_signing_key() -> SigningKey:
    """The newest active key; seeds the first one from JWT_SECRET on a fresh database."""
    active = SigningKey.objects.filter(state=SigningKeyState.ACTIVE).order_by("-created_at").first()
    if active is not None:
        return active
    if not settings.JWT_SECRET or SigningKey.objects.filter(kid=_seed_kid(settings.JWT_SECRET)).exists():
        return rotate_signing_key(actor="system")
    try:
        with transaction.atomic():
            key, _ = SigningKey.objects.get_or_create(
                kid=_seed_kid(settings.JWT_SECRET),
                defaults={
                    "encrypted_secret": encrypt_secret(settings.JWT_SECRET),
                    "state": SigningKeyState.ACTIVE,
                    "created_at": timezone.now(),
                },
            )
    except IntegrityError:
        key = SigningKey.objects.get(kid=_seed_kid(settings.JWT_SECRET))
    log_event(logger, "Signing key seeded from JWT_SECRET", kid=key.kid)
    return key


def load_keyring() -> Keyring:
    signer = ensure_active_signing_key()
    usable = SigningKey.objects.filter(state__in=[SigningKeyState.ACTIVE, SigningKeyState.VERIFY_ONLY])
    keys = {key.kid: decrypt_secret(key.encrypted_secret).encode() for key in usable}
    return Keyring(signer_kid=signer.kid, secrets=keys, loaded_at=time.monotonic())


def _store(keyring: Keyring) -> Keyring:
    global _cache
    _cache = keyring
    return keyring


def _fresh(keyring: Keyring | None) -> bool:
    return keyring is not None and time.monotonic() - keyring.loaded_at < KEYRING_CACHE_SECONDS


def get_keyring() -> Keyring:
    """For sync callers (issuance, refresh, commands)."""
    keyring = _cache
    return keyring if keyring is not None and _fresh(keyring) else _store(load_keyring())


async def aget_keyring() -> Keyring:
    """For the hot path: no database access while the cached keyring is fresh."""
    keyring = _cache
    if keyring is not None and _fresh(keyring):
        return keyring
    return _store(await read_database(load_keyring))


def cached_keyring() -> Keyring | None:
    return _cache


def _claim_forced_reload() -> bool:
    """At most one reload per UNKNOWN_KID_RELOAD_INTERVAL, so tokens with made-up kids cannot
    turn into a database query each."""
    global _last_forced_reload
    with _lock:
        now = time.monotonic()
        if now - _last_forced_reload < UNKNOWN_KID_RELOAD_INTERVAL:
            return False
        _last_forced_reload = now
        return True


def reload_keyring_for_unknown_kid(kid: str) -> Keyring:
    keyring = get_keyring()
    if kid in keyring.secrets or not _claim_forced_reload():
        return keyring
    return _store(load_keyring())


async def areload_keyring_for_unknown_kid(kid: str) -> Keyring:
    keyring = await aget_keyring()
    if kid in keyring.secrets or not _claim_forced_reload():
        return keyring
    return _store(await read_database(load_keyring))


def forget_keyring() -> None:
    """Drop this process's cached keyring (after a rotation here, and in tests)."""
    global _cache, _last_forced_reload
    _cache = None
    _last_forced_reload = 0.0


def rotate_signing_key(*, actor: str, now: dt.datetime | None = None) -> SigningKey:
    """Make a new key the signer; the previous signers keep verifying until every token they may
    have signed has expired."""
    now = now or timezone.now()
    with transaction.atomic():
        previous = list(SigningKey.objects.select_for_update().filter(state=SigningKeyState.ACTIVE))
        verify_until = now + longest_token_lifetime() + LATE_SIGNING_MARGIN
        for key in previous:
            key.state = SigningKeyState.VERIFY_ONLY
            key.verify_until = verify_until
            key.save(update_fields=["state", "verify_until"])
        new_key = SigningKey.objects.create(
            kid="k" + secrets.token_hex(6),
            encrypted_secret=encrypt_secret(secrets.token_urlsafe(48)),
            state=SigningKeyState.ACTIVE,
            created_at=now,
        )
        record_audit_event(
            AuditKind.SIGNING_KEY_ROTATED, actor=actor, now=now,
            detail={"kid": new_key.kid, "previous": [key.kid for key in previous]},
        )
    forget_keyring()
    log_event(logger, "Signing key rotated", kid=new_key.kid, previous=[key.kid for key in previous], actor=actor)
    return new_key


def retire_expired_signing_keys(*, now: dt.datetime | None = None) -> list[str]:
    """Retire verify-only keys whose tokens have all expired; their secrets are wiped."""
    now = now or timezone.now()
    retired = []
    with transaction.atomic():
        for key in SigningKey.objects.select_for_update().filter(state=SigningKeyState.VERIFY_ONLY, verify_until__lte=now):
            key.state = SigningKeyState.RETIRED
            key.retired_at = now
            key.encrypted_secret = ""
            key.save(update_fields=["state", "retired_at", "encrypted_secret"])
            record_audit_event(AuditKind.SIGNING_KEY_RETIRED, actor="system", now=now, detail={"kid": key.kid})
            retired.append(key.kid)
    if retired:
        forget_keyring()
        log_event(logger, "Signing keys retired", kids=retired)
    return retired


def rotate_signing_key_if_due(*, now: dt.datetime | None = None) -> SigningKey | None:
    """The scheduled rotation: a new signer when the active one is SIGNING_KEY_ROTATION_DAYS old."""
    now = now or timezone.now()
    active = ensure_active_signing_key()
    if now - active.created_at < dt.timedelta(days=settings.SIGNING_KEY_ROTATION_DAYS):
        return None
    return rotate_signing_key(actor="schedule", now=now)
