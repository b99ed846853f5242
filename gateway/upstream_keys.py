"""Operator actions on the upstream key pool: add, rotate, retire, reactivate, reweigh; and what the
gateway and Celery do to it: seed it from ANTHROPIC_API_KEY, flag a key the upstream rejected,
record per-key counters, retire drained keys, find keys due for rotation.

Commands, admin actions and Celery tasks all call these. Each change is committed, written as one
audit log line naming the actor, and announced (`bump_pool_version`) so every gateway process
reloads its pool within seconds. Secrets are validated and encrypted here and never logged; logs
and screens show the last four characters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from gateway.key_check import KeyCheck, KeyVerdict, check_upstream_key
from gateway.keypool_shared import IN_FLIGHT_REPORT_SECONDS, bump_pool_version, shared_in_flight_counts
from gateway.metrics import register_state_reader
from gateway.models import MAX_WEIGHT, UpstreamKey, UpstreamKeyState
from proxyproject.lib.encryption import decrypt_secret, encrypt_secret
from proxyproject.lib.logging import log_event
from tokens.audit import Actor, actor_label

logger = logging.getLogger("gateway.upstream_keys")

ENVIRONMENT_KEY_NAME = "ANTHROPIC_API_KEY"
MIN_SECRET_LENGTH = 8
_SECRET_PATTERN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: it travels in an HTTP header
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DATED_SUFFIX = re.compile(r"-\d{8}(-\d+)?$")


class UpstreamKeyError(Exception):
    """An operator request that cannot be carried out; the message says why and what to do."""


class UpstreamKeyNotFound(UpstreamKeyError):
    pass


class UpstreamKeyConflict(UpstreamKeyError):
    pass


@dataclass(frozen=True, slots=True)
class Rotation:
    new: UpstreamKey
    old: UpstreamKey


@dataclass(slots=True)
class KeyStats:
    """What one gateway process saw of a key since it last wrote its counters."""

    requests: int = 0
    rejected: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    connection_failures: int = 0
    last_used: dt.datetime | None = None

    def merge(self, other: KeyStats) -> None:
        self.requests += other.requests
        self.rejected += other.rejected
        self.rate_limited += other.rate_limited
        self.server_errors += other.server_errors
        self.connection_failures += other.connection_failures
        if other.last_used is not None and (self.last_used is None or other.last_used > self.last_used):
            self.last_used = other.last_used


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def clean_secret(secret: str) -> str:
    """The secret as it will be sent: surrounding whitespace (a pasted newline) removed."""
    cleaned = secret.strip()
    if len(cleaned) < MIN_SECRET_LENGTH:
        raise UpstreamKeyError(f"The secret is empty or shorter than {MIN_SECRET_LENGTH} characters.")
    if not _SECRET_PATTERN.match(cleaned):
        raise UpstreamKeyError("The secret contains spaces or characters that cannot travel in an HTTP header.")
    return cleaned


def _check_name(name: str) -> str:
    if not _NAME_PATTERN.match(name):
        raise UpstreamKeyError(f"Invalid key name {name!r}: use letters, digits, '.', '_' or '-' (at most 100).")
    return name


def _check_weight(weight: int) -> int:
    if not 1 <= weight <= MAX_WEIGHT:
        raise UpstreamKeyError(f"Weight {weight} is out of range: use 1 to {MAX_WEIGHT}.")
    return weight


def _audit(action: str, key: UpstreamKey, actor: Actor, **fields: object) -> None:
    log_event(
        logger,
        f"Upstream key audit: {action}",
        logging.WARNING if action == "flagged" else logging.INFO,
        action=action,
        key=key.name,
        fingerprint=key.masked_secret,
        state=key.state,
        actor=actor_label(actor),
        **fields,
    )


def _announce_after_commit() -> None:
    transaction.on_commit(bump_pool_version)


def _get_for_update(name: str) -> UpstreamKey:
    key = UpstreamKey.objects.select_for_update().filter(name=name).first()
    if key is None:
        raise UpstreamKeyNotFound(f"No upstream key named {name!r}. See: manage.py list_upstream_keys")
    return key


def _refuse_known_secret(digest: str) -> None:
    known = UpstreamKey.objects.filter(secret_sha256=digest).first()
    if known is not None:
        raise UpstreamKeyConflict(f"This secret is already in the pool as {known.name!r} ({known.get_state_display().lower()}).")


def _check_can_create(name: str, secret: str) -> None:
    if UpstreamKey.objects.filter(name=name).exists():
        raise UpstreamKeyConflict(f"An upstream key named {name!r} exists already.")
    _refuse_known_secret(secret_digest(secret))


def _create(
    *, name: str, secret: str, weight: int, actor: Actor, now: dt.datetime, from_environment: bool = False
) -> UpstreamKey:
    _check_can_create(name, secret)
    return UpstreamKey.objects.create(
        name=name,
        encrypted_secret=encrypt_secret(secret),
        secret_sha256=secret_digest(secret),
        secret_last4=secret[-4:],
        weight=weight,
        created_at=now,
        created_by=actor_label(actor),
        from_environment=from_environment,
    )


def _refuse_unless_it_works(secret: str) -> None:
    """A key that does not work must not serve: every request it took would fail until flagged.
    Called before the transaction (an upstream call must not hold row locks), after the cheap
    checks that the transaction repeats."""
    check = check_upstream_key(secret)
    if not check.works:
        raise UpstreamKeyError(f"Key not added: {check.detail}. Check the secret, or skip the check with --no-verify.")


def add_upstream_key(
    *, name: str, secret: str, weight: int = 1, actor: Actor, verify: bool = False, now: dt.datetime | None = None
) -> UpstreamKey:
    """A new active key: it starts taking its weight's share of new requests within seconds.
    With `verify` (the commands' and the admin's default) it serves only once the upstream accepted it."""
    now = now or timezone.now()
    secret = clean_secret(secret)
    if verify:
        _check_can_create(_check_name(name), secret)
        _refuse_unless_it_works(secret)
    with transaction.atomic():
        key = _create(name=_check_name(name), secret=secret, weight=_check_weight(weight), actor=actor, now=now)
        _announce_after_commit()
    _audit("added", key, actor, weight=key.weight)
    return key


def _check_rotatable(old: UpstreamKey | None, name: str) -> None:
    if old is None:
        raise UpstreamKeyNotFound(f"No upstream key named {name!r}. See: manage.py list_upstream_keys")
    if old.state != UpstreamKeyState.ACTIVE:
        raise UpstreamKeyConflict(f"Key {name!r} is {old.state}: only an active key can be rotated.")


def _rotated_name(old_name: str, now: dt.datetime) -> str:
    base = _DATED_SUFFIX.sub("", old_name)[:80]
    candidate = f"{base}-{now:%Y%m%d}"
    suffix = 2
    while UpstreamKey.objects.filter(name=candidate).exists():
        candidate = f"{base}-{now:%Y%m%d}-{suffix}"
        suffix += 1
    return candidate


def rotate_upstream_key(
    *,
    name: str,
    secret: str,
    new_name: str | None = None,
    weight: int | None = None,
    actor: Actor,
    verify: bool = False,
    now: dt.datetime | None = None,
) -> Rotation:
    """Replace key `name` by a new one: the new key is active at once, the old one drains (requests
    in flight finish on it, new ones go elsewhere) until the drain task retires it. With `verify`
    the old key keeps serving unless the upstream accepted the new one."""
    now = now or timezone.now()
    secret = clean_secret(secret)
    if verify:
        _check_rotatable(UpstreamKey.objects.filter(name=name).first(), name)
        _check_can_create(_check_name(new_name) if new_name else "", secret)
        _refuse_unless_it_works(secret)
    with transaction.atomic():
        old = _get_for_update(name)
        _check_rotatable(old, name)
        new = _create(
            name=_check_name(new_name) if new_name else _rotated_name(old.name, now),
            secret=secret,
            weight=_check_weight(weight if weight is not None else old.weight),
            actor=actor,
            now=now,
        )
        old.state = UpstreamKeyState.DRAINING
        old.draining_since = now
        old.replaced_by = new
        old.save(update_fields=["state", "draining_since", "replaced_by"])
        _announce_after_commit()
    _audit("rotated", new, actor, previous=old.name, previousFingerprint=old.masked_secret)
    return Rotation(new=new, old=old)


def _other_usable_key_exists(key: UpstreamKey) -> bool:
    return UpstreamKey.objects.filter(state=UpstreamKeyState.ACTIVE, flagged_at__isnull=True).exclude(pk=key.pk).exists()


def _retire(key: UpstreamKey, now: dt.datetime) -> None:
    """The secret is wiped: a retired key never carries a request again (its digest stays, so the
    same secret cannot be added back by mistake)."""
    key.state = UpstreamKeyState.RETIRED
    key.retired_at = now
    key.encrypted_secret = ""
    key.save(update_fields=["state", "retired_at", "encrypted_secret"])


def retire_upstream_key(
    *, name: str, actor: Actor, allow_empty_pool: bool = False, now: dt.datetime | None = None
) -> UpstreamKey:
    """Take a key out of the pool now (requests already on it finish). Refused for the last usable
    key unless `allow_empty_pool`: without one every request would get 503 no_upstream_key."""
    now = now or timezone.now()
    with transaction.atomic():
        key = _get_for_update(name)
        if key.state == UpstreamKeyState.RETIRED:
            raise UpstreamKeyConflict(f"Key {name!r} is retired already.")
        if key.usable and not allow_empty_pool and not _other_usable_key_exists(key):
            raise UpstreamKeyConflict(
                f"Key {name!r} is the last usable key: retiring it would refuse every request. "
                "Add or rotate in a new key first (or force it)."
            )
        previous_state = key.state
        _retire(key, now)
        _announce_after_commit()
    _audit("retired", key, actor, previousState=previous_state)
    return key


def reactivate_upstream_key(*, name: str, actor: Actor) -> UpstreamKey:
    """Back into rotation: a draining key stops draining, a flagged one is unflagged (after the
    operator checked it works again). A retired key cannot come back: its secret is gone."""
    with transaction.atomic():
        key = _get_for_update(name)
        if key.state == UpstreamKeyState.RETIRED:
            raise UpstreamKeyConflict(f"Key {name!r} is retired and its secret wiped: add a new key instead.")
        if key.usable:
            raise UpstreamKeyConflict(f"Key {name!r} is active and not flagged already.")
        previous = {"previousState": key.state, "previousFlag": key.flagged_reason}
        key.state = UpstreamKeyState.ACTIVE
        key.draining_since = None
        key.flagged_at = None
        key.flagged_reason = ""
        key.save(update_fields=["state", "draining_since", "flagged_at", "flagged_reason"])
        _announce_after_commit()
    _audit("reactivated", key, actor, **previous)
    return key


def set_upstream_key_weight(*, name: str, weight: int, actor: Actor) -> UpstreamKey:
    with transaction.atomic():
        key = _get_for_update(name)
        previous = key.weight
        key.weight = _check_weight(weight)
        key.save(update_fields=["weight"])
        _announce_after_commit()
    _audit("reweighted", key, actor, weight=key.weight, previousWeight=previous)
    return key


def flag_upstream_key(
    *, key_id: int, reason: str, actor: Actor = "gateway", now: dt.datetime | None = None
) -> UpstreamKey | None:
    """The upstream rejected the key (401/403): out of rotation until an operator reactivates it.
    Idempotent, since every process that meets the rejection reports it."""
    now = now or timezone.now()
    with transaction.atomic():
        key = UpstreamKey.objects.select_for_update().filter(pk=key_id).first()
        if key is None or key.flagged_at is not None or key.state == UpstreamKeyState.RETIRED:
            return None
        key.flagged_at = now
        key.flagged_reason = reason[:200]
        key.save(update_fields=["flagged_at", "flagged_reason"])
        _announce_after_commit()
    _audit("flagged", key, actor, reason=key.flagged_reason)
    return key


def probe_upstream_key(*, name: str, actor: Actor) -> KeyCheck:
    """The operator's "Test key": the cheap upstream call with this key. A refused key is flagged
    out of rotation, as the gateway would; a working flagged key stays flagged until reactivated,
    so the operator decides when it serves again."""
    key = UpstreamKey.objects.filter(name=name).first()
    if key is None:
        raise UpstreamKeyNotFound(f"No upstream key named {name!r}. See: manage.py list_upstream_keys")
    if key.state == UpstreamKeyState.RETIRED:
        raise UpstreamKeyConflict(f"Key {name!r} is retired and its secret wiped: nothing to test.")
    check = check_upstream_key(decrypt_secret(key.encrypted_secret))
    _audit("tested", key, actor, verdict=str(check.verdict))
    if check.verdict is KeyVerdict.REFUSED:
        flag_upstream_key(key_id=key.pk, reason=f"Test: {check.detail}", actor=actor)
    return check


def _environment_key_name() -> str:
    candidate, suffix = ENVIRONMENT_KEY_NAME, 2
    while UpstreamKey.objects.filter(name=candidate).exists():
        candidate, suffix = f"{ENVIRONMENT_KEY_NAME}-{suffix}", suffix + 1
    return candidate


def seed_environment_key(secret: str, *, now: dt.datetime | None = None) -> UpstreamKey | None:
    """ANTHROPIC_API_KEY joins the pool the first time a process sees it: on a fresh database it
    is the first key; when it names a key the pool has never held, it becomes active and the key
    previously seeded from the environment drains. A secret the pool knows (in any state, retired
    included) changes nothing, so an old value left in the environment never brings a key back.
    Safe to run from many processes at once (the digest is unique)."""
    if not secret:
        return None
    digest = secret_digest(secret.strip())
    if UpstreamKey.objects.filter(secret_sha256=digest).exists():
        return None
    now = now or timezone.now()
    try:
        with transaction.atomic():
            cleaned = clean_secret(secret)
            key = _create(
                name=_environment_key_name(), secret=cleaned, weight=1, actor="environment", now=now, from_environment=True
            )
            previous = UpstreamKey.objects.select_for_update().filter(from_environment=True, state=UpstreamKeyState.ACTIVE)
            replaced = list(previous.exclude(pk=key.pk))
            for old in replaced:
                old.state, old.draining_since, old.replaced_by = UpstreamKeyState.DRAINING, now, key
                old.save(update_fields=["state", "draining_since", "replaced_by"])
            _announce_after_commit()
    except (IntegrityError, UpstreamKeyConflict):
        return None  # another process seeded it first
    except UpstreamKeyError as exc:
        log_event(logger, "ANTHROPIC_API_KEY not added to the pool", logging.ERROR, reason=str(exc))
        return None
    _audit("seeded", key, "environment", replacing=[old.name for old in replaced])
    return key


def record_upstream_key_stats(stats: Mapping[int, KeyStats]) -> None:
    """Add one process's counters to the rows: a few UPDATEs every few seconds, never per request."""
    for key_id, seen in stats.items():
        changes: dict[str, object] = {
            "request_count": F("request_count") + seen.requests,
            "rejected_count": F("rejected_count") + seen.rejected,
            "rate_limited_count": F("rate_limited_count") + seen.rate_limited,
            "server_error_count": F("server_error_count") + seen.server_errors,
            "connection_failure_count": F("connection_failure_count") + seen.connection_failures,
        }
        if seen.last_used is not None:
            changes["last_used_at"] = Greatest(Coalesce(F("last_used_at"), Value(seen.last_used)), Value(seen.last_used))
        UpstreamKey.objects.filter(pk=key_id).update(**changes)


def drain_settle_seconds() -> float:
    """How long after a key starts draining every gateway process has stopped choosing it (each
    confirms its pool at least every 2 x UPSTREAM_KEY_POOL_CACHE_SECONDS) and has reported the
    requests it still has on it (every IN_FLIGHT_REPORT_SECONDS). Before that, an in-flight count
    of zero does not yet mean the key is done."""
    return 2 * settings.UPSTREAM_KEY_POOL_CACHE_SECONDS + 2 * IN_FLIGHT_REPORT_SECONDS + 2.0


def retire_drained_upstream_keys(*, now: dt.datetime | None = None) -> list[str]:
    """Retire draining keys that carry no request in any process (known with Redis), or whose
    drain began UPSTREAM_KEY_DRAIN_GRACE_SECONDS ago. Never the last key that works: while no
    usable active key exists, the gateway falls back to draining keys, so they stay."""
    now = now or timezone.now()
    draining = list(UpstreamKey.objects.filter(state=UpstreamKeyState.DRAINING).order_by("draining_since"))
    if not draining:
        return []
    if not UpstreamKey.objects.filter(state=UpstreamKeyState.ACTIVE, flagged_at__isnull=True).exists():
        log_event(
            logger,
            "Draining upstream keys kept: no usable active key to take over",
            logging.ERROR,
            keys=[key.name for key in draining],
        )
        return []
    in_flight = shared_in_flight_counts(key.pk for key in draining)
    settle = dt.timedelta(seconds=drain_settle_seconds())
    grace = dt.timedelta(seconds=settings.UPSTREAM_KEY_DRAIN_GRACE_SECONDS)
    retired = []
    for key in draining:
        waited = now - (key.draining_since or now)
        idle = in_flight is not None and in_flight.get(key.pk, 0) == 0 and waited >= settle
        if not idle and waited < grace:
            continue
        with transaction.atomic():
            locked = UpstreamKey.objects.select_for_update().get(pk=key.pk)
            if locked.state != UpstreamKeyState.DRAINING:
                continue
            _retire(locked, now)
            _announce_after_commit()
        _audit(
            "retired",
            locked,
            "schedule",
            reason="drained" if idle else "drain grace period over",
            drainedSeconds=round(waited.total_seconds(), 1),
        )
        retired.append(locked.name)
    return retired


def upstream_keys_due_for_rotation(*, now: dt.datetime | None = None) -> list[UpstreamKey]:
    """Active keys older than UPSTREAM_KEY_ROTATION_DAYS, oldest first."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.UPSTREAM_KEY_ROTATION_DAYS)
    return list(UpstreamKey.objects.filter(state=UpstreamKeyState.ACTIVE, created_at__lte=cutoff).order_by("created_at"))


def warn_about_old_upstream_keys(*, now: dt.datetime | None = None) -> list[str]:
    now = now or timezone.now()
    due = upstream_keys_due_for_rotation(now=now)
    for key in due:
        log_event(
            logger,
            "Upstream key due for rotation",
            logging.WARNING,
            key=key.name,
            fingerprint=key.masked_secret,
            ageDays=(now - key.created_at).days,
            rotationDays=settings.UPSTREAM_KEY_ROTATION_DAYS,
            hint=f"manage.py rotate_upstream_key {key.name}",
        )
    return [key.name for key in due]


@register_state_reader
def upstream_key_gauges() -> Iterable[GaugeMetricFamily]:
    """Keys by state and those flagged out of rotation: an alert can watch the pool shrink."""
    by_state = dict(UpstreamKey.objects.order_by().values_list("state").annotate(Count("pk")))
    keys = GaugeMetricFamily("gateway_upstream_keys", "Upstream keys by state.", labels=["state"])
    for state in UpstreamKeyState.values:
        keys.add_metric([state], by_state.get(state, 0))
    yield keys
    flagged = UpstreamKey.objects.filter(flagged_at__isnull=False).exclude(state=UpstreamKeyState.RETIRED).count()
    yield GaugeMetricFamily(
        "gateway_upstream_keys_flagged", "Upstream keys the upstream rejected (401/403), out of rotation.", value=flagged
    )
