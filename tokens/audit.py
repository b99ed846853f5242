"""The audit trail: one row per issue, refresh, reuse detection, revocation and operator action on a
device, and the same facts as one structured log line (for log shippers and alerting)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from django.utils import timezone

from proxyproject.lib.client_address import client_ip
from proxyproject.lib.logging import log_event
from tokens.models import AuditEvent, AuditKind, Device, Organization, Person

logger = logging.getLogger("tokens.audit")

_WARNING_KINDS = {AuditKind.REUSE_DETECTED, AuditKind.ENROLLMENT_REFUSED, AuditKind.SIGN_IN_REFUSED}


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is calling, as far as the network can tell: for the audit row and the abuse limits."""

    ip: str | None = None
    user_agent: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> ClientInfo:
        # The peer, or behind proxies listed in TRUSTED_PROXIES the client they name.
        return cls(ip=client_ip(request) or None, user_agent=request.headers.get("user-agent", "")[:512])


SYSTEM = ClientInfo()

Actor = str | AbstractBaseUser | AnonymousUser  # AnonymousUser: `request.user` as typed; the admin lets only staff act


def actor_label(actor: Actor) -> str:
    """Operators act as themselves (admin: `request.user`); commands and tasks pass a label."""
    return actor if isinstance(actor, str) else f"user:{actor.get_username()}"


def record_audit_event(
    kind: AuditKind,
    *,
    device: Device | None = None,
    device_ref: str = "",
    organization: Organization | None = None,
    person: Person | None = None,
    jti: str = "",
    client: ClientInfo = SYSTEM,
    actor: Actor = "",
    now: dt.datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    actor = actor_label(actor)
    event = AuditEvent.objects.create(
        occurred_at=now or timezone.now(),
        kind=kind,
        device=device,
        device_ref=device.device_id if device is not None else device_ref,
        organization_id=device.organization_id if device is not None else (organization.pk if organization else None),
        person_id=person.pk if person is not None else (device.person_id if device is not None else None),
        jti=jti,
        ip=client.ip,
        user_agent=client.user_agent,
        actor=actor,
        detail=detail or {},
    )
    log_event(
        logger,
        f"Token audit: {kind.label}",
        logging.WARNING if kind in _WARNING_KINDS else logging.INFO,
        kind=str(kind),
        device_id=event.device_ref,
        jti=jti,
        ip=client.ip,
        actor=actor,
        detail=event.detail,
    )
    return event
