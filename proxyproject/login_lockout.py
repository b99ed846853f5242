"""Password-login throttling for the operator console, enforced by django-axes.

Axes counts failed logins per username (from any address) and per client address (for any
username); either reaching ADMIN_LOGIN_FAILURE_LIMIT locks that key out, and even the right
password is then answered 429 until the cool-off ends or an operator runs `manage.py unlock_login`.

The cool-off grows: failures keep counting while locked out (AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT),
and each further ADMIN_LOGIN_FAILURE_LIMIT failures doubles it, from ADMIN_LOGIN_COOLOFF_SECONDS up
to ADMIN_LOGIN_COOLOFF_MAX_SECONDS. So a patient guesser gets at most a handful of tries a day while
an operator who mistypes waits minutes. Each attempt's expiry is stored with it
(AXES_USE_ATTEMPT_EXPIRATION), so one client's long cool-off is never cut short by the cleanup
another client's request runs.
"""

from __future__ import annotations

import datetime as dt
import logging

from asgiref.sync import sync_to_async
from axes.backends import AxesStandaloneBackend
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from axes.utils import reset
from django.conf import settings
from django.db.models import Q, Sum
from django.dispatch import receiver
from django.http import HttpRequest

from proxyproject.lib.client_address import client_ip
from proxyproject.lib.logging import log_event

logger = logging.getLogger("proxyproject.login_lockout")


class LoginLockoutBackend(AxesStandaloneBackend):
    """Axes' lockout check for logins that come with a request (every login form).

    Code that authenticates without one (a shell, `Client.login` in tests) has no client to count
    or lock; axes would raise there, so this passes it on to the next backend instead.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: object
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)

    async def aauthenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: object
    ) -> None:
        """Django's async login path (`alogin`, async views) asks each backend for this."""
        if request is None:
            return None
        return await sync_to_async(self.authenticate)(request, username, password, **kwargs)


def cool_off_for_failures(failures: int) -> dt.timedelta:
    """The documented rule: the base cool-off, doubled for every further full limit of failures."""
    limit = settings.ADMIN_LOGIN_FAILURE_LIMIT
    doublings = max(0, failures // limit - 1)
    base = settings.ADMIN_LOGIN_COOLOFF_SECONDS
    ceiling = settings.ADMIN_LOGIN_COOLOFF_MAX_SECONDS
    # Capped before the power is taken, so a huge failure count cannot build a huge integer.
    seconds = ceiling if doublings >= ceiling.bit_length() else min(ceiling, base * 2**doublings)
    return dt.timedelta(seconds=seconds)


def _failures(request: HttpRequest | None) -> int:
    """The larger of this username's and this address's stored failures (how axes counts too)."""
    if request is None:
        return 0
    username = get_client_username(request)
    address = getattr(request, "axes_ip_address", None) or client_ip(request)
    counts = [
        AccessAttempt.objects.filter(match).aggregate(total=Sum("failures_since_start"))["total"] or 0
        for match in (Q(username=username) if username else None, Q(ip_address=address) if address else None)
        if match is not None
    ]
    return max(counts, default=0)


def login_cool_off(request: HttpRequest | None) -> dt.timedelta:
    """AXES_COOLOFF_TIME: how long the failures of this request's username and address keep counting."""
    return cool_off_for_failures(_failures(request))


@receiver(user_locked_out)
def audit_lockout(sender: object, request: HttpRequest, username: str | None, ip_address: str | None, **kwargs: object) -> None:
    """One warning line per refused login while locked out, for alerting; axes keeps the rows."""
    log_event(
        logger,
        "Admin login locked out",
        logging.WARNING,
        username=username or "",
        client_ip=ip_address or "",
        cool_off_seconds=int(login_cool_off(request).total_seconds()),
    )


def unlock_login(*, username: str | None = None, address: str | None = None, actor: str) -> int:
    """Forget the stored failures of a username and/or a client address; returns how many
    (username, address, browser) failure counters went.

    Both given: each is cleared (not only their pair), since either alone may be what is locked.
    """
    counters = AccessAttempt.objects.filter(
        (Q(username=username) if username else Q(pk__in=[])) | (Q(ip_address=address) if address else Q(pk__in=[]))
    ).count()
    if username:
        reset(username=username)
    if address:
        reset(ip=address)
    log_event(
        logger,
        "Admin login unlocked",
        logging.WARNING,
        username=username or "",
        client_ip=address or "",
        failure_counters=counters,
        actor=actor,
    )
    return counters
