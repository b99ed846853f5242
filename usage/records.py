"""Turning queued usage events into UsageRecord rows: priced, bounded to the columns, inserted
idempotently by request id.

A record that the database still refuses on its own (it cannot be made to fit) is set aside in a
rejects file next to the spool instead of blocking every record queued behind it.
"""
from __future__ import annotations

import logging
from decimal import Decimal

import orjson
from django.db import DataError, IntegrityError, connection, transaction

from proxyproject.logging import log_event
from tokens.models import Device, Organization
from usage import spool
from usage.events import UsageEvent
from usage.models import UsageRecord
from usage.pricing import as_utc, price_usage
from usage.queue import decode_event

logger = logging.getLogger("usage.records")
REJECTS_FILE = "rejected-records.log"
_MAX_SMALL = 32767
_MAX_INT = 2_147_483_647


def _text(value: object, field_name: str) -> str:
    limit = UsageRecord._meta.get_field(field_name).max_length
    return ("" if value is None else str(value))[:limit]


def _count(value: object, limit: int = _MAX_INT) -> int:
    try:
        return min(max(int(value or 0), 0), limit)
    except (TypeError, ValueError):
        return 0


def is_error_event(event: UsageEvent) -> bool:
    return event.status >= 400 or bool(event.error_type)


def record_from_event(event: UsageEvent, cost: Decimal | None, known_devices: set[int], known_orgs: set[int]) -> UsageRecord:
    return UsageRecord(
        request_id=_text(event.request_id, "request_id"),
        upstream_request_id=_text(event.upstream_request_id, "upstream_request_id"),
        occurred_at=as_utc(event.occurred_at),
        endpoint=_text(event.endpoint, "endpoint"),
        method=_text(event.method, "method"),
        device_id=event.device_pk if event.device_pk in known_devices else None,
        organization_id=event.org_id if event.org_id in known_orgs else None,
        device_ref=_text(event.device_id, "device_ref"),
        device_pk=event.device_pk,
        org_pk=event.org_id,
        session_id=_text(event.session_id, "session_id"),
        model=_text(event.model, "model"),
        status=_count(event.status, _MAX_SMALL),
        error_type=_text(event.error_type, "error_type"),
        is_error=is_error_event(event),
        streamed=bool(event.streamed),
        client_disconnected=bool(event.client_disconnected),
        input_tokens=_count(event.input_tokens),
        output_tokens=_count(event.output_tokens),
        cache_write_5m_tokens=_count(event.cache_write_5m_tokens),
        cache_write_1h_tokens=_count(event.cache_write_1h_tokens),
        cache_read_tokens=_count(event.cache_read_tokens),
        web_search_requests=_count(event.web_search_requests),
        web_fetch_requests=_count(event.web_fetch_requests),
        service_tier=_text(event.service_tier, "service_tier"),
        speed=_text(event.speed, "speed"),
        inference_geo=_text(event.inference_geo, "inference_geo"),
        latency_ms=max(float(event.latency_ms or 0), 0.0),
        ttfb_ms=None if event.ttfb_ms is None else max(float(event.ttfb_ms), 0.0),
        upstream_key_name=_text(event.upstream_key_name, "upstream_key_name"),
        cost=cost,
        priced=cost is not None,
        extra=event.extra or {},
    )


def store_events(events: list[UsageEvent]) -> list[UsageRecord]:
    """Insert in one transaction; request ids already stored (a replayed batch) are skipped."""
    unique = list({event.request_id: event for event in events}.values())
    if not unique:
        return []
    costs = [price_usage(event) for event in unique]
    with transaction.atomic():
        device_pks = {event.device_pk for event in unique if event.device_pk is not None}
        org_pks = {event.org_id for event in unique if event.org_id is not None}
        known_devices = set(Device.objects.filter(pk__in=device_pks).values_list("pk", flat=True)) if device_pks else set()
        known_orgs = set(Organization.objects.filter(pk__in=org_pks).values_list("pk", flat=True)) if org_pks else set()
        records = [record_from_event(event, cost, known_devices, known_orgs) for event, cost in zip(unique, costs)]
        insert_ignoring_stored(records)
    return records


def insert_ignoring_stored(records: list[UsageRecord]) -> None:
    """One INSERT ... ON CONFLICT (request_id) DO NOTHING, executed for the whole batch.

    bulk_create compiles every field of every row through the ORM's SQL compiler; at a few hundred
    records a second that alone took a seventh of a gateway worker's CPU (py-spy). Here the
    statement is built once and each value goes through its field's own database adaptation, so
    the rows are exactly what bulk_create would have written.
    """
    fields = [field for field in UsageRecord._meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(UsageRecord._meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT ({quote('request_id')}) DO NOTHING"
    )
    rows = [[field.get_db_prep_save(field.pre_save(record, True), connection) for field in fields] for record in records]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def reject_payload(payload: bytes, reason: str) -> None:
    directory = spool.spool_directory()
    directory.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps({"reason": reason, "payload": payload.decode(errors="replace")}) + b"\n"
    with open(directory / REJECTS_FILE, "ab") as rejects:
        rejects.write(line)
    log_event(logger, "Usage record rejected", logging.ERROR, reason=reason, file=str(directory / REJECTS_FILE))


def store_payloads(payloads: list[bytes]) -> list[UsageRecord]:
    """Decode and store a batch; on a row the database refuses, store one by one and set aside the bad ones.

    Connection errors (OperationalError) propagate: the batch stays queued until the database is back.
    """
    decoded: list[tuple[bytes, UsageEvent]] = []
    for payload in payloads:
        try:
            decoded.append((payload, decode_event(payload)))
        except (ValueError, TypeError, KeyError) as exc:
            reject_payload(payload, f"undecodable: {exc}")
    try:
        return store_events([event for _, event in decoded])
    except (DataError, IntegrityError):
        stored: list[UsageRecord] = []
        for payload, event in decoded:
            try:
                stored += store_events([event])
            except (DataError, IntegrityError) as exc:
                reject_payload(payload, f"refused by the database: {exc}")
        return stored
