"""The registry of deep health checks (`/healthz?deep=1`).

The platform registers its own (database, Redis, cache, broker) and each app adds what `/v1` depends
on (the gateway: the circuit breaker), so the check that runs them needs to import no app. A check
raises when its dependency is down; it may return a short state to report when up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

DeepCheck = Callable[[], Awaitable[str | None]]

DEEP_CHECKS: dict[str, DeepCheck] = {}


def register_deep_check(name: str, check: DeepCheck) -> None:
    DEEP_CHECKS[name] = check
