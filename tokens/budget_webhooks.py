"""An organization's budget webhook secret: kept encrypted (`proxyproject.lib.encryption`) and never
shown again once saved; the admin and any other caller set and read it through these two functions."""

from __future__ import annotations

from proxyproject.lib.encryption import decrypt_secret, encrypt_secret
from tokens.models import Organization


def set_organization_webhook_secret(*, organization: Organization, secret: str) -> None:
    """An empty secret clears it."""
    organization.budget_webhook_secret_encrypted = encrypt_secret(secret) if secret else ""
    organization.save(update_fields=["budget_webhook_secret_encrypted", "updated_at"])


def organization_webhook_secret(organization: Organization) -> str:
    encrypted = organization.budget_webhook_secret_encrypted
    return decrypt_secret(encrypted) if encrypted else ""
