"""A signed-in device's session at the identity provider, renewed at each of the device's refreshes.

The provider's refresh token from the sign-in (asked for with `offline_access`) is exchanged when the
device exchanges its own refresh token, before the gateway issues the new pair. When the provider
refuses (`invalid_grant`: the account was disabled or deleted, the person signed out everywhere, or
the provider's session lifetime ran out), the device's tokens are revoked and its next step is a new
sign-in — which a disabled account cannot complete. So a person removed at the provider loses access
at each device's next refresh, at the latest JWT_EXPIRATION_HOURS after removal.

When the provider renews the session, the gateway also asks it about the account
(tokens.provider_accounts): a provider that keeps renewing a disabled account's sessions still says
so at its userinfo endpoint. Then the person is marked inactive, every token of every device of
theirs is revoked, and the refresh answers 403 person_disabled.

A provider that cannot be reached (no answer within OIDC_TIMEOUT, a 5xx) does not log everyone out:
the refresh goes on with the gateway's own tokens, a warning is logged, the provider refresh token
is kept, and the next refresh asks again. A device signed in without a provider refresh token (the
provider did not grant `offline_access`) is bounded by REFRESH_TOKEN_DAYS alone; the README says so.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from proxyproject.lib.encryption import decrypt_secret, encrypt_secret
from proxyproject.lib.errors import GatewayError, IdentityProviderUnavailable, PersonDisabled, SignInRequired
from proxyproject.lib.logging import log_event
from tokens.audit import ClientInfo, record_audit_event
from tokens.identity_provider import ProviderAnswer, token_request, userinfo
from tokens.issuance import DeviceRefreshToken, WrapperToken, verify_token_loading_keys
from tokens.models import AuditKind, Device, IssuedToken, Person
from tokens.provider_accounts import AccountVerdict, account_verdict
from tokens.revocation import revoke_device_tokens, revoke_person_tokens

logger = logging.getLogger("tokens.provider_sessions")


@dataclass(frozen=True, slots=True)
class ProviderSession:
    device_pk: int
    device_id: str
    refresh_token: str
    person_pk: int | None
    subject: str


def provider_session_of(raw_token: str) -> ProviderSession | None:
    """The provider session of the device a valid token belongs to; None when the token is not
    valid (the refresh itself then refuses it with the right error) or the device has none."""
    for token_class in (DeviceRefreshToken, WrapperToken):
        try:
            claims = verify_token_loading_keys(raw_token, token_class).payload
        except GatewayError:
            continue
        issued = IssuedToken.objects.select_related("device__person").filter(jti=claims["jti"]).first()
        if issued is None or not issued.device.provider_refresh_token:
            return None
        device = issued.device
        person = device.person
        return ProviderSession(
            device.pk,
            device.device_id,
            decrypt_secret(device.provider_refresh_token),
            person.pk if person is not None else None,
            person.subject if person is not None else "",
        )
    return None


def _store_renewed(session: ProviderSession, refresh_token: str) -> None:
    Device.objects.filter(pk=session.device_pk).update(provider_refresh_token=encrypt_secret(refresh_token))


def end_provider_session(*, session: ProviderSession, reason: str, client: ClientInfo, now: dt.datetime) -> None:
    with transaction.atomic():
        device = Device.objects.select_for_update().get(pk=session.device_pk)
        device.provider_refresh_token = ""
        device.save(update_fields=["provider_refresh_token", "updated_at"])
        if session.person_pk is not None:
            Person.objects.filter(pk=session.person_pk).update(active=False, updated_at=now)
        record_audit_event(
            AuditKind("provider_session_ended"),
            device=device,
            person=device.person,
            client=client,
            now=now,
            detail={"reason": reason},
        )
        revoke_device_tokens(device=device, actor="identity provider", client=client, now=now)


def disable_person(*, session: ProviderSession, reason: str, client: ClientInfo, now: dt.datetime) -> None:
    """The provider says the account is disabled: not one device's session but the person's, so
    every device of theirs loses its tokens and its provider session now, not at its own refresh. A
    device whose person was deleted has only its own session to end."""
    if session.person_pk is None:
        end_provider_session(session=session, reason=reason, client=client, now=now)
        return
    with transaction.atomic():
        person = Person.objects.select_for_update().get(pk=session.person_pk)
        person.active = False
        person.save(update_fields=["active", "updated_at"])
        Device.objects.filter(person=person).update(provider_refresh_token="", updated_at=now)
        device = Device.objects.get(pk=session.device_pk)
        record_audit_event(
            AuditKind("provider_session_ended"),
            device=device,
            person=person,
            client=client,
            now=now,
            detail={"reason": f"account disabled: {reason}"},
        )
        revoke_person_tokens(person=person, actor="identity provider", client=client, now=now)


async def renew_provider_session(*, raw_token: str, client: ClientInfo, now: dt.datetime | None = None) -> None:
    """Raises SignInRequired when the provider ended the session (the device's tokens are revoked),
    PersonDisabled when it says the account is disabled (every device's tokens are revoked)."""
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
        await _renewed(session, answer, client, now or timezone.now())
        return
    if answer.error != "invalid_grant":  # the gateway's own client is misconfigured: not the person's doing
        log_event(logger, "Provider session not renewed", logging.ERROR, device_id=session.device_id, error=answer.error)
        return
    await sync_to_async(end_provider_session)(session=session, reason=answer.error, client=client, now=now or timezone.now())
    log_event(logger, "Provider session ended", logging.WARNING, device_id=session.device_id, reason=answer.error)
    raise SignInRequired("The identity provider ended this person's session: sign in again.")


async def _renewed(session: ProviderSession, answer: ProviderAnswer, client: ClientInfo, now: dt.datetime) -> None:
    """Keep the rotated refresh token (the old one is spent, whatever the account check says next),
    then ask the provider about the account with the access token it has just issued."""
    renewed = answer.body.get("refresh_token")
    if isinstance(renewed, str) and renewed != session.refresh_token:
        await sync_to_async(_store_renewed)(session, renewed)
    access_token = answer.body.get("access_token")
    if not isinstance(access_token, str) or session.person_pk is None:
        return
    try:
        said = await userinfo(access_token)
    except IdentityProviderUnavailable as exc:
        log_event(
            logger,
            "Provider account not checked: provider unavailable",
            logging.WARNING,
            device_id=session.device_id,
            error=exc.message,
        )
        return
    verdict = account_verdict(said, session.subject) if said is not None else AccountVerdict(False)
    if verdict.problem:
        log_event(logger, "Provider account not checked", logging.ERROR, device_id=session.device_id, error=verdict.problem)
    if not verdict.disabled:
        return
    await sync_to_async(disable_person)(session=session, reason=verdict.reason, client=client, now=now)
    log_event(logger, "Person disabled at the provider", logging.WARNING, device_id=session.device_id, reason=verdict.reason)
    raise PersonDisabled()
