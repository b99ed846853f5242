"""Sliding-window rate limiting with one atomic step per request.

Each limit keeps two fixed buckets (the current window and the previous one) and estimates the
count over the last `window_ms` as `previous * (1 - elapsed/window) + current`. This holds the
seed's "100 requests per minute" without the double burst a fixed window allows at its boundary.

Several checks (requests per minute, tokens per minute, ...) are decided together: all pass and
are counted, or none is counted. With Redis the decision is one Lua script call, so instances
sharing Redis enforce one global limit with no race; without Redis a per-process backend does the
same with no await between reading and writing. Redis uses its own clock unless one is injected,
so hosts with drifting clocks still agree on the window.
"""

from __future__ import annotations

from proxyproject.lib.backends import select_backend
from proxyproject.lib.process_state import register_process_state
from proxyproject.lib.ratelimit.base import Clock, LimitCheck, LimitDecision, RateLimiter
from proxyproject.lib.ratelimit.leases import LeasingRateLimiter
from proxyproject.lib.ratelimit.local import LocalRateLimiter
from proxyproject.lib.ratelimit.redis import RedisRateLimiter

__all__ = [
    "Clock",
    "LeasingRateLimiter",
    "LimitCheck",
    "LimitDecision",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "get_rate_limiter",
]

_local_limiter: RateLimiter = LocalRateLimiter()
_redis_limiter = LeasingRateLimiter(RedisRateLimiter())


def get_rate_limiter() -> RateLimiter:
    """The Redis backend when REDIS_URL is set, else this process's local one."""
    return select_backend(local=_local_limiter, redis=_redis_limiter)


def forget_local_limits() -> None:
    global _local_limiter
    _local_limiter = LocalRateLimiter()
    _redis_limiter.forget()


register_process_state("rate limiter", forget_local_limits)
