"""One registry of the state a process keeps for itself: caches (signing keys, device states, the
upstream key pool) and the per-process backends (rate limiter, circuit breaker, spend counters).

Each module that keeps such state registers how to forget it, next to the state; `forget_process_state`
forgets all of it. Tests call it around each test, since the database is rolled back under the caches
and a value cached by one test must not answer the next.
"""

from __future__ import annotations

from collections.abc import Callable

Forget = Callable[[], None]

_registry: dict[str, Forget] = {}


def register_process_state(name: str, forget: Forget) -> None:
    _registry[name] = forget


def forget_process_state() -> None:
    for forget in _registry.values():
        forget()


def registered_process_state() -> tuple[str, ...]:
    return tuple(_registry)
