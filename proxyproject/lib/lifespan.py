"""ASGI lifespan: apps register start-up and shut-down hooks here (the usage writer's final flush,
closing the upstream connection pool), and the ASGI server runs them once per worker process; the
worker's garbage collection is tuned once they have run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from proxyproject.lib.gc_tuning import tune_garbage_collection
from proxyproject.lib.logging import log_event

Hook = Callable[[], Awaitable[None]]
_startup_hooks: list[Hook] = []
_shutdown_hooks: list[Hook] = []
logger = logging.getLogger("proxyproject.lifespan")


def on_startup(hook: Hook) -> Hook:
    _startup_hooks.append(hook)
    return hook


def on_shutdown(hook: Hook) -> Hook:
    _shutdown_hooks.append(hook)
    return hook


async def run_hook(hook: Hook, phase: str) -> None:
    try:
        await hook()
    except Exception:
        logger.exception("lifespan hook failed", extra={"event_fields": {"phase": phase, "hook": hook.__qualname__}})


async def run_startup_hooks(hooks: list[Hook]) -> None:
    """All at once: they are independent loads, and each gives up after DB_TIMEOUT when the database
    does not answer, so one after the other a worker started during such an outage took a timeout per
    hook before it served anything."""
    await asyncio.gather(*(run_hook(hook, "startup") for hook in hooks))


async def run_shutdown_hooks(hooks: list[Hook]) -> None:
    """One after the other, in the order registered, so a stopping worker's log reads in that order."""
    for hook in hooks:
        await run_hook(hook, "shutdown")


async def lifespan_app(
    scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await run_startup_hooks(_startup_hooks)
            tune_garbage_collection()  # after the hooks: the caches they loaded live as long as the worker
            log_event(logger, "Worker started", hooks=len(_startup_hooks))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await run_shutdown_hooks(_shutdown_hooks)
            log_event(logger, "Worker stopped", hooks=len(_shutdown_hooks))
            await send({"type": "lifespan.shutdown.complete"})
            return
