"""The circuit breaker in the deep health check: its state is reported, and an open breaker makes
the instance "down" (a load balancer may then prefer an instance whose upstream path works)."""

from __future__ import annotations

from gateway.breaker import BreakerState, get_circuit_breaker
from proxyproject.lib.health_checks import register_deep_check

HEALTH_CHECK_NAME = "circuit_breaker"


class CircuitBreakerOpen(Exception):
    pass


async def check_circuit_breaker() -> str:
    breaker = get_circuit_breaker()
    snapshot = await breaker.snapshot()
    if snapshot.state is BreakerState.OPEN:
        raise CircuitBreakerOpen(f"open after {snapshot.failures} consecutive upstream failures")
    return str(snapshot.state.value)


def register_breaker_health_check() -> None:
    register_deep_check(HEALTH_CHECK_NAME, check_circuit_breaker)
