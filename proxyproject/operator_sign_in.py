"""Operators sign in to the console with the company's OpenID Connect provider, beside passwords.

mozilla-django-oidc runs the authorization-code flow (state, nonce, PKCE, the session, the login);
it is small, maintained by Mozilla for its own sites, and plain Django (an authentication backend
and two views), where django-allauth would bring its own account model, templates and settings for
one button. What it leaves out is added here:

- endpoints from the issuer's discovery document (`OIDC_ISSUER` only, as providers document it),
  kept for DISCOVERY_CACHE_SECONDS;
- the ID token's issuer and audience, which the library does not check (signature, expiry and nonce
  it does; it fetches the JWKS at each sign-in, so a rotated provider key is picked up at once);
- who may enter: a person is staff only while the groups claim names one of `OIDC_STAFF_GROUPS` (or
  `OIDC_SUPERUSER_GROUPS`, which also makes a superuser), decided again at every sign-in, so removal
  from the group at the provider ends console access at the next sign-in. Anyone else is refused
  and no account is created.

A session the provider signed in counts as having passed the provider's own second factor
(`signed_in_by_provider`), so the console's TOTP rule applies to password logins only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from proxyproject.lib.logging import log_event

logger = logging.getLogger("proxyproject.operator_sign_in")
DISCOVERY_CACHE_SECONDS = 3600.0
BACKEND_PATH = "proxyproject.operator_sign_in.OperatorSignInBackend"
_ENDPOINT_SETTINGS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}


class _Discovery:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.issuer = ""
        self.document: dict[str, Any] = {}
        self.fetched_at = 0.0

    def get(self, issuer: str) -> dict[str, Any]:
        with self.lock:
            fresh = self.issuer == issuer and time.monotonic() - self.fetched_at < DISCOVERY_CACHE_SECONDS
            if not fresh:
                response = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=settings.OIDC_TIMEOUT)
                response.raise_for_status()
                document = response.json()
                if document.get("issuer", "").rstrip("/") != issuer:
                    raise SuspiciousOperation("The discovery document names another issuer.")
                self.issuer, self.document, self.fetched_at = issuer, document, time.monotonic()
            return self.document

    def forget(self) -> None:
        with self.lock:
            self.issuer, self.document, self.fetched_at = "", {}, 0.0


discovery = _Discovery()


def provider_setting(attr: str, *default: Any) -> Any:
    """mozilla-django-oidc's settings lookup, with the provider's endpoints from discovery."""
    if attr in _ENDPOINT_SETTINGS:
        return discovery.get(settings.OIDC_ISSUER)[_ENDPOINT_SETTINGS[attr]]
    return import_from_settings(attr, *default)


def groups_of(claims: dict[str, Any]) -> set[str]:
    groups = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    return {groups} if isinstance(groups, str) else {str(group) for group in groups}


def console_roles(claims: dict[str, Any]) -> tuple[bool, bool]:
    """(staff, superuser) as the provider's groups grant them now."""
    groups = groups_of(claims)
    superuser = bool(groups & set(settings.OIDC_SUPERUSER_GROUPS))
    return superuser or bool(groups & set(settings.OIDC_STAFF_GROUPS)), superuser


def signed_in_by_provider(request: HttpRequest) -> bool:
    return getattr(request, "session", {}).get(BACKEND_SESSION_KEY) == BACKEND_PATH


class OperatorSignInBackend(OIDCAuthenticationBackend):
    get_settings = staticmethod(provider_setting)

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> AbstractBaseUser | None:
        """A token that fails a check, or a provider that cannot be reached, is a refused sign-in
        (the login page says so), logged with the reason; never an error page."""
        try:
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, jwt.InvalidTokenError, requests.RequestException, KeyError, ValueError) as exc:
            log_event(logger, "Operator sign-in refused", logging.WARNING, reason=f"{type(exc).__name__}: {exc}")
            return None

    def _verify_jws(self, payload: bytes | str, key: Any) -> dict[str, Any]:
        claims = super()._verify_jws(payload, key)
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if claims.get("iss", "").rstrip("/") != settings.OIDC_ISSUER:
            raise SuspiciousOperation("ID token from another issuer.")
        if settings.OIDC_CLIENT_ID not in audiences or (len(audiences) > 1 and claims.get("azp") != settings.OIDC_CLIENT_ID):
            raise SuspiciousOperation("ID token for another client.")
        return claims

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The verified ID token's claims, completed (never overridden) by the userinfo endpoint's."""
        return {**super().get_userinfo(access_token, id_token, payload), **payload}

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        person = claims.get(settings.OIDC_PERSON_CLAIM)
        staff, _ = console_roles(claims)
        unverified_email = settings.OIDC_PERSON_CLAIM == "email" and claims.get("email_verified") is False
        if not person or not staff or unverified_email:
            reason = "unverified email" if unverified_email else "not in a console group"
            log_event(
                logger,
                "Operator sign-in refused",
                logging.WARNING,
                reason=reason,
                person=person or "",
                subject=claims.get("sub", ""),
            )
            return False
        return True

    def filter_users_by_claims(self, claims: dict[str, Any]):
        return self.UserModel.objects.filter(username__iexact=claims[settings.OIDC_PERSON_CLAIM])

    def create_user(self, claims: dict[str, Any]) -> AbstractBaseUser:
        user = self.UserModel(username=claims[settings.OIDC_PERSON_CLAIM], email=claims.get("email", ""))
        user.set_unusable_password()
        return self.update_user(user, claims)

    def update_user(self, user: AbstractBaseUser, claims: dict[str, Any]) -> AbstractBaseUser:
        user.is_staff, user.is_superuser = console_roles(claims)
        user.first_name = str(claims.get("given_name", user.first_name))[:150]
        user.last_name = str(claims.get("family_name", user.last_name))[:150]
        user.save()
        log_event(
            logger, "Operator signed in with the identity provider", person=user.get_username(), superuser=user.is_superuser
        )
        return user


class OperatorSignInRequestView(OIDCAuthenticationRequestView):
    """Starts a sign-in; 404 when no provider is configured."""

    get_settings = staticmethod(provider_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if settings.OPERATOR_SIGN_IN_OIDC:
            super().__init__(*args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not settings.OPERATOR_SIGN_IN_OIDC:
            raise Http404("Sign-in with an identity provider is not configured.")
        return super().get(request)


class OperatorSignInCallbackView(OIDCAuthenticationCallbackView):
    get_settings = staticmethod(provider_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not settings.OPERATOR_SIGN_IN_OIDC:
            raise Http404("Sign-in with an identity provider is not configured.")
        return super().get(request)
