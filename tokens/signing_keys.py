"""Signing keys for wrapper and refresh tokens: one active signer, older keys verifying until the
tokens they signed have expired, then retired.

Every process keeps the keyring in memory (verification runs on every /v1 request and must not
touch the database); it reloads it every KEYRING_CACHE_SECONDS, and at once (throttled) when a token
names a kid it does not know, which is how a rotation made by another process is picked up.

Development keys (seeded from a public development JWT_SECRET default, DEVELOPMENT_JWT_SECRETS)
are used only while JWT_SECRET is itself such a default, which settings allow only with debug on:
once a real JWT_SECRET is configured (always, with debug off) they neither sign nor verify, since
anyone can forge tokens with them. A var dir first used with debug on keeps such a key; the signer
is then seeded from the real JWT_SECRET, start-up says so, and `check --deploy` reports it until
`rotate_signing_key` retires it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from proxyproject.lib.database import read_database
from proxyproject.lib.encryption import decrypt_secret, encrypt_secret
from proxyproject.lib.logging import log_event
from proxyproject.lib.process_state import register_process_state
from tokens.audit import record_audit_event
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


def development_kids() -> frozenset[str]:
    """The kids of keys seeded from a public development default: the seed kid is derived from the
    secret, so the kid alone identifies them, even when their secret cannot be decrypted."""
    return frozenset(_seed_kid(secret) for secret in settings.DEVELOPMENT_JWT_SECRETS)


def development_keys_refused() -> bool:
    """Development is over once JWT_SECRET is a real secret; settings refuse the default with debug
    off, so with debug off this is always true."""
    return settings.JWT_SECRET not in settings.DEVELOPMENT_JWT_SECRETS


def _usable(keys: QuerySet[SigningKey]) -> QuerySet[SigningKey]:
    return keys.exclude(kid__in=development_kids()) if development_keys_refused() else keys


def stranded_development_kids() -> list[str]:
    """Development keys still active or verifying in the database; with debug off they are ignored."""
    return sorted(
        SigningKey.objects.exclude(state=SigningKeyState.RETIRED).filter(kid__in=development_kids()).values_list("kid", flat=True)
    )


def report_stranded_development_keys() -> None:
    """One start-up line, with the fix, while a development key is left in a production database."""
    if not development_keys_refused():
        return
    try:
        kids = stranded_development_kids()
    except DatabaseError:
        return  # not migrated yet: there is no key at all
    if kids:
        log_event(
            logger,
            "Development signing key ignored: it neither signs nor verifies (tokens it signed are refused); "
            "retire it with: manage.py rotate_signing_key",
            logging.WARNING,
            kids=kids,
        )


async def report_stranded_development_keys_at_startup() -> None:
    await sync_to_async(report_stranded_development_keys)()


def longest_token_lifetime() -> dt.timedelta:
    return max(dt.timedelta(hours=settings.JWT_EXPIRATION_HOURS), dt.timedelta(days=settings.REFRESH_TOKEN_DAYS))


def ensure_active_signing_key() -> SigningKey:
    """The newest usable active key; seeds one from JWT_SECRET on a fresh database (or on one whose
    only active key is a refused development key)."""
    active = _usable(SigningKey.objects.filter(state=SigningKeyState.ACTIVE)).order_by("-created_at").first()
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
    usable = _usable(SigningKey.objects.filter(state__in=[SigningKeyState.ACTIVE, SigningKeyState.VERIFY_ONLY]))
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


register_process_state("signing keyring", forget_keyring)


def rotate_signing_key(*, actor: str, now: dt.datetime | None = None) -> SigningKey:
    """Make a new key the signer; the previous signers keep verifying until every token they may
    have signed has expired. Development keys, once refused (a real JWT_SECRET), are retired at
    once instead: their tokens are forgeable, so none is worth keeping."""
    now = now or timezone.now()
    with transaction.atomic():
        previous = list(SigningKey.objects.select_for_update().filter(state=SigningKeyState.ACTIVE))
        verify_until = now + longest_token_lifetime() + LATE_SIGNING_MARGIN
        for key in previous:
            key.state = SigningKeyState.VERIFY_ONLY
            key.verify_until = verify_until
            key.save(update_fields=["state", "verify_until"])
        if development_keys_refused():
            _retire_development_keys(now)
        new_key = SigningKey.objects.create(
            kid="k" + secrets.token_hex(6),
            encrypted_secret=encrypt_secret(secrets.token_urlsafe(48)),
            state=SigningKeyState.ACTIVE,
            created_at=now,
        )
        record_audit_event(
            AuditKind.SIGNING_KEY_ROTATED,
            actor=actor,
            now=now,
            detail={"kid": new_key.kid, "previous": [key.kid for key in previous]},
        )
    forget_keyring()
    log_event(logger, "Signing key rotated", kid=new_key.kid, previous=[key.kid for key in previous], actor=actor)
    return new_key


def _retire_development_keys(now: dt.datetime) -> None:
    development = SigningKey.objects.select_for_update().exclude(state=SigningKeyState.RETIRED).filter(kid__in=development_kids())
    for key in development:
        key.state = SigningKeyState.RETIRED
        key.retired_at = now
        key.encrypted_secret = ""
        key.save(update_fields=["state", "retired_at", "encrypted_secret"])
        record_audit_event(AuditKind.SIGNING_KEY_RETIRED, actor="system", now=now, detail={"kid": key.kid, "development": True})


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
