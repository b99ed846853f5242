"""Turning queued usage events into UsageRecord rows: priced, bounded to the columns, inserted
idempotently by request id.

A record that the database still refuses on its own (it cannot be made to fit) is set aside in a
rejects file next to the spool instead of blocking every record queued behind it.

The queue also carries streams' checkpoints and their processes' heartbeats (`usage.open_streams`);
a stream whose process died becomes an interrupted record here, which its final record replaces if
it turns up after all.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import DecimalField, Field, ForeignKey
from django.utils import timezone

from proxyproject.lib.logging import log_event
from tokens.models import Device, Organization
from usage import spool
from usage.counts import COUNT_FIELDS
from usage.events import UsageEvent
from usage.models import OpenStream, UsageRecord
from usage.open_streams import forget_streams, note_stream_progress, orphaned_streams
from usage.pricing import PriceQuote, as_utc, quote_usage
from usage.queue import OwnerHeartbeat, StreamCheckpoint, decode_event, decode_item

logger = logging.getLogger("usage.records")
REJECTS_FILE = "rejected-records.log"
STREAM_INTERRUPTED_BY_CRASH = "gateway_crashed"
_MAX_SMALL = 32767


_TEXT_LIMITS = {
    field.attname: field.max_length for field in UsageRecord._meta.concrete_fields if field.get_internal_type() == "CharField"
}
_COLUMNS = [field for field in UsageRecord._meta.concrete_fields if not field.primary_key]
_STORED_AS_IS = frozenset({"CharField", "TextField", "BooleanField", "FloatField", "AutoField", "BigAutoField", "SmallAutoField"})
_INTEGER_TYPES = frozenset(
    {
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
    }
)
StoredRow = dict[str, Any]
"""A stored usage record as its columns' values, keyed by attribute name (`device_id`, not `device`)."""


def _text(value: object, attname: str) -> str:
    return ("" if value is None else str(value))[: _TEXT_LIMITS[attname]]


def is_error_event(event: UsageEvent) -> bool:
    return event.status >= 400 or bool(event.error_type)


def row_from_event(
    event: UsageEvent, quote: PriceQuote, known_devices: set[int], known_orgs: set[int], recorded_at: dt.datetime
) -> StoredRow:
    """The record's column values, bounded to the columns; foreign keys only to rows that exist."""
    return {
        "request_id": _text(event.request_id, "request_id"),
        "upstream_request_id": _text(event.upstream_request_id, "upstream_request_id"),
        "occurred_at": as_utc(event.occurred_at),
        "endpoint": _text(event.endpoint, "endpoint"),
        "method": _text(event.method, "method"),
        "device_id": event.device_pk if event.device_pk in known_devices else None,
        "organization_id": event.org_id if event.org_id in known_orgs else None,
        "device_ref": _text(event.device_id, "device_ref"),
        "device_pk": event.device_pk,
        "org_pk": event.org_id,
        "person_pk": event.person_id,
        "session_id": _text(event.session_id, "session_id"),
        "model": _text(event.model, "model"),
        "requested_model": _text(event.requested_model, "requested_model"),
        "status": min(event.status, _MAX_SMALL),
        "error_type": _text(event.error_type, "error_type"),
        "is_error": is_error_event(event),
        "streamed": bool(event.streamed),
        "client_disconnected": bool(event.client_disconnected),
        **{name: getattr(event, name) for name in COUNT_FIELDS},
        "service_tier": _text(event.service_tier, "service_tier"),
        "speed": _text(event.speed, "speed"),
        "inference_geo": _text(event.inference_geo, "inference_geo"),
        "latency_ms": event.latency_ms,
        "ttfb_ms": event.ttfb_ms,
        "upstream_key_name": _text(event.upstream_key_name, "upstream_key_name"),
        "cost": quote.cost,
        "priced": quote.cost is not None,
        "price_flag": quote.flag,
        "pricing": quote.basis(),
        "extra": event.extra or {},
        "recorded_at": recorded_at,
    }


def store_events(events: list[UsageEvent], *, interrupted: bool = False) -> list[StoredRow]:
    """Insert in one transaction; request ids already stored (a replayed batch) are skipped, except
    that a final record replaces the interrupted one the writer made for its stream (`interrupted`:
    these are such records, which never replace anything)."""
    unique = list({event.request_id: event for event in events}.values())
    if not unique:
        return []
    quotes = [quote_usage(event) for event in unique]
    recorded_at = timezone.now()
    with transaction.atomic():
        device_pks = {event.device_pk for event in unique if event.device_pk is not None}
        org_pks = {event.org_id for event in unique if event.org_id is not None}
        known_devices = set(Device.objects.filter(pk__in=device_pks).values_list("pk", flat=True)) if device_pks else set()
        known_orgs = set(Organization.objects.filter(pk__in=org_pks).values_list("pk", flat=True)) if org_pks else set()
        rows = [row_from_event(event, quote, known_devices, known_orgs, recorded_at) for event, quote in zip(unique, quotes)]
        refetched = [event.request_id for event in unique if event.priced_at is not None]
        if connection.vendor == "postgresql" and refetched:
            moments = stored_moments(refetched)
            rows = [{**row, "occurred_at": moments[row["request_id"]]} if row["request_id"] in moments else row for row in rows]
        insert_ignoring_stored(rows, replace_interrupted=not interrupted)
    return rows


def column_of(field: Field[Any, Any]) -> str:
    """The column a concrete field is stored in (django-stubs types `column` as optional, for the
    fields that have none)."""
    if field.column is None:
        raise ValueError(f"{field.name} is stored in no column")
    return field.column


def _column_adapter(field: Field[Any, Any]) -> Callable[[Any], Any] | None:
    """The database adaptation of one column's already normalized Python value, or None when the
    driver takes the value as it is. The same final step the field's get_db_prep_save ends in,
    without the conversions `row_from_event` has already made."""
    ops = connection.ops
    kind = field.target_field.get_internal_type() if isinstance(field, ForeignKey) else field.get_internal_type()
    if kind in _STORED_AS_IS:
        return None
    if kind in _INTEGER_TYPES:
        return lambda value: ops.adapt_integerfield_value(value, kind)
    if kind == "DateTimeField":
        return ops.adapt_datetimefield_value
    if isinstance(field, DecimalField):
        return lambda value: ops.adapt_decimalfield_value(value, field.max_digits, field.decimal_places)
    return lambda value: field.get_db_prep_save(value, connection)


def stored_moments(request_ids: list[str]) -> dict[str, dt.datetime]:
    """The `occurred_at` of each of these request ids already stored; a new row takes it.

    On PostgreSQL the table is partitioned by month of `occurred_at` and unique on (request_id,
    occurred_at) (`usage.partitions`). A gateway request's moment is fixed when it starts, so a
    replayed record and a stream's interrupted record share it and need nothing. A batch result's
    (the events with `priced_at`) is the fetch, which a second fetch changes: with the stored
    moment its insert meets the stored row, so the table stays unique by request id. It costs an
    index probe per partition per id, so only batch results pay it."""
    return dict(UsageRecord.objects.filter(request_id__in=request_ids).values_list("request_id", "occurred_at"))


def _conflict_target() -> str:
    """The table's unique key that holds the request id: with the partition key on PostgreSQL."""
    quote = connection.ops.quote_name
    if connection.vendor == "postgresql":
        return f"{quote('request_id')}, {quote('occurred_at')}"
    return quote("request_id")


def _on_conflict(replace_interrupted: bool) -> str:
    """Keep the stored row, unless it is the interrupted record of a stream whose final record this is
    (its process was thought dead, or its final record was still queued): the final record wins."""
    quote = connection.ops.quote_name
    if not replace_interrupted:
        return f"ON CONFLICT ({_conflict_target()}) DO NOTHING"
    table = quote(UsageRecord._meta.db_table)
    updated = ", ".join(
        f"{quote(column_of(field))} = excluded.{quote(column_of(field))}" for field in _COLUMNS if field.attname != "request_id"
    )
    return (
        f"ON CONFLICT ({_conflict_target()}) DO UPDATE SET {updated} "
        f"WHERE {table}.{quote('error_type')} = '{STREAM_INTERRUPTED_BY_CRASH}'"
    )


def insert_ignoring_stored(rows: list[StoredRow], *, replace_interrupted: bool = True) -> None:
    """Insert the rows ON CONFLICT DO NOTHING (or replace an interrupted record).

    bulk_create compiles every field of every row through the ORM's SQL compiler, and even the
    fields' own get_db_prep_save chains cost a quarter of a gateway worker at a few hundred records
    a second (py-spy). Here the statement is built once, and each value only goes through the
    backend's adaptation for its column type, so the rows are exactly what bulk_create would write.

    On PostgreSQL the whole batch is one statement over one array per column (`unnest`): one row per
    statement made each row cost a millisecond on the partitioned table (every statement planned
    and routed), and a VALUES list of thousands of parameters spends as long in the driver. Other
    databases get VALUES lists as long as their parameter limit allows.
    """
    quote = connection.ops.quote_name
    columns = [(field.attname, _column_adapter(field)) for field in _COLUMNS]
    head = f"INSERT INTO {quote(UsageRecord._meta.db_table)} ({', '.join(quote(column_of(field)) for field in _COLUMNS)}) "
    tail = f" {_on_conflict(replace_interrupted)}"

    def adapted(row: StoredRow) -> list[Any]:
        return [row[name] if adapt is None or row[name] is None else adapt(row[name]) for name, adapt in columns]

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with psycopg.Cursor(cursor.connection) as bound:  # parameters bound by the server: the arrays go as they are
                bound.execute(head + _unnest_select() + tail, _column_arrays(rows))
            return
        per_statement = (connection.features.max_query_params or 999) // len(columns)
        placeholders = f"({', '.join(['%s'] * len(columns))})"
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            values = [value for row in chunk for value in adapted(row)]
            cursor.execute(head + "VALUES " + ", ".join([placeholders] * len(chunk)) + tail, values)


@functools.cache
def _unnest_select() -> str:
    """SELECT the columns from one array parameter each; JSON travels as text arrays."""
    arrays = []
    for field in _COLUMNS:
        kind = field.target_field if isinstance(field, ForeignKey) else field
        db_type = "text" if kind.get_internal_type() == "JSONField" else kind.db_type(connection)
        arrays.append(f"%b::{db_type}[]")
    names = [f"c{index}" for index in range(len(_COLUMNS))]
    selected = [f"{name}::jsonb" if field.get_internal_type() == "JSONField" else name for name, field in zip(names, _COLUMNS)]
    return f"SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) AS given({', '.join(names)})"


def _column_arrays(rows: list[StoredRow]) -> list[list[Any]]:
    """One list per column, in _COLUMNS order; JSON columns as their text."""
    arrays = []
    for field in _COLUMNS:
        name = field.attname
        if field.get_internal_type() == "JSONField":
            arrays.append([orjson.dumps(row[name]).decode() for row in rows])
        else:
            arrays.append([row[name] for row in rows])
    return arrays


def reject_payload(payload: bytes, reason: str) -> None:
    directory = spool.spool_directory()
    directory.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps({"reason": reason, "payload": payload.decode(errors="replace")}) + b"\n"
    with open(directory / REJECTS_FILE, "ab") as rejects:
        rejects.write(line)
    log_event(logger, "Usage record rejected", logging.ERROR, reason=reason, file=str(directory / REJECTS_FILE))


def store_payloads(payloads: list[bytes]) -> list[StoredRow]:
    """Decode and store a batch: its records, then its streams' checkpoints and heartbeats. On a
    record the database refuses, store one by one and set aside the bad ones.

    Connection errors (OperationalError) propagate: the batch stays queued until the database is back.
    """
    decoded: list[tuple[bytes, UsageEvent]] = []
    checkpoints: list[StreamCheckpoint] = []
    heartbeats: set[str] = set()
    for payload in payloads:
        try:
            item = decode_item(payload)
        except (ValueError, TypeError, KeyError) as exc:
            reject_payload(payload, f"undecodable: {exc}")
            continue
        if isinstance(item, StreamCheckpoint):
            checkpoints.append(item)
        elif isinstance(item, OwnerHeartbeat):
            heartbeats.add(item.owner)
        else:
            decoded.append((payload, item))
    stored = _store_decoded(decoded)
    finished = {event.request_id for _, event in decoded if event.checkpointed}
    note_stream_progress(checkpoints, heartbeats, finished, timezone.now())
    return stored


def _store_decoded(decoded: list[tuple[bytes, UsageEvent]]) -> list[StoredRow]:
    try:
        return store_events([event for _, event in decoded])
    except (DataError, IntegrityError):
        stored: list[StoredRow] = []
        for payload, event in decoded:
            try:
                stored += store_events([event])
            except (DataError, IntegrityError) as exc:
                reject_payload(payload, f"refused by the database: {exc}")
        return stored


def interrupted_event(checkpoint: OpenStream) -> UsageEvent:
    """The record of a stream whose process died: its last checkpoint, marked as cut short."""
    event = decode_event(checkpoint.event)
    event.error_type = STREAM_INTERRUPTED_BY_CRASH
    event.extra = {**event.extra, "interrupted": STREAM_INTERRUPTED_BY_CRASH, "checkpoint": checkpoint.sequence}
    return event


def record_orphaned_streams(now: dt.datetime | None = None) -> list[StoredRow]:
    """Record every checkpointed stream whose process has gone quiet for USAGE_ORPHAN_STREAM_SECONDS
    as interrupted, with the usage of its last checkpoint. A final record already stored keeps its
    place (the insert skips it), and one that arrives later replaces the interrupted record."""
    now = now or timezone.now()
    quiet_for = dt.timedelta(seconds=settings.USAGE_ORPHAN_STREAM_SECONDS)
    stored: list[StoredRow] = []
    while orphans := orphaned_streams(now, quiet_for):
        request_ids = [orphan.request_id for orphan in orphans]
        with transaction.atomic():
            finished = set(UsageRecord.objects.filter(request_id__in=request_ids).values_list("request_id", flat=True))
            events = []
            for orphan in orphans:
                if orphan.request_id in finished:
                    continue
                try:
                    events.append(interrupted_event(orphan))
                except (ValueError, TypeError, KeyError) as exc:
                    reject_payload(orphan.event.encode(), f"undecodable checkpoint: {exc}")
            rows = store_events(events, interrupted=True)
            forget_streams(request_ids)
        stored += rows
        if rows:
            log_event(
                logger,
                "Interrupted streams recorded",
                logging.WARNING,
                streams=len(rows),
                requestIds=[row["request_id"] for row in rows][:20],
            )
    return stored
