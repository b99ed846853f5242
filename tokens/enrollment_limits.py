"""Abuse limits on the unauthenticated endpoints (/bootstrap, /refresh): per client IP and endpoint,
ENROLLMENT_RATE_LIMIT_MAX requests per ENROLLMENT_RATE_LIMIT_WINDOW ms, on the gateway's limiter
(atomic in Redis when configured, per process otherwise)."""

from __future__ import annotations

from django.conf import settings

from proxyproject.lib.errors import EnrollmentRateLimited
from proxyproject.lib.ratelimit import LimitCheck, RateLimiter, get_rate_limiter


async def enforce_enrollment_limit(endpoint: str, ip: str | None, limiter: RateLimiter | None = None) -> None:
    limiter = limiter or get_rate_limiter()
    check = LimitCheck(
        key=f"enroll:{endpoint}:{ip or 'unknown'}",
        limit=settings.ENROLLMENT_RATE_LIMIT_MAX,
        window_ms=settings.ENROLLMENT_RATE_LIMIT_WINDOW,
    )
    [decision] = await limiter.hit([check])
    if not decision.allowed:
        raise EnrollmentRateLimited(retry_after=decision.retry_after)
