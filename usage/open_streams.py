"""The writer's side of crash-safe stream accounting: the latest checkpoint of every stream still
being relayed, kept in `OpenStream` until its final record arrives.

A gateway process queues a checkpoint of a stream's usage when the stream starts and as its output
grows, and, while it relays checkpointed streams, a heartbeat every flush interval. The writer keeps
the newest checkpoint of each stream (by sequence: a checkpoint spooled while Redis was away may
arrive after a later one), refreshes `seen_at` on every heartbeat of its owner, and deletes the row
when the final record is stored. A row whose owner has gone quiet is an orphan: the process died
mid-stream (`usage.records.record_orphaned_streams` turns it into an interrupted record).

Short streams cost no database work here: a checkpoint and the final record of the same stream
usually travel in one batch, and cancel out before anything is written.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction

from usage.models import OpenStream
from usage.queue import StreamCheckpoint

ORPHANS_PER_PASS = 500


def _upsert_sql() -> str:
    quote = connection.ops.quote_name
    table = quote(OpenStream._meta.db_table)
    columns = ("request_id", "owner", "sequence", "event", "seen_at")
    updated = ", ".join(f"{quote(column)} = excluded.{quote(column)}" for column in columns[1:])
    return (
        f"INSERT INTO {table} ({', '.join(quote(column) for column in columns)}) VALUES (%s, %s, %s, %s, %s) "
        f"ON CONFLICT ({quote('request_id')}) DO UPDATE SET {updated} WHERE {table}.{quote('sequence')} < excluded.{quote('sequence')}"
    )


def note_stream_progress(checkpoints: list[StreamCheckpoint], heartbeats: set[str], finished: set[str], now: dt.datetime) -> None:
    """Store one batch's checkpoints and heartbeats; `finished` are the request ids of checkpointed
    streams whose final record this batch stored."""
    latest: dict[str, StreamCheckpoint] = {}
    started_here: set[str] = set()
    for checkpoint in checkpoints:
        if checkpoint.sequence == 0:
            started_here.add(checkpoint.request_id)
        held = latest.get(checkpoint.request_id)
        if held is None or held.sequence < checkpoint.sequence:
            latest[checkpoint.request_id] = checkpoint
    pending = [checkpoint for request_id, checkpoint in latest.items() if request_id not in finished]
    # A stream whose first checkpoint is in this batch has no row yet, unless its checkpoints came
    # out of order (Redis and the spool): then the row stays until the orphan pass finds its record.
    stored_before = finished - started_here
    if not (pending or heartbeats or stored_before):
        return
    seen_at = connection.ops.adapt_datetimefield_value(now)
    with transaction.atomic():
        if stored_before:
            OpenStream.objects.filter(request_id__in=stored_before).delete()
        if pending:
            with connection.cursor() as cursor:
                cursor.executemany(
                    _upsert_sql(),
                    [
                        [checkpoint.request_id, checkpoint.owner, checkpoint.sequence, checkpoint.event.decode(), seen_at]
                        for checkpoint in pending
                    ],
                )
        if heartbeats:
            OpenStream.objects.filter(owner__in=heartbeats).update(seen_at=now)


def orphaned_streams(now: dt.datetime, quiet_for: dt.timedelta) -> list[OpenStream]:
    """Checkpointed streams whose owner has not been heard from for `quiet_for`, oldest first."""
    return list(OpenStream.objects.filter(seen_at__lt=now - quiet_for).order_by("seen_at")[:ORPHANS_PER_PASS])


def forget_streams(request_ids: list[str]) -> None:
    OpenStream.objects.filter(request_id__in=request_ids).delete()


def open_stream_count() -> int:
    return OpenStream.objects.count()
