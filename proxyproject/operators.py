"""The first operator login, so a fresh `make run` can be used from the browser at once."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model


@dataclass(frozen=True)
class OperatorLogin:
    username: str
    password: str | None
    created: bool


def ensure_operator_login() -> OperatorLogin:
    """Create a superuser when none exists: from ADMIN_USERNAME/ADMIN_PASSWORD, else generated.

    A generated password is returned once, for printing; only its hash is stored.
    """
    user_model = get_user_model()
    existing = user_model.objects.filter(is_superuser=True).order_by("id").first()
    if existing is not None:
        return OperatorLogin(existing.get_username(), None, False)
    username = settings.ADMIN_USERNAME or "admin"
    password = settings.ADMIN_PASSWORD or secrets.token_urlsafe(15)
    user_model.objects.create_superuser(username=username, email="", password=password)
    return OperatorLogin(username, None if settings.ADMIN_PASSWORD else password, True)
