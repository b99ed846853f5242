"""A signed-in device's session at the identity provider, renewed at each of the device's refreshes.

The provider's refresh token from the sign-in (asked for with `offline_access`) is exchanged when the
device exchanges its own refresh token, before the gateway issues the new pair. When the provider
refuses (`invalid_grant`: the account was disabled or deleted, the person signed out everywhere, or
the provider's session lifetime ran out), the device's tokens are revoked and its next step is a new
sign-in — which a disabled account cannot complete. So a person removed at the provider loses access
at each device's next refresh, at the latest JWT_EXPIRATION_HOURS after removal.

A provider that cannot be reached does not log everyone out: the refresh goes on, logged, and the
next one asks again. A device signed in without a provider refresh token (the provider did not
grant `offline_access`) is bounded by REFRESH_TOKEN_DAYS alone; the README says so.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from proxyproject.lib.encryption import decrypt_secret, encrypt_secret
from proxyproject.lib.errors import GatewayError, IdentityProviderUnavailable, SignInRequired
from proxyproject.lib.logging import log_event
from tokens.audit import ClientInfo, record_audit_event
from tokens.identity_provider import token_request
from tokens.issuance import DeviceRefreshToken, WrapperToken, verify_token_loading_keys
from tokens.models import AuditKind, Device, IssuedToken
from tokens.revocation import revoke_device_tokens

logger = logging.getLogger("tokens.provider_sessions")


@dataclass(frozen=True, slots=True)
class ProviderSession:
    device_pk: int
    device_id: str
    refresh_token: str


def provider_session_of(raw_token: str) -> ProviderSession | None:
    """The provider session of the device a valid token belongs to; None when the token is not
    valid (the refresh itself then refuses it with the right error) or the device has none."""
    for token_class in (DeviceRefreshToken, WrapperToken):
        try:
            claims = verify_token_loading_keys(raw_token, token_class).payload
        except GatewayError:
            continue
        issued = IssuedToken.objects.select_related("device").filter(jti=claims["jti"]).first()
        if issued is None or not issued.device.provider_refresh_token:
            return None
        device = issued.device
        return ProviderSession(device.pk, device.device_id, decrypt_secret(device.provider_refresh_token))
    return None


def _store_renewed(session: ProviderSession, refresh_token: str) -> None:
    Device.objects.filter(pk=session.device_pk).update(provider_refresh_token=encrypt_secret(refresh_token))


def end_provider_session(*, session: ProviderSession, reason: str, client: ClientInfo, now: dt.datetime) -> None:
    with transaction.atomic():
        device = Device.objects.select_for_update().get(pk=session.device_pk)
        device.provider_refresh_token = ""
        device.save(update_fields=["provider_refresh_token", "updated_at"])
        record_audit_event(AuditKind("provider_session_ended"), device=device, client=client, now=now, detail={"reason": reason})
        revoke_device_tokens(device=device, actor="identity provider", client=client, now=now)


async def renew_provider_session(*, raw_token: str, client: ClientInfo, now: dt.datetime | None = None) -> None:
    """Raises SignInRequired when the provider ended the session (the device's tokens are revoked)."""
    session = await sync_to_async(provider_session_of)(raw_token)
    if session is None:
        return
    try:
        answer = await token_request({"grant_type": "refresh_token", "refresh_token": session.refresh_token})
    except IdentityProviderUnavailable as exc:
        log_event(
            logger,
            "Provider session not renewed: provider unavailable",
            logging.WARNING,
            device_id=session.device_id,
            error=exc.message,
        )
        return
    if answer.error is None:
        renewed = answer.body.get("refresh_token")
        if isinstance(renewed, str) and renewed != session.refresh_token:
            await sync_to_async(_store_renewed)(session, renewed)
        return
    if answer.error != "invalid_grant":  # the gateway's own client is misconfigured: not the person's doing
        log_event(logger, "Provider session not renewed", logging.ERROR, device_id=session.device_id, error=answer.error)
        return
    await sync_to_async(end_provider_session)(session=session, reason=answer.error, client=client, now=now or timezone.now())
    log_event(logger, "Provider session ended", logging.WARNING, device_id=session.device_id, reason=answer.error)
    raise SignInRequired("The identity provider ended this person's session: sign in again.")
