"""Refresh with rotation: a refresh token (or, as in the seed, a still-valid wrapper token) is
exchanged once for a new pair in the same family. Presenting it a second time means two parties hold
it, so the whole family is revoked and both must bootstrap again (stolen-token detection).

Not on the hot path: this reads the database, which is the authority here, not the caches.
"""
from __future__ import annotations

import datetime as dt
import logging

import jwt
from django.db import transaction
from django.utils import timezone

from gateway.errors import (
    AuthenticationFailed,
    DeviceBlocked,
    DevicePendingApproval,
    GatewayError,
    RefreshTokenReused,
    TokenRevoked,
)
from proxyproject.logging import log_event
from tokens.audit import ClientInfo, record_audit_event
from tokens.device_state import invalidate_devices
from tokens.issuance import DeviceRefreshToken, TokenPair, WrapperToken, issue_token_pair, verify_token_loading_keys
from tokens.models import AuditKind, Device, DeviceStatus, IssuedToken, TokenKind

logger = logging.getLogger("tokens.refresh")

_TOKEN_CLASSES = {TokenKind.REFRESH.value: DeviceRefreshToken, TokenKind.ACCESS.value: WrapperToken}


def _verified_claims(raw_token: str) -> dict:
    """Pick the token class by its (unverified) type, then verify fully with that class."""
    try:
        token_type = jwt.decode(raw_token, options={"verify_signature": False}).get("token_type")
    except jwt.InvalidTokenError:
        raise AuthenticationFailed("Invalid token.") from None
    token_class = _TOKEN_CLASSES.get(token_type)
    if token_class is None:
        raise AuthenticationFailed("Invalid token.")
    return verify_token_loading_keys(raw_token, token_class).payload


def revoked_before(device: Device) -> dt.datetime | None:
    org = device.organization
    stamps = [stamp for stamp in (device.tokens_revoked_before, org.tokens_revoked_before if org else None) if stamp]
    return max(stamps) if stamps else None


def _refusal(device: Device, issued: IssuedToken, iat: float) -> GatewayError | None:
    if device.status == DeviceStatus.BLOCKED:
        return DeviceBlocked()
    if device.status == DeviceStatus.PENDING:
        return DevicePendingApproval()
    cutoff = revoked_before(device)
    if issued.revoked_at is not None or (cutoff is not None and iat < cutoff.timestamp()):
        return TokenRevoked()
    if issued.used_at is not None:
        return RefreshTokenReused()
    return None


def refresh_token_pair(*, raw_token: str, client: ClientInfo, now: dt.datetime | None = None) -> TokenPair:
    now = now or timezone.now()
    claims = _verified_claims(raw_token)
    with transaction.atomic():
        issued = IssuedToken.objects.select_for_update().filter(jti=claims["jti"]).first()
        if issued is None:
            raise AuthenticationFailed("Invalid token.")
        device = Device.objects.select_related("organization").get(pk=issued.device_id)
        if device.device_id != claims["sub"]:
            raise AuthenticationFailed("Invalid token.")
        refusal = _refusal(device, issued, float(claims["iat"]))
        if isinstance(refusal, RefreshTokenReused):
            _revoke_family(device, issued, client, now)
        elif refusal is None:
            issued.used_at = now
            issued.save(update_fields=["used_at"])
            pair = issue_token_pair(device=device, client=client, family=issued.family, now=now)
            device.last_seen_at = now
            device.last_ip = client.ip
            device.save(update_fields=["last_seen_at", "last_ip", "updated_at"])
            record_audit_event(
                AuditKind.REFRESH, device=device, jti=pair.access_jti, client=client, now=now,
                detail={"family": issued.family, "presented": issued.jti, "presented_kind": issued.kind},
            )
    if refusal is not None:
        log_event(logger, "Refresh refused", logging.WARNING, device_id=device.device_id, reason=refusal.error_code, ip=client.ip)
        raise refusal
    return pair


def _revoke_family(device: Device, issued: IssuedToken, client: ClientInfo, now: dt.datetime) -> None:
    revoked = IssuedToken.objects.filter(family=issued.family, revoked_at__isnull=True).update(revoked_at=now)
    record_audit_event(
        AuditKind.REUSE_DETECTED, device=device, jti=issued.jti, client=client, now=now,
        detail={"family": issued.family, "revoked_tokens": revoked, "first_used_at": issued.used_at.isoformat()},
    )
    transaction.on_commit(lambda: invalidate_devices([device.device_id]))
