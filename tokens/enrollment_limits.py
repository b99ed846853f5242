"""Abuse limits on the unauthenticated endpoints, on the gateway's limiter (atomic in Redis when
configured, per process otherwise), all per ENROLLMENT_RATE_LIMIT_WINDOW ms.

/bootstrap, /refresh and /auth/oidc/start: ENROLLMENT_RATE_LIMIT_MAX per client IP and endpoint.

/auth/oidc/poll is limited per sign-in instead (PEOPLE_SIGN_IN_POLL_MAX): a client polls about 12
times a minute for as long as its person takes to approve, so a per-address limit would let a few
people signing in behind one NAT lock each other out. Sign-ins themselves are limited per address at
start, which bounds the polls an address can make. A poll naming no live sign-in (made up, finished
or expired) counts against its address (PEOPLE_SIGN_IN_UNKNOWN_POLL_MAX), and once that address is
over the limit its polls are refused before the database is asked: made-up handles each have a fresh
per-sign-in budget, so they are what the per-address limit is for.
"""

from __future__ import annotations

from django.conf import settings

from proxyproject.lib.errors import EnrollmentRateLimited
from proxyproject.lib.ratelimit import LimitCheck, RateLimiter, get_rate_limiter


async def _enforce(check: LimitCheck, limiter: RateLimiter | None) -> None:
    [decision] = await (limiter or get_rate_limiter()).hit([check])
    if not decision.allowed:
        raise EnrollmentRateLimited(retry_after=decision.retry_after)


async def enforce_enrollment_limit(endpoint: str, ip: str | None, limiter: RateLimiter | None = None) -> None:
    check = LimitCheck(
        key=f"enroll:{endpoint}:{ip or 'unknown'}",
        limit=settings.ENROLLMENT_RATE_LIMIT_MAX,
        window_ms=settings.ENROLLMENT_RATE_LIMIT_WINDOW,
    )
    await _enforce(check, limiter)


def _unknown_polls_key(ip: str | None) -> str:
    return f"enroll:sign_in_poll_unknown:{ip or 'unknown'}"


async def enforce_sign_in_poll_limit(handle_sha256: str, ip: str | None, limiter: RateLimiter | None = None) -> None:
    """Before a poll touches the database: the address's polls of unknown sign-ins (only looked at:
    cost 0), then this sign-in's own polls (keyed by the handle's hash: the handle is a bearer secret)."""
    window_ms = settings.ENROLLMENT_RATE_LIMIT_WINDOW
    await _enforce(LimitCheck(_unknown_polls_key(ip), settings.PEOPLE_SIGN_IN_UNKNOWN_POLL_MAX, window_ms, cost=0), limiter)
    await _enforce(LimitCheck(f"enroll:sign_in_poll:{handle_sha256}", settings.PEOPLE_SIGN_IN_POLL_MAX, window_ms), limiter)


async def count_unknown_sign_in_poll(ip: str | None, limiter: RateLimiter | None = None) -> None:
    await (limiter or get_rate_limiter()).add(_unknown_polls_key(ip), settings.ENROLLMENT_RATE_LIMIT_WINDOW, 1)
