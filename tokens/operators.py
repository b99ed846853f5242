"""Operator credentials for the operator endpoints (/admin/usage across devices,
/admin/circuit-breaker, /metrics): an API key created in the admin, or a logged-in staff session.

A key is `gwop_` plus 256 random bits, shown once at creation; only its SHA-256 is stored (a slow
hash buys nothing for a random key, and this runs per request).

A key may be scoped to one organization. `authenticate_operator` is the platform-wide check and
refuses scoped keys, so an endpoint honours a scope only by asking for it
(`authenticate_scoped_operator`) and every other operator endpoint stays platform-only by default.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.utils import timezone
from ninja.utils import check_csrf

from proxyproject.lib.errors import AuthenticationFailed, CsrfFailed, PermissionDenied
from tokens.models import OperatorApiKey, Organization

__all__ = [
    "Operator",
    "OperatorApiKey",
    "authenticate_operator",
    "authenticate_operator_change",
    "authenticate_scoped_operator",
    "create_operator_api_key",
    "issue_operator_api_key",
    "revoke_operator_api_key",
]

KEY_PREFIX = "gwop_"
# The actor label of an operator authenticated by a logged-in session rather than an API key.
SESSION_ACTOR_PREFIX = "user:"
_SHOWN_PREFIX_LENGTH = 12
# last_used_at is for humans; writing it at most once a minute keeps a scraper from writing a row
# on every scrape.
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_operator_api_key(key: OperatorApiKey) -> str:
    """Give a new (unsaved) key its secret and save it; returns the secret, never retrievable again."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key.prefix = secret[:_SHOWN_PREFIX_LENGTH]
    key.secret_sha256 = _sha256(secret)
    key.save()
    return secret


@dataclass(frozen=True, slots=True)
class Operator:
    """Who called an operator endpoint: `actor` for audit and logs, and the one organization a
    scoped key may see (None: the whole platform)."""

    actor: str
    org_id: int | None = None


def create_operator_api_key(
    *, name: str, created_by: User | None, organization: Organization | None = None
) -> tuple[OperatorApiKey, str]:
    key = OperatorApiKey(name=name, created_by=created_by, organization=organization)
    return key, issue_operator_api_key(key)


def revoke_operator_api_key(*, key: OperatorApiKey) -> OperatorApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def _authenticate_key(secret: str) -> Operator:
    key = OperatorApiKey.objects.filter(secret_sha256=_sha256(secret), revoked_at__isnull=True).first()
    if key is None:
        raise AuthenticationFailed("Invalid or revoked operator API key.")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= _LAST_USED_RESOLUTION:
        OperatorApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return Operator(f"operator-key:{key.name}", key.organization_id)


async def authenticate_scoped_operator(request: HttpRequest) -> Operator:
    """The operator and its scope: a platform key or staff session sees everything, an
    organization's key only that organization.

    Raises AuthenticationFailed without credentials or with a bad key, PermissionDenied for a
    logged-in user who is not active staff."""
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        secret = value.strip()
        if not secret.startswith(KEY_PREFIX):
            raise AuthenticationFailed("Not an operator API key.")
        return await sync_to_async(_authenticate_key)(secret)
    user = await request.auser() if hasattr(request, "auser") else None
    if user is None or not user.is_authenticated:
        raise AuthenticationFailed("Operator credentials required: Authorization: Bearer <operator API key>, or log in.")
    if not (user.is_active and user.is_staff):
        raise PermissionDenied("Operator access needs a staff account.")
    return Operator(f"{SESSION_ACTOR_PREFIX}{user.get_username()}")


async def authenticate_operator(request: HttpRequest) -> str:
    """A platform operator's actor label (`operator-key:<name>` or `user:<username>`) for audit
    and logs; an organization's key gets PermissionDenied (these endpoints show every tenant)."""
    operator = await authenticate_scoped_operator(request)
    if operator.org_id is not None:
        raise PermissionDenied("This operator API key is scoped to one organization; this endpoint is platform-wide.")
    return operator.actor


async def authenticate_operator_change(request: HttpRequest) -> str:
    """The operator of a call that changes state. A browser sends the session cookie with whatever
    request any page makes, so an operator authenticated by session must also show the CSRF token;
    an operator API key in a header cannot be sent cross-site. Decided by what authenticated the
    caller, never by which other headers came along (`Authorization: Basic`, `Negotiate`, an empty
    `Bearer` all leave the session as the credential)."""
    actor = await authenticate_operator(request)
    if actor.startswith(SESSION_ACTOR_PREFIX) and check_csrf(request) is not None:
        raise CsrfFailed()
    return actor
