"""Which master key a request goes upstream with: the hot-path side of the upstream key pool.

Each process keeps the pool (active and draining UpstreamKey rows, secrets decrypted once per load)
in memory. A request picks among the active keys by weight; it never touches the database:
- the pool is confirmed every UPSTREAM_KEY_POOL_CACHE_SECONDS by one Redis GET of the shared version
  (or, without Redis, by reloading it), in the background while requests keep using the copy they
  have; a copy unconfirmed for twice that long is reloaded before use, so after an idle spell no
  request goes out with a key retired meanwhile;
- a change made in this process (admin, a flagged key) bumps the local version: the next request
  reloads at once.

What the upstream says about a key is acted on in this process at once and recorded for all. A
401 or 403 to a request is not proof against the key: a device can make the upstream refuse its
own request (something its organization may not use, or a fault word for the bundled fake), and
flagging on that would let one device take every key out. So the key is checked with the cheap
call of `gateway.key_check`, which carries nothing of the client's; only when that is refused too
is the key taken out of rotation here and flagged in the database (every process then drops it).
A key that passed the check is not checked again for KEY_CHECK_TRUSTED_SECONDS, so a device
cannot turn its refusals into a stream of checks. A 429 cools the key down here for its
`retry-after`. Counters (requests, failures, last use)
are summed in memory and written with the next confirmation, never per request.

With no usable active key (all flagged), draining keys carry requests rather than none; with the
database unreachable at start-up, ANTHROPIC_API_KEY alone does.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import email.utils
import logging
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError

from gateway.key_check import KeyCheck, KeyVerdict, acheck_upstream_key
from gateway.keypool_shared import count_in_flight, local_pool_version, read_shared_pool_version, start_in_flight_reporter
from gateway.models import UpstreamKey, UpstreamKeyState
from gateway.upstream_keys import (
    ENVIRONMENT_KEY_NAME,
    KeyStats,
    flag_upstream_key,
    record_upstream_key_stats,
    seed_environment_key,
)
from proxyproject.lib.database import drop_unusable_connection
from proxyproject.lib.encryption import SecretDecryptionFailed, decrypt_secret
from proxyproject.lib.errors import NoUpstreamKey
from proxyproject.lib.logging import log_event
from proxyproject.lib.process_state import register_process_state

logger = logging.getLogger("gateway.keypool")

RATE_LIMITED_STATUS = 429
KEY_CHECK_TRUSTED_SECONDS = 30.0
# With Redis a pool unchanged by version is still reloaded this often: a change made outside the
# services (a shell, raw SQL) or an announcement lost while Redis was down is picked up anyway.
POOL_MAX_AGE_SECONDS = 60.0
STATS_FLUSH_SECONDS = 10.0
# A key the upstream rejected stays out here this long even if the database could not be told.
REJECTION_HOLD_SECONDS = 30.0
DEFAULT_COOLDOWN_SECONDS = 5.0
MAX_COOLDOWN_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class UpstreamCredential:
    """A master key: `name` is safe to log and record; `secret` never leaves the upstream request.
    `key_id` is the UpstreamKey row, None for ANTHROPIC_API_KEY used while the database is unreachable."""

    name: str
    secret: str = field(repr=False)
    key_id: int | None = None


@dataclass(frozen=True, slots=True)
class PooledKey:
    credential: UpstreamCredential
    weight: int


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    active: tuple[PooledKey, ...]
    draining: tuple[PooledKey, ...]
    environment_key: str  # the ANTHROPIC_API_KEY this copy was seeded with
    local_version: int
    shared_version: bytes | None
    loaded_at: float


_decrypted: dict[str, str] = {}


def _decrypt_once(token: str) -> str:
    """Rows reloaded every few seconds keep their ciphertext: each is decrypted once per process."""
    secret = _decrypted.get(token)
    if secret is None:
        secret = _decrypted[token] = decrypt_secret(token)
    return secret


def load_pool_snapshot(local_version: int, shared_version: bytes | None, loaded_at: float) -> PoolSnapshot:
    environment_key = settings.ANTHROPIC_API_KEY
    seed_environment_key(environment_key)
    rows = UpstreamKey.objects.filter(state__in=[UpstreamKeyState.ACTIVE, UpstreamKeyState.DRAINING], flagged_at__isnull=True)
    active: list[PooledKey] = []
    draining: list[PooledKey] = []
    for row in rows.order_by("pk"):
        try:
            secret = _decrypt_once(row.encrypted_secret)
        except SecretDecryptionFailed as exc:
            log_event(
                logger,
                "Upstream key skipped: its secret cannot be decrypted",
                logging.ERROR,
                upstreamKey=row.name,
                error=str(exc),
            )
            continue
        pooled = PooledKey(UpstreamCredential(row.name, secret, row.pk), row.weight)
        (active if row.state == UpstreamKeyState.ACTIVE else draining).append(pooled)
    return PoolSnapshot(tuple(active), tuple(draining), environment_key, local_version, shared_version, loaded_at)


def _environment_snapshot(local_version: int, loaded_at: float) -> PoolSnapshot:
    secret = settings.ANTHROPIC_API_KEY
    active = (PooledKey(UpstreamCredential(ENVIRONMENT_KEY_NAME, secret), 1),) if secret else ()
    return PoolSnapshot(active, (), secret, local_version, None, loaded_at)


def _refresh_in_thread(
    reload: bool, local_version: int, shared_version: bytes | None, now: float, stats: dict[int, KeyStats]
) -> PoolSnapshot | None:
    drop_unusable_connection()  # not retried here: the stats are written once; the next refresh retries
    if stats:
        record_upstream_key_stats(stats)
    return load_pool_snapshot(local_version, shared_version, now) if reload else None


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float:
    """`retry-after` as seconds (a number or an HTTP date), within [1, MAX_COOLDOWN_SECONDS]."""
    if not value:
        return DEFAULT_COOLDOWN_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_COOLDOWN_SECONDS
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return min(max(seconds, 1.0), MAX_COOLDOWN_SECONDS)


class KeyPool:
    """This process's pool and what it has heard about each key. `clock` is injectable so tests
    can move time across cache lifetimes and cooldowns."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, pick: Callable[[list[PooledKey], list[int]], PooledKey] | None = None
    ) -> None:
        self.clock = clock
        self.pick = pick or (lambda keys, weights: random.choices(keys, weights=weights)[0])
        self.snapshot: PoolSnapshot | None = None
        self.confirmed_at = 0.0
        self.retry_at = 0.0  # after a failed reload, the next attempt waits until then
        self.cooldown_until: dict[str, float] = {}
        self.rejected_until: dict[str, float] = {}
        self.works_until: dict[str, float] = {}  # keys the check accepted, trusted until then
        self._checking: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[KeyCheck]]] = {}
        self.in_flight: dict[str, int] = {}
        self.stats: dict[int, KeyStats] = {}
        self.stats_due_at = clock() + STATS_FLUSH_SECONDS
        self._stats_timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        self._refreshing: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # --- keeping the copy current -------------------------------------------------------------
    def _changed(self, snapshot: PoolSnapshot) -> bool:
        """Changed here (a bump in this process, or ANTHROPIC_API_KEY): not worth a request on the old copy."""
        return snapshot.local_version != local_pool_version() or snapshot.environment_key != settings.ANTHROPIC_API_KEY

    async def current(self) -> PoolSnapshot:
        now = self.clock()
        snapshot = self.snapshot
        if snapshot is None or (self._changed(snapshot) and now >= self.retry_at):
            return await self._refresh(force_reload=True)
        since_confirmed = now - self.confirmed_at
        if since_confirmed >= 2 * settings.UPSTREAM_KEY_POOL_CACHE_SECONDS and now >= self.retry_at:
            return await self._refresh(force_reload=False)
        if since_confirmed >= settings.UPSTREAM_KEY_POOL_CACHE_SECONDS or now >= self.stats_due_at:
            self._start_refresh(force_reload=False)
        return snapshot

    def _start_refresh(self, force_reload: bool) -> asyncio.Task[None]:
        loop = asyncio.get_running_loop()
        if self._refreshing is not None and self._refreshing[0] is loop and not self._refreshing[1].done():
            return self._refreshing[1]
        task = loop.create_task(self._run_refresh(force_reload))
        self._refreshing = (loop, task)
        self._keep(task)
        return task

    async def _refresh(self, force_reload: bool) -> PoolSnapshot:
        await asyncio.shield(self._start_refresh(force_reload))
        if force_reload and self.snapshot is not None and self._changed(self.snapshot) and self.clock() >= self.retry_at:
            # The refresh this request joined began before the change it waits for: one more.
            await asyncio.shield(self._start_refresh(True))
        if self.snapshot is None:
            raise NoUpstreamKey()
        return self.snapshot

    def _take_stats(self, now: float) -> dict[int, KeyStats]:
        if now < self.stats_due_at or not self.stats:
            return {}
        taken, self.stats = self.stats, {}
        self.stats_due_at = now + STATS_FLUSH_SECONDS
        return taken

    async def _run_refresh(self, force_reload: bool) -> None:
        started = self.clock()
        local_version = local_pool_version()
        shared_version = await read_shared_pool_version()
        snapshot = self.snapshot
        reload = (
            force_reload
            or snapshot is None
            or shared_version is None
            or shared_version != snapshot.shared_version
            or started - snapshot.loaded_at >= POOL_MAX_AGE_SECONDS
        )
        stats = self._take_stats(started)
        if not reload and not stats:
            self.confirmed_at = started
            return
        try:
            loaded = await sync_to_async(_refresh_in_thread)(reload, local_version, shared_version, started, stats)
        except Exception as exc:  # the database or Redis failing must not fail requests: keep what we have
            self._restore_stats(stats)
            self.confirmed_at = started
            self.retry_at = started + settings.UPSTREAM_KEY_POOL_CACHE_SECONDS  # not a database attempt per request
            if self.snapshot is None:
                self.snapshot = _environment_snapshot(local_version, started)
            log_event(
                logger,
                "Upstream key pool not reloaded",
                logging.ERROR,
                error=repr(exc),
                keptKeys=[key.credential.name for key in self.snapshot.active],
            )
            return
        if loaded is not None:
            self._install(loaded)
        self.confirmed_at = started

    def _install(self, snapshot: PoolSnapshot) -> None:
        previous = self.snapshot
        self.snapshot = snapshot
        names = {key.credential.name for key in snapshot.active + snapshot.draining}
        for table in (self.cooldown_until, self.rejected_until, self.works_until):
            for name in [name for name in table if name not in names]:
                del table[name]
        if previous is None or [k.credential.name for k in previous.active] != [k.credential.name for k in snapshot.active]:
            log_event(
                logger,
                "Upstream key pool loaded",
                active=[k.credential.name for k in snapshot.active],
                draining=[k.credential.name for k in snapshot.draining],
            )
        if not snapshot.active and not snapshot.draining:
            log_event(logger, "Upstream key pool is empty: requests get 503 no_upstream_key", logging.ERROR)

    def _restore_stats(self, stats: dict[int, KeyStats]) -> None:
        for key_id, seen in stats.items():
            self.stats.setdefault(key_id, KeyStats()).merge(seen)
        self._schedule_stats_flush()

    def _schedule_stats_flush(self) -> None:
        """Counters reach the rows within STATS_FLUSH_SECONDS even when no request follows to carry
        them there (the last requests before a quiet spell would otherwise wait for the next one)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        pending = self._stats_timer
        if pending is not None and pending[0] is loop and not pending[1].cancelled() and pending[1].when() > loop.time():
            return
        delay = min(max(self.stats_due_at - self.clock(), 0.0), STATS_FLUSH_SECONDS) + 0.01
        # A fresh context: the request's own would send the write to an executor that has finished
        # with that request (asgiref's thread-sensitive executors live in context variables).
        handle = loop.call_later(delay, self._flush_stats_when_due, context=contextvars.Context())
        self._stats_timer = (loop, handle)

    def _flush_stats_when_due(self) -> None:
        self._stats_timer = None
        if not self.stats:
            return
        if self.clock() < self.stats_due_at:
            self._schedule_stats_flush()
            return
        self._start_refresh(force_reload=False)

    # --- choosing -----------------------------------------------------------------------------
    async def choose(self, exclude: Collection[str] = ()) -> UpstreamCredential:
        snapshot = await self.current()
        now = self.clock()
        usable = [key for key in snapshot.active if self.rejected_until.get(key.credential.name, 0.0) <= now]
        if not usable:
            usable = [key for key in snapshot.draining if self.rejected_until.get(key.credential.name, 0.0) <= now]
        if not usable:
            raise NoUpstreamKey("The gateway has no usable upstream API key: every key is retired or rejected by the upstream.")
        untried = [key for key in usable if key.credential.name not in exclude] or usable
        ready = [key for key in untried if self.cooldown_until.get(key.credential.name, 0.0) <= now]
        if not ready:
            return min(untried, key=lambda key: self.cooldown_until[key.credential.name]).credential
        if len(ready) == 1:
            return ready[0].credential
        return self.pick(ready, [key.weight for key in ready]).credential

    # --- hearing how it went ------------------------------------------------------------------
    def report(
        self, credential: UpstreamCredential, *, status: int | None, exception: BaseException | None, retry_after: str | None
    ) -> None:
        name = credential.name
        if credential.key_id is not None:
            seen = self.stats.setdefault(credential.key_id, KeyStats())
            seen.requests += 1
            seen.last_used = dt.datetime.now(dt.UTC)
            self._schedule_stats_flush()
        else:
            seen = KeyStats()
        if status == RATE_LIMITED_STATUS:
            seen.rate_limited += 1
            seconds = retry_after_seconds(retry_after)
            self.cooldown_until[name] = self.clock() + seconds
            log_event(logger, "Upstream key cooling down", logging.WARNING, upstreamKey=name, seconds=round(seconds, 1))
        elif status is not None and status >= 500:
            seen.server_errors += 1
        elif exception is not None:
            seen.connection_failures += 1
            log_event(logger, "Upstream attempt failed", logging.WARNING, upstreamKey=name, error=type(exception).__name__)

    async def confirm_refusal(self, credential: UpstreamCredential, status: int) -> bool:
        """The upstream answered `status` (401/403) to a request on `credential`: is the key itself
        refused? Checked once however many requests ask at the same time; a refused key is taken
        out of rotation. A check that cannot tell (upstream unreachable) leaves the key in."""
        name = credential.name
        if self.rejected_until.get(name, 0.0) > self.clock():
            return True
        if self.works_until.get(name, 0.0) > self.clock():
            return False
        loop = asyncio.get_running_loop()
        running = self._checking.get(name)
        if running is None or running[0] is not loop or running[1].done():
            running = self._checking[name] = (loop, loop.create_task(acheck_upstream_key(credential.secret)))
        check = await asyncio.shield(running[1])
        if check.verdict is KeyVerdict.REFUSED:
            self._reject(credential, status)
            return True
        if check.verdict is KeyVerdict.WORKS:
            self.works_until[name] = self.clock() + KEY_CHECK_TRUSTED_SECONDS
        log_event(
            logger,
            "Upstream refused a request, not the key" if check.works else "Upstream key could not be checked",
            logging.WARNING,
            upstreamKey=name,
            status=status,
            check=check.detail,
        )
        return False

    def _reject(self, credential: UpstreamCredential, status: int) -> None:
        now = self.clock()
        already = self.rejected_until.get(credential.name, 0.0) > now
        self.rejected_until[credential.name] = now + REJECTION_HOLD_SECONDS
        if already:
            return
        log_event(logger, "Upstream rejected the master key", logging.ERROR, upstreamKey=credential.name, status=status)
        if credential.key_id is None:
            return
        self.stats.setdefault(credential.key_id, KeyStats()).rejected += 1
        flag = sync_to_async(flag_upstream_key)(key_id=credential.key_id, reason=f"Upstream answered {status}", actor="gateway")
        self._keep(asyncio.get_running_loop().create_task(flag))

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Fire-and-forget work is kept referenced until done, and its failure logged."""
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log_event(logger, "Upstream key bookkeeping failed", logging.ERROR, error=repr(task.exception()))

    async def settle(self) -> None:
        """Wait for this loop's background work (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        pending = [task for task in self._background if task.get_loop() is loop]
        if self._refreshing is not None and self._refreshing[0] is loop:
            pending.append(self._refreshing[1])
        await asyncio.gather(*pending, return_exceptions=True)


class HeldKey:
    """The key one request is using, counted in flight (in this process, and with Redis across
    all) from `hold` until `release`: after the answer was relayed, or the client left."""

    __slots__ = ("credential",)

    def __init__(self) -> None:
        self.credential: UpstreamCredential | None = None

    async def hold(self, credential: UpstreamCredential) -> None:
        await self.release()
        self.credential = credential
        counts = _pool.in_flight
        counts[credential.name] = counts.get(credential.name, 0) + 1
        if credential.key_id is not None:
            count_in_flight(credential.key_id, 1)
            start_in_flight_reporter()

    async def release(self) -> None:
        credential = self.credential
        if credential is None:
            return
        self.credential = None
        counts = _pool.in_flight
        left = counts.get(credential.name, 1) - 1
        if left > 0:
            counts[credential.name] = left
        else:
            counts.pop(credential.name, None)
        if credential.key_id is not None:
            count_in_flight(credential.key_id, -1)


_pool = KeyPool()


async def choose_upstream_key(exclude: Collection[str] = ()) -> UpstreamCredential:
    """An active key by weight, avoiding the names in `exclude` (keys a failed attempt used) and
    keys cooling down; when every candidate is excluded, one of them anyway (a retry on the same
    key beats no retry). Raises NoUpstreamKey when the pool has no usable key."""
    return await _pool.choose(exclude)


def report_upstream_result(
    credential: UpstreamCredential,
    *,
    status: int | None = None,
    exception: BaseException | None = None,
    retry_after: str | None = None,
) -> None:
    """Hear how an attempt with `credential` went: an HTTP status (with its `retry-after`), or the
    exception that ended it."""
    _pool.report(credential, status=status, exception=exception, retry_after=retry_after)


async def confirm_upstream_key_refused(credential: UpstreamCredential, status: int) -> bool:
    """After a 401/403 to a request: True when the key itself is refused (and now out of
    rotation), False when the refusal was about the request or could not be pinned on the key."""
    return await _pool.confirm_refusal(credential, status)


def local_in_flight() -> dict[str, int]:
    """Requests in flight in this process, per key name."""
    return dict(_pool.in_flight)


async def preload_upstream_key_pool() -> None:
    """Lifespan start-up: seed ANTHROPIC_API_KEY and load the pool before the first request."""
    await _pool.current()


async def settle_upstream_key_pool() -> None:
    await _pool.settle()


def forget_upstream_key_pool() -> None:
    """A fresh pool for this process (tests: the database is emptied under it between tests)."""
    global _pool
    _pool = KeyPool()
    _decrypted.clear()


register_process_state("upstream key pool", forget_upstream_key_pool)


def upstream_key_configured() -> bool:
    """For the system check: a key in the environment, or a usable one in the pool."""
    if settings.ANTHROPIC_API_KEY:
        return True
    try:
        return bool(UpstreamKey.objects.filter(state=UpstreamKeyState.ACTIVE, flagged_at__isnull=True).exists())
    except DatabaseError:
        return False
