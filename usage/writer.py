"""Usage off the request path: `submit_usage` persists a record at once (the local spool; with Redis,
a list, within USAGE_PUSH_DELAY_MS so a worker's records of that span share one push), and a writer
batches queued records into the database.

Each ASGI worker runs one writer task, started by the lifespan hook or by the first submit (daphne
has no lifespan). With USAGE_WRITER=thread it wakes every USAGE_FLUSH_INTERVAL seconds, or as soon as
USAGE_BATCH_SIZE records are waiting, and drains in a thread of its own so the event loop never
waits on the database. With USAGE_WRITER=process it only hands its records over (pushes what is
left for Redis, seals its spool segment) every USAGE_FLUSH_INTERVAL seconds, and one
`manage.py run_usage_writer` process drains for every worker: the writer thread's CPU, and the
event loop's waits for the GIL while it runs, cost a worker a fifth of its requests per second
(measured at 64 connections, the worker on one core, the writer process on the other).
Records leave the queue only after their batch commits; while the database is unreachable they stay
queued and the writer backs off. Celery (`drain_usage_queue_task`) and `manage.py drain_usage` drain
the same queues, which picks up what a dead process left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import ResponseError

from proxyproject.lib.backends import shared_state_backend
from proxyproject.lib.logging import log_event
from proxyproject.lib.redis import REDIS_ERRORS, cluster_configured, get_sync_redis, require_async_redis
from proxyproject.lib.resp_client import get_resp_client
from usage import queue, spool
from usage.events import UsageEvent
from usage.live import MAX_ROWS_PER_MESSAGE, broadcast_records, live_row
from usage.records import StoredRow, record_orphaned_streams, store_payloads

logger = logging.getLogger("usage.writer")
MAX_BACKOFF_SECONDS = 30.0
_drain_lock = threading.Lock()
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-writer")


@dataclass
class DrainResult:
    stored: int = 0
    live: list[dict[str, Any]] = field(default_factory=list)

    def add(self, rows: list[StoredRow]) -> None:
        self.stored += len(rows)
        self.live = (self.live + [live_row(row) for row in rows[-MAX_ROWS_PER_MESSAGE:]])[-MAX_ROWS_PER_MESSAGE:]


def _chunks(items: list[bytes], size: int) -> list[list[bytes]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _drain_spool(result: DrainResult) -> None:
    spool.seal_active_segment()
    for segment in spool.claim_segments():
        try:
            for chunk in _chunks(segment.lines, settings.USAGE_BATCH_SIZE):
                result.add(store_payloads(chunk))
            segment.acknowledge()
        finally:
            segment.release()


def _drain_redis(result: DrainResult) -> None:
    """Store the records waiting when the drain starts, and keep on only while batches come back
    full (a backlog). Chasing a trickle instead, a writer under steady light traffic stored a batch
    of the dozen records that arrived while it stored the last one, over and over: each batch pays a
    claim, an acknowledgement and a transaction of four statements, which made the writer and
    PostgreSQL spend about 300 µs of CPU per record at 1,300 records/s (`python -m bench.cpu`),
    on the cores the gateway shares with them. What arrives after the drain starts waits for the next
    one, at most USAGE_FLUSH_INTERVAL."""
    client = get_sync_redis()
    if client is None:
        return
    if not cluster_configured():
        queue.adopt_pre_cluster_queue(client)
    owed = queue.shards_with_records(client)
    size = settings.USAGE_BATCH_SIZE
    while owed:
        # One batch from each shard in turn, so a backlog in one shard does not hold the others up.
        for shard in list(owed):
            payloads = queue.claim_batch(client, shard, size)
            owed[shard] -= len(payloads)
            if not payloads or (owed[shard] <= 0 and len(payloads) < size):
                del owed[shard]
            if not payloads:
                continue
            try:
                records = store_payloads(payloads)
                queue.acknowledge_batch(client, shard)
            except Exception:
                with contextlib.suppress(*REDIS_ERRORS):  # Redis away too: the lease returns the batch later
                    queue.return_batch(client, shard)
                raise
            result.add(records)


def drain_once() -> DrainResult:
    """Store everything queued now, spool first (it needs no Redis), batch by batch; then record the
    streams whose process died mid-stream, now that what it queued last is stored."""
    with _drain_lock:
        result = DrainResult()
        _drain_spool(result)
        _drain_redis(result)
        result.add(record_orphaned_streams())
        return result


def _drain_in_writer_thread() -> DrainResult:
    close_old_connections()
    try:
        return drain_once()
    finally:
        close_old_connections()


def drain_usage_queue() -> int:
    """Synchronous drain for commands, Celery and tests; returns the records stored."""
    result = drain_once()
    if result.live:
        async_to_sync(broadcast_records)(result.live)
    return result.stored


def _spool_or_log(payloads: list[bytes], reason: str) -> None:
    spool.append_to_spool(payloads)
    log_event(logger, "Usage records spooled locally", logging.WARNING, records=len(payloads), reason=reason)


async def _rpush(key: str, payloads: list[bytes]) -> None:
    """Through the lean client where there is one: at one connection every request pushes its own
    record, and redis-py's client costs about 100 µs of CPU more per command (see `resp_client`)."""
    lean = get_resp_client()
    if lean is None:
        await require_async_redis().rpush(key, *payloads)
        return
    reply = await lean.execute("RPUSH", key, *payloads)
    if isinstance(reply, ResponseError):
        raise reply


class _LoopWriter:
    """The writer of one event loop: an outbox for Redis pushes and the periodic drain task."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, drains: bool) -> None:
        self.loop = loop
        self.drains = drains
        self.wake = asyncio.Event()
        self.outbox: list[bytes] = []
        self.pushing: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.pending = 0
        self.stopping = False
        self.task = loop.create_task(self.run(), name="usage-writer", context=contextvars.Context())

    def submit(self, payload: bytes) -> None:
        if shared_state_backend() == "redis":
            self.outbox.append(payload)
            self.schedule_push()
        else:
            spool.append_to_spool([payload])
        self.pending += 1
        if self.drains and self.pending >= settings.USAGE_BATCH_SIZE:
            self.wake.set()

    def schedule_push(self) -> None:
        """Push within USAGE_PUSH_DELAY_MS, so the records of that span share one RPUSH; a push in
        flight takes what arrives meanwhile when it returns."""
        if self.timer is not None or (self.pushing is not None and not self.pushing.done()):
            return
        delay = settings.USAGE_PUSH_DELAY_MS / 1000
        if delay > 0:
            self.timer = self.loop.call_later(delay, self.start_push)
        else:
            self.start_push()

    def start_push(self) -> None:
        self.timer = None
        if self.pushing is None or self.pushing.done():
            self.pushing = self.loop.create_task(self.push_outbox(), context=contextvars.Context())

    async def push_outbox(self) -> None:
        """One RPUSH for every record submitted meanwhile; the spool takes them if Redis will not."""
        while self.outbox:
            batch, self.outbox = self.outbox, []
            try:
                await _rpush(queue.push_key(), batch)
            except Exception as exc:  # Redis down: the local spool keeps them, the writer still drains it
                _spool_or_log(batch, f"{type(exc).__name__}: {exc}")

    async def push_pending(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pushing is not None:
            await self.pushing
        await self.push_outbox()

    async def flush(self) -> int:
        await self.push_pending()
        self.pending = 0
        result = await self.loop.run_in_executor(_executor, _drain_in_writer_thread)
        await broadcast_records(result.live)
        return result.stored

    async def hand_over(self) -> None:
        """Leave this worker's records to the usage writer process: sent to Redis, spool sealed."""
        await self.push_pending()
        self.pending = 0
        spool.seal_active_segment()

    async def step(self) -> None:
        if _open_streams:
            self.submit(queue.encode_heartbeat(queue.writer_id()))
        if self.drains:
            await self.flush()
        else:
            await self.hand_over()

    async def run(self) -> None:
        delay = settings.USAGE_FLUSH_INTERVAL
        while not self.stopping:
            try:
                await asyncio.wait_for(self.wake.wait(), delay)
            except TimeoutError:
                pass
            self.wake.clear()
            if self.stopping:
                return
            try:
                await self.step()
                delay = settings.USAGE_FLUSH_INTERVAL
            except Exception as exc:  # database or Redis away: records stay queued; retry with backoff
                delay = min(max(delay, settings.USAGE_FLUSH_INTERVAL) * 2, MAX_BACKOFF_SECONDS)
                log_event(
                    logger,
                    "Usage flush failed; records stay queued",
                    logging.WARNING,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=delay,
                )


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWriter] = weakref.WeakKeyDictionary()


def _writer_for(loop: asyncio.AbstractEventLoop, *, drains: bool | None = None) -> _LoopWriter:
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = _LoopWriter(loop, drains=settings.USAGE_WRITER == "thread" if drains is None else drains)
    return writer


def submit_usage(event: UsageEvent) -> None:
    """Queue one request's usage durably and return at once; never waits on the database.

    From async code the record goes to this loop's writer (pushed to Redis within
    USAGE_PUSH_DELAY_MS; the spool write happens now). From sync code it is pushed or spooled synchronously.
    """
    payload = queue.encode_event(event)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        _writer_for(loop).submit(payload)
        return
    client = get_sync_redis()
    if client is None:
        spool.append_to_spool([payload])
        return
    try:
        client.rpush(queue.push_key(), payload)
    except Exception as exc:  # Redis down: the spool keeps it
        _spool_or_log([payload], f"{type(exc).__name__}: {exc}")


_open_streams: set[str] = set()
"""Request ids of the checkpointed streams this process relays now: while there are any, each
writer tick queues a heartbeat, so the writer knows their checkpoints are not orphans."""


def submit_stream_checkpoint(event: UsageEvent, sequence: int) -> None:
    """Queue a stream's usage so far, durably like a record, for the writer to hold until the final
    record arrives, or to record as interrupted if this process dies first."""
    _open_streams.add(event.request_id)
    _writer_for(asyncio.get_running_loop()).submit(queue.encode_checkpoint(event, queue.writer_id(), sequence))


def stream_closed(request_id: str) -> None:
    """The stream's relay is over; its final record follows."""
    _open_streams.discard(request_id)


async def flush_usage() -> int:
    """Write everything queued now, this loop's unsent records included; returns the records stored."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is not None:
        await writer.push_pending()
    result = await loop.run_in_executor(_executor, _drain_in_writer_thread)
    await broadcast_records(result.live)
    return result.stored


async def start_usage_writer() -> None:
    _writer_for(asyncio.get_running_loop())


async def run_usage_writer(stop: asyncio.Event) -> None:
    """The usage writer process (USAGE_WRITER=process): drain every worker's queued records until
    `stop` is set, then write what is left."""
    _writer_for(asyncio.get_running_loop(), drains=True)
    log_event(logger, "Usage writer started", interval_s=settings.USAGE_FLUSH_INTERVAL, batch=settings.USAGE_BATCH_SIZE)
    await stop.wait()
    await stop_usage_writer()


async def stop_usage_writer() -> None:
    """Stop this loop's writer and flush what it holds (lifespan shutdown). What cannot be written
    now stays queued for the next writer."""
    writer = _writers.pop(asyncio.get_running_loop(), None)
    if writer is None:
        return
    writer.stopping = True
    writer.wake.set()
    await writer.task
    try:
        if not writer.drains:
            handed = writer.pending
            await writer.hand_over()
            log_event(logger, "Usage records handed over to the usage writer process", records=handed)
            return
        stored = await writer.flush()
    except Exception as exc:
        log_event(logger, "Final usage flush failed; records stay queued", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        return
    log_event(logger, "Usage writer stopped", stored=stored)
