"""People as the identity provider describes them: found by issuer and subject (which never change,
where an email can), refreshed from the verified ID token at each sign-in, and placed in an
organization by the provider's groups (the group mappings)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings

from proxyproject.lib.errors import IdTokenRejected, PersonBlocked
from tokens.models import GroupOrganization, Organization, Person


def groups_in(claims: dict[str, Any]) -> list[str]:
    groups = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    listed = [groups] if isinstance(groups, str) else list(groups) if isinstance(groups, list) else []
    return sorted({str(group) for group in listed})


def organization_for_groups(groups: list[str]) -> Organization | None:
    mapping = GroupOrganization.objects.select_related("organization").filter(group__in=groups).first()
    return mapping.organization if mapping is not None else None


def _person_claim(claims: dict[str, Any]) -> str:
    """The name operators know the person by. An email the provider has not verified is refused
    when it is that name: anyone can type one into a self-service profile."""
    value = claims.get(settings.OIDC_PERSON_CLAIM)
    if not isinstance(value, str) or not value.strip():
        raise IdTokenRejected(f"The ID token has no {settings.OIDC_PERSON_CLAIM} claim.")
    if settings.OIDC_PERSON_CLAIM == "email" and claims.get("email_verified") is False:
        raise IdTokenRejected("The person's email is not verified at the provider.")
    return value.strip()[:254]


def _display_name(claims: dict[str, Any]) -> str:
    name = claims.get("name") or " ".join(str(claims.get(part, "")) for part in ("given_name", "family_name")).strip()
    return str(name)[:200]


def sign_in_person(*, claims: dict[str, Any], now: dt.datetime) -> Person:
    """The person these verified claims name, created on first sign-in, refreshed otherwise. Call
    inside the caller's transaction. Raises PersonBlocked for a person an operator blocked."""
    email = _person_claim(claims)
    person = Person.objects.select_for_update().filter(issuer=claims["iss"].rstrip("/"), subject=str(claims["sub"])).first()
    if person is None:
        person = Person(issuer=claims["iss"].rstrip("/"), subject=str(claims["sub"]))
    if person.blocked:
        raise PersonBlocked()
    groups = groups_in(claims)
    person.email = email
    person.display_name = _display_name(claims) or person.display_name
    person.groups = groups
    person.organization = organization_for_groups(groups) or person.organization
    person.active = True
    person.last_sign_in_at = now
    person.save()
    return person
