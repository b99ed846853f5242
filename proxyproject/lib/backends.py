"""Which backend keeps the state processes could share: Redis when REDIS_URL is set, else each
process its own (the embedded default). Every swappable backend (rate limiter, circuit breaker,
spend counters, the key pool's in-flight counts) is chosen here, so no two of them can disagree."""

from __future__ import annotations

from typing import Literal, TypeVar

from django.conf import settings

Backend = Literal["local", "redis"]
T = TypeVar("T")


def shared_state_backend() -> Backend:
    return "redis" if settings.REDIS_URL else "local"


def select_backend(*, local: T, redis: T) -> T:
    return redis if shared_state_backend() == "redis" else local
