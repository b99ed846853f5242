"""Refresh with rotation: a grant (the wrapper and refresh token issued together) is exchanged once,
through either member (the refresh token, or as in the seed a still-valid wrapper token), for a new
grant in the same family. Presenting a member of a spent grant means two parties hold it, so the
whole family is revoked and both must bootstrap again (stolen-token detection): a thief holding
the wrapper and the owner holding the refresh token cannot each keep a branch of the family.

Not on the hot path: this reads the database, which is the authority here, not the caches.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import jwt
from django.db import transaction
from django.utils import timezone

from proxyproject.lib.errors import (
    AuthenticationFailed,
    DeviceBlocked,
    DevicePendingApproval,
    GatewayError,
    PersonBlocked,
    RefreshTokenReused,
    TokenRevoked,
)
from proxyproject.lib.logging import log_event
from tokens.audit import ClientInfo, record_audit_event
from tokens.device_state import invalidate_devices
from tokens.issuance import DeviceRefreshToken, TokenPair, WrapperToken, issue_token_pair, verify_token_loading_keys
from tokens.models import AuditKind, Device, DeviceStatus, IssuedToken, TokenKind

logger = logging.getLogger("tokens.refresh")

_TOKEN_CLASSES = {TokenKind.REFRESH.value: DeviceRefreshToken, TokenKind.ACCESS.value: WrapperToken}


def _verified_claims(raw_token: str) -> dict[str, Any]:
    """Pick the token class by its (unverified) type, then verify fully with that class."""
    try:
        token_type = jwt.decode(raw_token, options={"verify_signature": False}).get("token_type")
    except jwt.InvalidTokenError:
        raise AuthenticationFailed("Invalid token.") from None
    token_class = _TOKEN_CLASSES.get(token_type) if isinstance(token_type, str) else None
    if token_class is None:
        raise AuthenticationFailed("Invalid token.")
    return verify_token_loading_keys(raw_token, token_class).payload


def revoked_before(device: Device) -> dt.datetime | None:
    org = device.organization
    stamps = [stamp for stamp in (device.tokens_revoked_before, org.tokens_revoked_before if org else None) if stamp]
    return max(stamps) if stamps else None


def _standing_refusal(device: Device, issued: IssuedToken, iat: float) -> GatewayError | None:
    """What refuses the token whatever its grant's state: the device's status, or a revocation."""
    if device.status == DeviceStatus.BLOCKED:
        return DeviceBlocked()
    if device.status == DeviceStatus.PENDING:
        return DevicePendingApproval()
    if device.person is not None and device.person.blocked:
        return PersonBlocked()
    cutoff = revoked_before(device)
    if issued.revoked_at is not None or (cutoff is not None and iat < cutoff.timestamp()):
        return TokenRevoked()
    return None


def refresh_token_pair(*, raw_token: str, client: ClientInfo, now: dt.datetime | None = None) -> TokenPair:
    """Exchange a member of a grant (its wrapper or its refresh token) for a new grant in the family.

    The grant is spent by one conditional UPDATE of both its rows (`used_at IS NULL AND revoked_at
    IS NULL`): on PostgreSQL concurrent exchanges queue on the row locks and re-check the condition,
    on SQLite the IMMEDIATE transactions run one at a time, so of any number of concurrent exchanges
    of one grant exactly one spends it. Every other presentation of a spent grant, whichever member
    it shows, is reuse: the family is revoked.
    """
    now = now or timezone.now()
    claims = _verified_claims(raw_token)
    issued = IssuedToken.objects.select_related("device__organization", "device__person").filter(jti=claims["jti"]).first()
    if issued is None or issued.device.device_id != claims["sub"]:
        raise AuthenticationFailed("Invalid token.")
    device = issued.device
    refusal = _standing_refusal(device, issued, float(claims["iat"]))
    if refusal is None:
        with transaction.atomic():
            spent = IssuedToken.objects.filter(grant=issued.grant, used_at__isnull=True, revoked_at__isnull=True).update(
                used_at=now
            )
            if spent:
                pair = issue_token_pair(device=device, client=client, family=issued.family, now=now)
                device.last_seen_at = now
                device.last_ip = client.ip
                device.save(update_fields=["last_seen_at", "last_ip", "updated_at"])
                record_audit_event(
                    AuditKind.REFRESH,
                    device=device,
                    jti=pair.access_jti,
                    client=client,
                    now=now,
                    detail={
                        "family": issued.family,
                        "grant": issued.grant,
                        "presented": issued.jti,
                        "presented_kind": issued.kind,
                    },
                )
            else:
                refusal = _refusal_of_unspendable_grant(device, issued, client, now)
    if refusal is not None:
        log_event(logger, "Refresh refused", logging.WARNING, device_id=device.device_id, reason=refusal.error_code, ip=client.ip)
        raise refusal
    return pair


def _refusal_of_unspendable_grant(device: Device, issued: IssuedToken, client: ClientInfo, now: dt.datetime) -> GatewayError:
    """The grant was revoked (by an operator, or with its family), or it was spent: reuse."""
    members = list(IssuedToken.objects.filter(grant=issued.grant))
    if any(member.revoked_at is not None for member in members):
        return TokenRevoked()
    first_used_at = min(member.used_at for member in members if member.used_at is not None)
    _revoke_family(device, issued, client, now, first_used_at)
    return RefreshTokenReused()


def _revoke_family(device: Device, issued: IssuedToken, client: ClientInfo, now: dt.datetime, first_used_at: dt.datetime) -> None:
    revoked = IssuedToken.objects.filter(family=issued.family, revoked_at__isnull=True).update(revoked_at=now)
    record_audit_event(
        AuditKind.REUSE_DETECTED,
        device=device,
        jti=issued.jti,
        client=client,
        now=now,
        detail={
            "family": issued.family,
            "grant": issued.grant,
            "presented_kind": issued.kind,
            "revoked_tokens": revoked,
            "first_used_at": first_used_at.isoformat(),
        },
    )
    transaction.on_commit(lambda: invalidate_devices([device.device_id]))
