"""Which master key a request goes upstream with.

Today the pool is the one key in settings.ANTHROPIC_API_KEY. The interface is what a weighted pool
of UpstreamKey rows will keep: `choose_upstream_key` picks a key (avoiding the ones a failed attempt
already used), `report_upstream_result` hears how each attempt went. Both are synchronous and do no
I/O, because they run on every request.
"""
from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from django.conf import settings

from gateway.errors import NoUpstreamKey
from proxyproject.logging import log_event

logger = logging.getLogger("gateway.keypool")
SETTINGS_KEY_NAME = "ANTHROPIC_API_KEY"
# The status with which the upstream says the key itself is bad, not the request.
KEY_REJECTED_STATUSES = frozenset({401})


@dataclass(frozen=True, slots=True)
class UpstreamCredential:
    """A master key: `name` is safe to log and record; `secret` never leaves the upstream request."""

    name: str
    secret: str = field(repr=False)


_settings_credential: UpstreamCredential | None = None


def _credential_from_settings() -> UpstreamCredential | None:
    global _settings_credential
    secret = settings.ANTHROPIC_API_KEY
    if not secret:
        return None
    if _settings_credential is None or _settings_credential.secret != secret:
        _settings_credential = UpstreamCredential(SETTINGS_KEY_NAME, secret)
    return _settings_credential


def available_credentials() -> list[UpstreamCredential]:
    credential = _credential_from_settings()
    return [credential] if credential is not None else []


def choose_upstream_key(exclude: Collection[str] = ()) -> UpstreamCredential:
    """A key whose name is not in `exclude`; when every key is excluded, one of them anyway (a
    retry on the same key beats no retry). Raises NoUpstreamKey when the pool is empty."""
    credentials = available_credentials()
    if not credentials:
        raise NoUpstreamKey()
    for credential in credentials:
        if credential.name not in exclude:
            return credential
    return credentials[0]


def report_upstream_result(credential: UpstreamCredential, *, status: int | None = None, exception: BaseException | None = None) -> None:
    """Hear how an attempt with `credential` went: an HTTP status, or the exception that ended it."""
    if status in KEY_REJECTED_STATUSES:
        log_event(logger, "Upstream rejected the master key", logging.ERROR, upstreamKey=credential.name, status=status)
    elif exception is not None:
        log_event(logger, "Upstream attempt failed", logging.WARNING, upstreamKey=credential.name, error=type(exception).__name__)
