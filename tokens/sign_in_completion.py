"""The database side of a person's sign-in on a device: the sign-in's stored state, and its end —
the person found or created, the device enrolled (or re-enrolled) as theirs, a token pair issued.

A device that already has a secret is the person's only if the client presented that secret, as at
/bootstrap: knowing a device id is not enough to take it over, even with a valid sign-in."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from proxyproject.lib.encryption import encrypt_secret
from proxyproject.lib.errors import DeviceBlocked, DeviceSecretInvalid, GatewayError
from tokens.audit import ClientInfo, record_audit_event
from tokens.description import DeviceDescription
from tokens.device_secrets import generate_device_secret, hash_device_secret
from tokens.device_state import invalidate_devices
from tokens.enrollment import Enrollment, device_proven, locked_device_or_new
from tokens.issuance import issue_token_pair
from tokens.models import AuditKind, Device, DeviceStatus, Person, SignIn
from tokens.people import sign_in_person


def handle_hash(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


def find_sign_in(handle: str, now: dt.datetime) -> SignIn | None:
    """The unexpired sign-in the handle names; expired ones are deleted on the way."""
    SignIn.objects.filter(expires_at__lte=now).delete()
    return SignIn.objects.filter(handle_sha256=handle_hash(handle)).first()


def claim_poll(sign_in: SignIn, now: dt.datetime) -> bool:
    """Whether this poll may ask the provider now: one per interval for the sign-in, however many
    clients (or processes) poll at once, so the gateway never earns the provider's slow_down."""
    return bool(
        SignIn.objects.filter(pk=sign_in.pk, next_poll_at__lte=now).update(
            next_poll_at=now + dt.timedelta(seconds=sign_in.interval)
        )
    )


def slow_down(sign_in: SignIn) -> int:
    """RFC 8628 3.5: after slow_down, every later poll waits 5 seconds more."""
    sign_in.interval += 5
    SignIn.objects.filter(pk=sign_in.pk).update(interval=sign_in.interval)
    return sign_in.interval


def consume_sign_in(sign_in: SignIn) -> bool:
    """Delete the sign-in; True for the one caller that did, so a sign-in ends exactly once."""
    return SignIn.objects.filter(pk=sign_in.pk).delete()[0] > 0


def record_sign_in_refusal(*, device_id: str, reason: str, client: ClientInfo, now: dt.datetime) -> None:
    device = Device.objects.filter(device_id__iexact=device_id).first()
    record_audit_event(
        AuditKind("sign_in_refused"), device=device, device_ref=device_id, client=client, now=now, detail={"reason": reason}
    )


@dataclass(frozen=True, slots=True)
class SignedIn:
    enrollment: Enrollment
    person_id: int


def _device_refusal(device: Device, created: bool, device_secret: str | None) -> GatewayError | None:
    if device.status == DeviceStatus.BLOCKED:
        return DeviceBlocked()
    if not device_proven(device, created, device_secret):
        return DeviceSecretInvalid()
    return None


def complete_sign_in(
    *,
    sign_in: SignIn,
    claims: dict[str, Any],
    device_secret: str | None,
    provider_refresh_token: str | None,
    client: ClientInfo,
    now: dt.datetime,
) -> SignedIn:
    """Enroll the sign-in's device as the person's and issue its token pair. The person's sign-in is
    the device's approval, whatever /bootstrap's mode. Raises PersonBlocked, DeviceBlocked or
    DeviceSecretInvalid."""
    with transaction.atomic():
        person = sign_in_person(claims=claims, now=now)
        device, created = locked_device_or_new(sign_in.device_id, DeviceStatus("active"), sign_in.app_version)
        refusal = _device_refusal(device, created, device_secret)
        if refusal is None:
            enrollment = _enroll_for(device, person, sign_in, device_secret, provider_refresh_token, client, now, created)
    if refusal is not None:
        raise refusal
    transaction.on_commit(lambda: invalidate_devices([device.device_id]))
    return SignedIn(enrollment, person.pk)


def _enroll_for(
    device: Device,
    person: Person,
    sign_in: SignIn,
    device_secret: str | None,
    provider_refresh_token: str | None,
    client: ClientInfo,
    now: dt.datetime,
    created: bool,
) -> Enrollment:
    new_secret = None
    if not device.secret_hash:
        new_secret = device_secret or generate_device_secret()
        device.secret_hash = hash_device_secret(new_secret)
    previous_person = device.person_id
    device.status = DeviceStatus("active")  # a pending device: the person's sign-in is its approval
    device.person = person
    device.organization = person.organization or device.organization
    device.provider_refresh_token = encrypt_secret(provider_refresh_token) if provider_refresh_token else ""
    device.app_version = sign_in.app_version or device.app_version
    described = DeviceDescription(**sign_in.description).changed_fields()
    for field, value in described.items():
        setattr(device, field, value)
    device.last_seen_at = now
    device.last_ip = client.ip
    device.save()
    pair = issue_token_pair(device=device, client=client, now=now)
    record_audit_event(
        AuditKind("person_signed_in"),
        device=device,
        person=person,
        jti=pair.access_jti,
        client=client,
        now=now,
        detail={
            "person": str(person),
            "flow": sign_in.flow,
            "created": created,
            "previous_person": previous_person,
            "family": pair.family,
            "secret_set": new_secret is not None,
        },
    )
    return Enrollment(device.device_id, device.status, pair, new_secret)
