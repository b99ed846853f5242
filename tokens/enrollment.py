"""Bootstrap: a device enrolls (or comes back) and gets a token pair.

Modes (ENROLLMENT_MODE, see tokens.enrollment_modes): `open` lets any device enroll; `secret` needs
BOOTSTRAP_SECRET in the X-Bootstrap-Secret header; `approval` creates new devices pending until an
operator approves them. With none of them (`oidc` alone) /bootstrap refuses every device, and a
device a person signed in on is refused here whatever the mode: only a new sign-in enrolls it again
(tokens.sign_in), so blocking the person cannot be undone by the device secret.
Whatever the mode, an enrolled device must prove itself with its device secret, so knowing a device
id is not enough to take it over.

Device ids are compared ignoring case (and arrive NFC-normalised and trimmed, see
tokens.identifiers): the clients' ids are random hex or UUIDs, for which case carries no meaning, so
`RT-DEV-1` and `rt-dev-1` can only be one device, never two look-alikes in the admin. The id keeps
the spelling of its first enrollment.

Answers must not tell who is enrolled. In `secret` mode the bootstrap secret is checked before any
lookup. In `approval` mode a known device presenting no valid device secret gets exactly the answer
of an unknown one: pending approval, with a device secret (a decoy, never stored). In `open` mode
anyone may enroll, so a known id without its secret is refused where an unknown one enrolls: there,
device ids must be unguessable (the clients use 128-bit random ids).
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Value
from django.db.models.functions import Lower
from django.utils import timezone

from proxyproject.lib.errors import BootstrapSecretInvalid, DeviceBlocked, DeviceSecretInvalid, GatewayError, SignInRequired
from proxyproject.lib.logging import log_event
from tokens.audit import ClientInfo, record_audit_event
from tokens.description import NOT_DESCRIBED, DeviceDescription
from tokens.device_secrets import device_secret_matches, generate_device_secret, hash_device_secret
from tokens.device_state import invalidate_devices
from tokens.enrollment_modes import bootstrap_mode
from tokens.issuance import TokenPair, issue_token_pair
from tokens.models import AuditKind, Device, DeviceStatus

logger = logging.getLogger("tokens.enrollment")


@dataclass(frozen=True, slots=True)
class Enrollment:
    """`pair` is None while the device waits for approval. `device_secret` is set only when this
    call set the device's secret (first enrollment, or the first after an operator reset it): the
    one time the client can learn it."""

    device_id: str
    status: str
    pair: TokenPair | None
    device_secret: str | None


def check_bootstrap_secret(presented: str | None) -> None:
    expected = settings.BOOTSTRAP_SECRET
    if not expected or not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise BootstrapSecretInvalid()


def _locked_device(device_id: str) -> Device | None:
    """The device whose id equals `device_id` ignoring case. The comparison is the unique index's own
    expression on both sides, so it uses that index and agrees with it on every database."""
    return Device.objects.select_for_update().alias(key=Lower("device_id")).filter(key=Lower(Value(device_id))).first()


def locked_device_or_new(device_id: str, status: str, app_version: str) -> tuple[Device, bool]:
    device = _locked_device(device_id)
    if device is not None:
        return device, False
    try:
        with transaction.atomic():
            return Device.objects.create(device_id=device_id, status=status, app_version=app_version), True
    except IntegrityError:  # enrolled concurrently, maybe in another spelling
        device = _locked_device(device_id)
        if device is None:  # and deleted since: the conflict stands
            raise
        return device, False


def device_proven(device: Device, created: bool, device_secret: str | None) -> bool:
    """Whether the caller may act as this device: it is new, it has no secret yet (first enrollment,
    or an operator reset it), or the caller presented its secret."""
    return created or not device.secret_hash or device_secret_matches(device_secret, device.secret_hash)


def _refusal(device: Device, created: bool, device_secret: str | None) -> GatewayError | None:
    if bootstrap_mode() == "approval" and not device_proven(device, created, device_secret):
        return DeviceSecretInvalid()  # answered as for an unknown device: see _as_if_unknown
    if device.status == DeviceStatus.BLOCKED:
        return DeviceBlocked()
    if not device_proven(device, created, device_secret):
        return DeviceSecretInvalid()
    if device.person_id is not None:
        return SignInRequired()  # else a blocked or disabled person's device secret would be a way back in
    return None


def _as_if_unknown(device_id: str) -> Enrollment:
    """What a first bootstrap of `device_id` answers in approval mode; its secret is a decoy."""
    return Enrollment(device_id, DeviceStatus.PENDING, None, generate_device_secret())


def bootstrap_device(
    *,
    device_id: str,
    app_version: str,
    device_secret: str | None,
    bootstrap_secret: str | None,
    client: ClientInfo,
    description: DeviceDescription = NOT_DESCRIBED,
    now: dt.datetime | None = None,
) -> Enrollment:
    """Enroll or re-enroll a device. Raises BootstrapSecretInvalid, DeviceSecretInvalid or
    DeviceBlocked (after recording the refusal); returns a pending Enrollment in approval mode."""
    now = now or timezone.now()
    if bootstrap_mode() is None:
        raise SignInRequired()
    if bootstrap_mode() == "secret":
        try:
            check_bootstrap_secret(bootstrap_secret)
        except BootstrapSecretInvalid:
            log_event(logger, "Bootstrap refused: bootstrap secret", logging.WARNING, device_id=device_id, ip=client.ip)
            raise
    initial_status = DeviceStatus.PENDING if bootstrap_mode() == "approval" else DeviceStatus.ACTIVE
    with transaction.atomic():
        device, created = locked_device_or_new(device_id, initial_status, app_version)
        refusal = _refusal(device, created, device_secret)
        if refusal is not None:
            record_audit_event(
                AuditKind.ENROLLMENT_REFUSED, device=device, client=client, now=now, detail={"reason": refusal.error_code}
            )
            enrollment = None
        else:
            enrollment = _enroll(device, created, app_version, description, device_secret, client, now)
        if created:
            transaction.on_commit(lambda: invalidate_devices([device_id]))
    if isinstance(refusal, DeviceSecretInvalid) and bootstrap_mode() == "approval":
        return _as_if_unknown(device_id)
    if refusal is not None:
        raise refusal
    assert enrollment is not None  # made whenever nothing refused
    return enrollment


def _enroll(
    device: Device,
    created: bool,
    app_version: str,
    description: DeviceDescription,
    device_secret: str | None,
    client: ClientInfo,
    now: dt.datetime,
) -> Enrollment:
    new_secret = None
    if not device.secret_hash:
        new_secret = device_secret or generate_device_secret()
        device.secret_hash = hash_device_secret(new_secret)
    device.app_version = app_version or device.app_version
    described = description.changed_fields()
    for field, value in described.items():
        setattr(device, field, value)
    device.last_seen_at = now
    device.last_ip = client.ip
    device.save(update_fields=["secret_hash", "app_version", *described, "last_seen_at", "last_ip", "updated_at"])
    if device.status == DeviceStatus.PENDING:
        record_audit_event(
            AuditKind.ENROLLMENT_REFUSED,
            device=device,
            client=client,
            now=now,
            detail={"reason": "device_pending_approval", "created": created},
        )
        return Enrollment(device.device_id, device.status, None, new_secret)
    pair = issue_token_pair(device=device, client=client, now=now)
    record_audit_event(
        AuditKind.BOOTSTRAP,
        device=device,
        jti=pair.access_jti,
        client=client,
        now=now,
        detail={
            "family": pair.family,
            "created": created,
            "app_version": device.app_version,
            "secret_set": new_secret is not None,
        },
    )
    return Enrollment(device.device_id, device.status, pair, new_secret)
