"""Revocation per token, per device, per person and per organization, and the operator actions on a
device or a person (approve, block, reset its secret). The admin, the commands and the API all call these.

Each writes the database (the authority) and, once committed, invalidates the hot-path caches
(`device_state`), so every gateway process refuses the revoked tokens within
REVOCATION_CACHE_SECONDS. Device and organization revocations set a "tokens issued before" cutoff
as well as marking the rows, so they hold even for a token whose row is gone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from tokens.audit import SYSTEM, Actor, ClientInfo, record_audit_event
from tokens.device_state import invalidate_all_devices, invalidate_devices
from tokens.models import AuditKind, Device, DeviceStatus, IssuedToken, Organization, Person


class TokenNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class RevocationResult:
    revoked_tokens: int
    devices: int


def _revoke_rows(tokens: QuerySet[IssuedToken], now: dt.datetime) -> int:
    return tokens.filter(revoked_at__isnull=True, expires_at__gt=now).update(revoked_at=now)


def revoke_token(*, jti: str, actor: Actor, client: ClientInfo = SYSTEM, now: dt.datetime | None = None) -> IssuedToken:
    """Revoke the token's whole grant: a wrapper left alive beside its revoked refresh token (or the
    other way round) could still be exchanged for a fresh pair."""
    now = now or timezone.now()
    with transaction.atomic():
        issued = IssuedToken.objects.select_related("device").filter(jti=jti).first()
        if issued is None:
            raise TokenNotFound(jti)
        revoked = IssuedToken.objects.filter(grant=issued.grant, revoked_at__isnull=True).update(revoked_at=now)
        issued.refresh_from_db(fields=["revoked_at"])
        record_audit_event(
            AuditKind.TOKEN_REVOKED,
            device=issued.device,
            jti=jti,
            client=client,
            actor=actor,
            now=now,
            detail={"kind": issued.kind, "grant": issued.grant, "revoked_tokens": revoked},
        )
        transaction.on_commit(lambda: invalidate_devices([issued.device.device_id]))
    return issued


def _revoke_device_in_transaction(device: Device, now: dt.datetime) -> int:
    device.tokens_revoked_before = now
    device.save(update_fields=["tokens_revoked_before", "updated_at"])
    return _revoke_rows(IssuedToken.objects.filter(device=device), now)


def revoke_device_tokens(
    *, device: Device, actor: Actor, client: ClientInfo = SYSTEM, now: dt.datetime | None = None
) -> RevocationResult:
    """Every token the device holds stops working; it must bootstrap again (with its secret)."""
    now = now or timezone.now()
    with transaction.atomic():
        count = _revoke_device_in_transaction(device, now)
        record_audit_event(
            AuditKind.DEVICE_REVOKED, device=device, client=client, actor=actor, now=now, detail={"revoked_tokens": count}
        )
        transaction.on_commit(lambda: invalidate_devices([device.device_id]))
    return RevocationResult(revoked_tokens=count, devices=1)


def revoke_organization_tokens(
    *, organization: Organization, actor: Actor, client: ClientInfo = SYSTEM, now: dt.datetime | None = None
) -> RevocationResult:
    now = now or timezone.now()
    with transaction.atomic():
        organization.tokens_revoked_before = now
        organization.save(update_fields=["tokens_revoked_before", "updated_at"])
        count = _revoke_rows(IssuedToken.objects.filter(device__organization=organization), now)
        devices = organization.devices.count()
        record_audit_event(
            AuditKind.ORG_REVOKED,
            organization=organization,
            device_ref="",
            client=client,
            actor=actor,
            now=now,
            detail={"organization": organization.name, "revoked_tokens": count, "devices": devices},
        )
        transaction.on_commit(invalidate_all_devices)
    return RevocationResult(revoked_tokens=count, devices=devices)


def _revoke_person_in_transaction(person: Person, now: dt.datetime) -> tuple[int, list[str]]:
    devices = list(Device.objects.select_for_update().filter(person=person))
    count = sum(_revoke_device_in_transaction(device, now) for device in devices)
    return count, [device.device_id for device in devices]


def revoke_person_tokens(
    *, person: Person, actor: Actor, client: ClientInfo = SYSTEM, now: dt.datetime | None = None
) -> RevocationResult:
    """Every token of every device the person signed in on stops working; each device must sign
    the person in again."""
    now = now or timezone.now()
    with transaction.atomic():
        count, device_ids = _revoke_person_in_transaction(person, now)
        record_audit_event(
            AuditKind.PERSON_REVOKED,
            person=person,
            device_ref="",
            client=client,
            actor=actor,
            now=now,
            detail={"person": str(person), "revoked_tokens": count, "devices": len(device_ids)},
        )
        transaction.on_commit(lambda: invalidate_devices(device_ids))
    return RevocationResult(revoked_tokens=count, devices=len(device_ids))


def block_person(*, person: Person, actor: Actor, now: dt.datetime | None = None) -> RevocationResult:
    """Cut the person off everywhere: every device's tokens are revoked (refused by every gateway
    process within REVOCATION_CACHE_SECONDS), and neither a refresh nor a new sign-in is accepted
    until an operator unblocks the person."""
    now = now or timezone.now()
    with transaction.atomic():
        person.blocked = True
        person.save(update_fields=["blocked", "updated_at"])
        count, device_ids = _revoke_person_in_transaction(person, now)
        record_audit_event(
            AuditKind.PERSON_BLOCKED,
            person=person,
            device_ref="",
            actor=actor,
            now=now,
            detail={"person": str(person), "revoked_tokens": count, "devices": len(device_ids)},
        )
        transaction.on_commit(lambda: invalidate_devices(device_ids))
    return RevocationResult(revoked_tokens=count, devices=len(device_ids))


def unblock_person(*, person: Person, actor: Actor, now: dt.datetime | None = None) -> Person:
    """The person may sign in again; the old tokens stay revoked."""
    now = now or timezone.now()
    with transaction.atomic():
        person.blocked = False
        person.save(update_fields=["blocked", "updated_at"])
        record_audit_event(AuditKind.PERSON_UNBLOCKED, person=person, device_ref="", actor=actor, now=now)
    return person


def approve_device(*, device: Device, actor: Actor, now: dt.datetime | None = None) -> Device:
    """Pending (or blocked) → active. The device's next bootstrap gets tokens. The admin and the
    commands offer it for pending devices and `unblock_device` for blocked ones, so the audit
    trail says which decision was made."""
    now = now or timezone.now()
    with transaction.atomic():
        previous = device.status
        device.status = DeviceStatus.ACTIVE
        device.save(update_fields=["status", "updated_at"])
        record_audit_event(AuditKind.DEVICE_APPROVED, device=device, actor=actor, now=now, detail={"previous_status": previous})
        transaction.on_commit(lambda: invalidate_devices([device.device_id]))
    return device


def block_device(*, device: Device, actor: Actor, now: dt.datetime | None = None) -> Device:
    """Refused on every endpoint from now on; its tokens are revoked too, so unblocking later does
    not bring old tokens back to life."""
    now = now or timezone.now()
    with transaction.atomic():
        device.status = DeviceStatus.BLOCKED
        count = _revoke_device_in_transaction(device, now)
        device.save(update_fields=["status", "updated_at"])
        record_audit_event(AuditKind.DEVICE_BLOCKED, device=device, actor=actor, now=now, detail={"revoked_tokens": count})
        transaction.on_commit(lambda: invalidate_devices([device.device_id]))
    return device


def unblock_device(*, device: Device, actor: Actor, now: dt.datetime | None = None) -> Device:
    """Blocked → active: the device may bootstrap again (with its device secret). Its old tokens
    stay revoked, so it must enroll anew."""
    now = now or timezone.now()
    with transaction.atomic():
        device.status = DeviceStatus.ACTIVE
        device.save(update_fields=["status", "updated_at"])
        record_audit_event(AuditKind.DEVICE_UNBLOCKED, device=device, actor=actor, now=now)
        transaction.on_commit(lambda: invalidate_devices([device.device_id]))
    return device


def reset_device_secret(*, device: Device, actor: Actor, now: dt.datetime | None = None) -> Device:
    """For a device that lost its secret (reinstall): its next bootstrap sets a new one, as on first
    enrollment. Its current tokens keep working; revoke them too if the device was compromised."""
    now = now or timezone.now()
    with transaction.atomic():
        device.secret_hash = ""
        device.save(update_fields=["secret_hash", "updated_at"])
        record_audit_event(AuditKind.DEVICE_SECRET_RESET, device=device, actor=actor, now=now)
    return device


def policy_changed(
    *, device: Device | None = None, organization: Organization | None = None, person: Person | None = None
) -> None:
    """After an operator edits a device's, person's or organization's policy: drop the cached copies
    once the change is committed."""
    if person is not None:
        device_ids = list(Device.objects.filter(person=person).values_list("device_id", flat=True))
        transaction.on_commit(lambda: invalidate_devices(device_ids))
    if organization is not None:
        transaction.on_commit(invalidate_all_devices)
    if device is not None:
        device_id = device.device_id
        transaction.on_commit(lambda: invalidate_devices([device_id]))
