"""Database reads from code that runs outside Django's request cycle.

Django closes broken and expired connections when each request starts and ends (the
`request_started`/`request_finished` signals). The `/v1` route bypasses Django's handler, so a
connection that died under it (a PostgreSQL restart, failover, `pg_terminate_backend`, an idle
timeout on a pooler) stayed in its thread and every later read failed with "the connection is
closed" until the process was restarted. Reads made here first let Django drop a connection that
is unusable or past its age (with `CONN_HEALTH_CHECKS` that includes a ping), and a read that still
meets a dead connection is retried once on a new one: these reads are idempotent. A database that
stays away becomes DatabaseUnavailable (503, retry-after) instead of a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from proxyproject.lib.errors import DatabaseUnavailable
from proxyproject.lib.logging import log_event

logger = logging.getLogger("proxyproject.database")
P = ParamSpec("P")
T = TypeVar("T")


def _drop_connection() -> None:
    try:
        connection.close()
    except Exception:  # closing a connection the server already dropped may itself fail
        connection.connection = None


def drop_unusable_connection() -> None:
    """What Django does at each request's start: close this thread's connection if it saw an error,
    fails its health check or is past its age, so the next query opens a new one."""
    if not connection.in_atomic_block:
        close_old_connections()


def read_with_fresh_connection(read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run an idempotent database read in this thread on a connection known to be usable."""
    drop_unusable_connection()
    try:
        return read(*args, **kwargs)
    except (OperationalError, InterfaceError) as first:
        if connection.in_atomic_block:
            raise
        log_event(logger, "Database connection lost; retrying on a new one", logging.WARNING, error=str(first).strip())
        _drop_connection()
    try:
        return read(*args, **kwargs)
    except (OperationalError, InterfaceError) as second:
        _drop_connection()
        log_event(logger, "Database unavailable", logging.ERROR, error=str(second).strip())
        raise DatabaseUnavailable() from second


async def read_database(read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`read_with_fresh_connection` from async code, in Django's thread for database work, given up
    after DB_TIMEOUT: a database that accepts connections and never answers (a hung server, a pooler
    with no backend left) becomes a 503 rather than a request that never ends. The read itself
    cannot be interrupted; reads queued behind it in that thread are given up the same way."""
    try:
        return await asyncio.wait_for(sync_to_async(read_with_fresh_connection)(read, *args, **kwargs), settings.DB_TIMEOUT)
    except TimeoutError:
        log_event(logger, "Database unavailable", logging.ERROR, error=f"no answer within {settings.DB_TIMEOUT} s")
        raise DatabaseUnavailable() from None
