"""Batch results: each succeeded result's usage recorded once as the client fetches the results,
the body relayed untouched."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from decimal import Decimal

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async

from gateway.batch_usage import BatchResultsReader, batch_result_request_id, batch_results_reader
from gateway.body import BATCHES_PATH
from gateway.models import OwnedResource
from tests.gateway.conftest import bearer, call_gateway
from tests.support import MASTER_KEY, MESSAGE_BODY
from tests.usage.cast import ensure_seeded_prices
from usage.events import UsageEvent
from usage.models import UsageRecord
from usage.pricing import invalidate_price_table, price_usage
from usage.writer import flush_usage, stop_usage_writer

BATCH_ID = "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"
RESULTS_PATH = f"{BATCHES_PATH}/{BATCH_ID}/results"
SONNET = "claude-sonnet-4-5-20250929"
FETCHED_AT = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)


def succeeded(custom_id: str, message_id: str, **usage: object) -> bytes:
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": SONNET,
        "content": [{"type": "text", "text": "Hello\nthere"}],
        "stop_reason": "end_turn",
        "usage": usage,
    }
    return orjson.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}) + b"\n"


FIRST = succeeded("first", "msg_01A", input_tokens=1000, output_tokens=200, service_tier="batch")
SECOND = succeeded(
    "second",
    "msg_01B",
    input_tokens=40,
    output_tokens=7,
    cache_read_input_tokens=500,
    cache_creation={"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 10},
)
ERRORED = (
    orjson.dumps(
        {
            "custom_id": "bad",
            "result": {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}},
            },
        }
    )
    + b"\n"
)
CANCELED = b'{"custom_id":"gone","result":{"type":"canceled"}}\n'
EXPIRED = b'{"custom_id":"late","result":{"type":"expired"}}\n'


def fetch_event() -> UsageEvent:
    return UsageEvent(
        request_id="req_gw_fetch",
        occurred_at=FETCHED_AT,
        endpoint=RESULTS_PATH,
        method="GET",
        device_id="dev-ada",
        device_pk=7,
        org_id=3,
        session_id="sess-9",
    )


@pytest.fixture
def submitted(monkeypatch) -> list[UsageEvent]:
    """The usage events the reader hands to `usage`, in order."""
    events: list[UsageEvent] = []
    monkeypatch.setattr("gateway.batch_usage.submit_usage", events.append)
    return events


def read(chunks: list[bytes], *, max_line_bytes: int = 8 * 1024 * 1024) -> BatchResultsReader:
    reader = BatchResultsReader(batch_id=BATCH_ID, request_event=fetch_event(), max_line_bytes=max_line_bytes)
    for chunk in chunks:
        reader.feed(chunk)
    reader.finish()
    return reader


def test_a_succeeded_result_becomes_a_batch_priced_event_of_the_fetching_device(submitted):
    read([FIRST])
    [event] = submitted
    assert event == UsageEvent(
        request_id=f"batch_{BATCH_ID}_first",
        occurred_at=FETCHED_AT,
        endpoint=RESULTS_PATH,
        method="GET",
        device_id="dev-ada",
        device_pk=7,
        org_id=3,
        session_id="sess-9",
        model=SONNET,
        upstream_request_id="msg_01A",
        status=200,
        streamed=False,
        input_tokens=1000,
        output_tokens=200,
        service_tier="batch",
        extra={"batch_id": BATCH_ID, "custom_id": "first", "message_id": "msg_01A"},
    )


def test_lines_split_across_chunks_are_each_read_once(submitted):
    body = FIRST + SECOND
    read([body[index : index + 7] for index in range(0, len(body), 7)])
    assert [(e.request_id, e.input_tokens, e.output_tokens) for e in submitted] == [
        (f"batch_{BATCH_ID}_first", 1000, 200),
        (f"batch_{BATCH_ID}_second", 40, 7),
    ]
    second = submitted[1]
    assert (second.cache_read_tokens, second.cache_write_5m_tokens, second.cache_write_1h_tokens) == (500, 30, 10)


def test_several_lines_in_one_chunk_are_all_read(submitted):
    split = len(SECOND) // 2
    read([FIRST + SECOND[:split], SECOND[split:] + FIRST.replace(b'"first"', b'"third"')])
    assert [event.extra["custom_id"] for event in submitted] == ["first", "second", "third"]


def test_errored_canceled_and_expired_results_record_nothing(submitted):
    reader = read([ERRORED + CANCELED + FIRST + EXPIRED])
    assert [event.extra["custom_id"] for event in submitted] == ["first"]
    assert reader.recorded == 1


def test_a_line_that_is_not_json_is_skipped(submitted, caplog):
    with caplog.at_level(logging.WARNING, logger="gateway.batch_usage"):
        read([FIRST[:40] + b"\n", b"{not json}\r\n\r\n\n", SECOND])
    assert [event.extra["custom_id"] for event in submitted] == ["second"]
    assert [record.getMessage() for record in caplog.records] == ["Batch result line is not JSON"] * 2


def test_a_line_over_the_cap_is_dropped_with_a_warning_and_the_next_line_read(submitted, caplog):
    oversized = succeeded("huge", "msg_01H", input_tokens=5, output_tokens=5).replace(b"Hello", b"x" * 600)
    with caplog.at_level(logging.WARNING, logger="gateway.batch_usage"):
        read([FIRST, oversized[:300], oversized[300:] + SECOND], max_line_bytes=max(len(FIRST), len(SECOND)))
    assert [event.extra["custom_id"] for event in submitted] == ["first", "second"]
    assert [record.getMessage() for record in caplog.records] == ["Batch result line over the size cap dropped"]


def test_a_last_line_without_its_newline_is_read_when_the_body_ends(submitted):
    reader = BatchResultsReader(batch_id=BATCH_ID, request_event=fetch_event())
    reader.feed(FIRST + SECOND.rstrip(b"\n"))
    assert len(submitted) == 1
    reader.finish()
    assert [event.extra["custom_id"] for event in submitted] == ["first", "second"]


def test_a_request_id_too_long_to_store_is_a_digest_of_the_pair():
    custom_id = "c" * 64
    long_batch = "msgbatch_" + "b" * 60
    assert batch_result_request_id(BATCH_ID, "first") == f"batch_{BATCH_ID}_first"
    assert batch_result_request_id(long_batch, custom_id) == hashlib.sha256(f"{long_batch}\0{custom_id}".encode()).hexdigest()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", RESULTS_PATH, 200),
        ("GET", RESULTS_PATH, 404),
        ("GET", f"{BATCHES_PATH}/{BATCH_ID}", 200),
        ("GET", f"{BATCHES_PATH}/{BATCH_ID}/results/extra", 200),
        ("GET", "/v1/files/file_1/content", 200),
    ],
)
def test_only_a_successful_get_of_a_batch_results_is_read(method, path, status):
    assert batch_results_reader(method=method, path=path, status=status, request_event=fetch_event()) is None
    assert batch_results_reader(method="GET", path=RESULTS_PATH, status=200, request_event=fetch_event()) is not None


@pytest.fixture
def seeded_prices(transactional_db, settings, tmp_path):
    settings.USAGE_SPOOL_DIR = tmp_path / "spool"
    ensure_seeded_prices()
    yield
    invalidate_price_table()


async def upstream_results(base_url: str, path: str) -> bytes:
    async with httpx.AsyncClient() as client:
        response = await client.get(base_url + path, headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"})
    assert response.status_code == 200
    return response.content


def stored_records(path: str) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(endpoint=path).order_by("request_id"))


def standard_cost(record: UsageRecord) -> Decimal | None:
    return price_usage(
        UsageEvent(
            request_id="standard",
            occurred_at=record.occurred_at,
            endpoint="/v1/messages",
            method="POST",
            model=record.model,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
        )
    )


async def test_results_fetched_twice_record_each_succeeded_result_once_at_the_batch_price(fake_upstream, token, seeded_prices):
    usage_header = orjson.dumps({"input_tokens": 1000, "output_tokens": 200}).decode()
    requests = [{"custom_id": custom_id, "params": orjson.loads(MESSAGE_BODY)} for custom_id in ("first", "second")]
    created = await call_gateway(
        "POST", BATCHES_PATH, headers=bearer(token, **{"x-fake-usage": usage_header}), body=orjson.dumps({"requests": requests})
    )
    batch_id = orjson.loads(created.body)["id"]
    ended = await call_gateway("GET", f"{BATCHES_PATH}/{batch_id}", headers=bearer(token))
    assert orjson.loads(ended.body)["processing_status"] == "ended"
    path = f"{BATCHES_PATH}/{batch_id}/results"

    first = await call_gateway("GET", path, headers=bearer(token))
    second = await call_gateway("GET", path, headers=bearer(token))
    try:
        await flush_usage()
    finally:
        await stop_usage_writer()

    upstream_body = await upstream_results(fake_upstream.base_url, path)
    assert (first.status, second.status) == (200, 200)
    assert first.body == second.body == upstream_body
    message_ids = [orjson.loads(line)["result"]["message"]["id"] for line in upstream_body.splitlines()]
    records = await sync_to_async(stored_records)(path)
    fetches = [record for record in records if record.request_id.startswith("req_gw_")]
    results = [record for record in records if not record.request_id.startswith("req_gw_")]
    fetch_rows = [(record.status, record.input_tokens, record.output_tokens, record.cost) for record in fetches]
    assert fetch_rows == [(200, 0, 0, Decimal(0))] * 2
    assert [
        (
            record.request_id,
            record.upstream_request_id,
            record.method,
            record.status,
            record.streamed,
            record.service_tier,
            record.input_tokens,
            record.output_tokens,
        )
        for record in results
    ] == [
        (f"batch_{batch_id}_first", message_ids[0], "GET", 200, False, "batch", 1000, 200),
        (f"batch_{batch_id}_second", message_ids[1], "GET", 200, False, "batch", 1000, 200),
    ]
    assert {(record.device_ref, record.device_id, record.organization_id) for record in results} == {
        (fetches[0].device_ref, fetches[0].device_id, fetches[0].organization_id)
    }
    # Sonnet 4.5 at $3/$15 per million: 1000 input + 200 output = $0.006 standard, half in a batch.
    standard = await sync_to_async(standard_cost)(results[0])
    assert standard == Decimal("0.006")
    assert [record.cost for record in results] == [standard / 2] * 2


async def batch_results_recorded(
    token: str, model: str, usage: dict, *, created_at: dt.datetime | None = None
) -> list[UsageRecord]:
    """Create a batch of two requests through the gateway with the given usage, optionally move its
    recorded creation time, fetch its results and return their usage records."""
    params = {**orjson.loads(MESSAGE_BODY), "model": model}
    requests = [{"custom_id": custom_id, "params": params} for custom_id in ("first", "second")]
    created = await call_gateway(
        "POST",
        BATCHES_PATH,
        headers=bearer(token, **{"x-fake-usage": orjson.dumps(usage).decode()}),
        body=orjson.dumps({"requests": requests}),
    )
    batch_id = orjson.loads(created.body)["id"]
    if created_at is not None:
        await sync_to_async(OwnedResource.objects.filter(resource_id=batch_id).update)(created_at=created_at)
    path = f"{BATCHES_PATH}/{batch_id}/results"
    assert (await call_gateway("GET", path, headers=bearer(token))).status == 200
    try:
        await flush_usage()
    finally:
        await stop_usage_writer()
    return [record for record in await sync_to_async(stored_records)(path) if record.request_id.startswith("batch_")]


async def test_batch_and_cache_multipliers_stack_on_a_cached_batch(fake_upstream, token, seeded_prices):
    # Opus 4.6 per result: 1000*5 + 500*25 + 2000*6.25 + 3000*10 + 4000*0.50 = 62,000 per million, halved: 0.031
    usage = {
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_read_input_tokens": 4000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 3000},
    }
    results = await batch_results_recorded(token, "claude-opus-4-6", usage)
    assert [(record.cache_write_5m_tokens, record.cache_write_1h_tokens, record.cost) for record in results] == [
        (2000, 3000, Decimal("0.031"))
    ] * 2
    assert sum(record.cost for record in results) == Decimal("0.062")
    assert results[0].pricing["batch"] == "0.5"


async def test_a_batch_is_priced_at_its_creation_not_when_its_results_are_fetched(fake_upstream, token, seeded_prices):
    # Sonnet 5.5 cache reads: 0.20 until 2026-10-07, 0.10 after; created the day before, fetched now
    created_at = dt.datetime(2026, 10, 6, 12, 0, tzinfo=dt.UTC)
    results = await batch_results_recorded(
        token,
        "claude-sonnet-5-5",
        {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 1_000_000},
        created_at=created_at,
    )
    assert [record.cost for record in results] == [Decimal("0.1")] * 2  # 1M * 0.20 * 0.5
    assert results[0].occurred_at > dt.datetime(2026, 10, 7, tzinfo=dt.UTC)
    assert results[0].pricing["at"] == created_at.isoformat()


async def test_a_created_batch_is_recorded_at_the_upstream_creation_time(fake_upstream, token, seeded_prices):
    created = await call_gateway(
        "POST",
        BATCHES_PATH,
        headers=bearer(token),
        body=orjson.dumps({"requests": [{"custom_id": "one", "params": orjson.loads(MESSAGE_BODY)}]}),
    )
    batch = orjson.loads(created.body)
    row = await sync_to_async(OwnedResource.objects.get)(resource_id=batch["id"])
    assert row.created_at == dt.datetime.fromisoformat(batch["created_at"].replace("Z", "+00:00"))
