"""Usage is written off the request path and never lost: batched, idempotent by request id, kept
queued through crashes and outages (spool on the embedded default, Redis when configured)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection

from proxyproject.lib.lifespan import lifespan_app
from tests import servers
from tests.support import apoll_until
from tests.usage.cast import NOV_25, usage_event
from usage import queue, spool
from usage.models import UsageRecord
from usage.writer import drain_usage_queue, flush_usage, stop_usage_writer, submit_usage

# `redis`: the Redis queue when REDIS_URL is set, so CI runs these again on a Redis Cluster.
pytestmark = [pytest.mark.usefixtures("live_prices"), pytest.mark.redis]


def stored_ids() -> list[str]:
    return sorted(UsageRecord.objects.values_list("request_id", flat=True))


async def wait_for_records(count: int, timeout: float = 10.0) -> list[str]:
    async def stored() -> list[str]:
        ids = await sync_to_async(stored_ids)()
        return ids if len(ids) >= count else []

    return await apoll_until(stored, timeout, f"{count} records")


@pytest.fixture
async def loop_writer():
    yield
    await stop_usage_writer()


def usage_process(command: str, count: int, prefix: str, settings, **env: str) -> subprocess.Popen:
    environment = servers.server_environment(USAGE_SPOOL_DIR=str(settings.USAGE_SPOOL_DIR), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.usage.usage_process", command, str(count), prefix],
        cwd=servers.BASE_DIR,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_submitted_usage_is_written_with_every_field_and_its_cost(settings, loop_writer):
    settings.USAGE_FLUSH_INTERVAL = 60
    event = usage_event(
        request_id="req_gw_fields",
        upstream_request_id="req_011upstream",
        device_id="laptop-7",
        session_id="sess-1",
        model="claude-opus-4-6",
        endpoint="/v1/messages",
        method="POST",
        status=200,
        streamed=True,
        input_tokens=1000,
        output_tokens=1000,
        cache_write_5m_tokens=100,
        cache_write_1h_tokens=200,
        cache_read_tokens=3000,
        web_search_requests=2,
        web_fetch_requests=1,
        service_tier="standard",
        speed="standard",
        inference_geo="us",
        latency_ms=812.5,
        ttfb_ms=95.25,
        upstream_key_name="primary",
        extra={"x_app": "cli"},
    )
    submit_usage(event)
    assert await sync_to_async(stored_ids)() == []
    assert await flush_usage() == 1
    record = await UsageRecord.objects.aget(request_id="req_gw_fields")
    # (1000*5 + 1000*25 + 100*6.25 + 200*10 + 3000*0.50) * 1.1 = 37,537.5 per million
    assert record.cost == Decimal("0.0375375") and record.priced is True
    r = record
    assert (r.upstream_request_id, r.device_ref, r.session_id) == ("req_011upstream", "laptop-7", "sess-1")
    assert r.model == "claude-opus-4-6"
    assert (r.input_tokens, r.output_tokens, r.cache_write_5m_tokens, r.cache_write_1h_tokens, r.cache_read_tokens) == (
        1000,
        1000,
        100,
        200,
        3000,
    )
    assert (r.web_search_requests, r.web_fetch_requests, r.inference_geo, r.upstream_key_name) == (2, 1, "us", "primary")
    assert (r.streamed, r.status, r.is_error, r.latency_ms, r.ttfb_ms) == (True, 200, False, 812.5, 95.25)
    assert record.occurred_at == NOV_25 and record.extra == {"x_app": "cli"}


async def test_unknown_model_is_recorded_with_its_tokens_and_flagged(loop_writer):
    submit_usage(usage_event(request_id="req_unknown", model="gpt-9", input_tokens=1234, output_tokens=56))
    await flush_usage()
    record = await UsageRecord.objects.aget(request_id="req_unknown")
    assert (record.cost, record.priced, record.input_tokens, record.output_tokens) == (None, False, 1234, 56)


async def test_every_outcome_is_recorded(loop_writer):
    outcomes = {
        "req_ok": {"status": 200},
        "req_upstream_529": {"status": 529, "error_type": "overloaded_error"},
        "req_refused": {"status": 429, "error_type": "spend_cap_reached", "model": "claude-opus-4-6"},
        "req_disconnect": {"status": 200, "client_disconnected": True, "streamed": True, "output_tokens": 40},
        "req_midstream": {"status": 200, "error_type": "overloaded_error", "streamed": True, "output_tokens": 12},
    }
    for request_id, fields in outcomes.items():
        submit_usage(usage_event(request_id=request_id, input_tokens=10, **fields))
    assert await flush_usage() == 5
    rows = {r.request_id: r async for r in UsageRecord.objects.all()}
    assert {rid: r.is_error for rid, r in rows.items()} == {
        "req_ok": False,
        "req_upstream_529": True,
        "req_refused": True,
        "req_disconnect": False,
        "req_midstream": True,
    }
    assert rows["req_disconnect"].client_disconnected and rows["req_disconnect"].output_tokens == 40
    assert rows["req_midstream"].cost == Decimal("0.00021")  # 10*3 + 12*15


def test_submit_never_touches_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        for index in range(20):
            submit_usage(usage_event(request_id=f"req_nodb_{index}"))
    assert stored_ids() == []
    assert drain_usage_queue() == 20
    assert len(stored_ids()) == 20


def test_a_request_id_is_stored_once():
    event = usage_event(request_id="req_twice", input_tokens=5)
    submit_usage(event)
    submit_usage(event)
    drain_usage_queue()
    submit_usage(event)
    drain_usage_queue()
    assert stored_ids() == ["req_twice"]


async def test_a_full_batch_is_written_without_waiting_for_the_interval(settings, loop_writer):
    settings.USAGE_FLUSH_INTERVAL = 3600
    settings.USAGE_BATCH_SIZE = 3
    for index in range(3):
        submit_usage(usage_event(request_id=f"req_batch_{index}"))
    assert await wait_for_records(3) == ["req_batch_0", "req_batch_1", "req_batch_2"]


async def test_a_partial_batch_is_written_on_the_interval(settings, loop_writer):
    settings.USAGE_FLUSH_INTERVAL = 0.05
    submit_usage(usage_event(request_id="req_interval"))
    assert await wait_for_records(1) == ["req_interval"]


async def test_records_submitted_within_the_push_delay_share_one_rpush(redis_required, settings, monkeypatch, loop_writer):
    """At one connection every request used to push its own record: one RPUSH, one write that wakes
    Redis and one reply to read per request."""
    from usage import writer

    settings.USAGE_FLUSH_INTERVAL = 3600
    settings.USAGE_PUSH_DELAY_MS = 1000
    pushed: list[int] = []
    push = writer._rpush

    async def counted(key: str, payloads: list[bytes]) -> None:
        pushed.append(len(payloads))
        await push(key, payloads)

    monkeypatch.setattr(writer, "_rpush", counted)
    for index in range(4):
        submit_usage(usage_event(request_id=f"req_coalesced_{index}"))
        await asyncio.sleep(0.01)
    assert pushed == []
    await apoll_until(lambda: pushed, 5.0, "the delayed push")
    assert pushed == [4]


async def test_a_flush_sends_the_records_still_waiting_for_the_push_delay(redis_required, settings, loop_writer):
    settings.USAGE_FLUSH_INTERVAL = 3600
    settings.USAGE_PUSH_DELAY_MS = 600_000
    for index in range(3):
        submit_usage(usage_event(request_id=f"req_delayed_{index}"))
    assert await asyncio.wait_for(flush_usage(), 10) == 3
    assert await sync_to_async(stored_ids)() == [f"req_delayed_{index}" for index in range(3)]


def test_a_crash_between_commit_and_acknowledgement_replays_without_duplicates(settings, monkeypatch):
    settings.USAGE_BATCH_SIZE = 3
    for index in range(7):
        submit_usage(usage_event(request_id=f"req_ack_{index}"))

    def crash(*args: object) -> None:
        raise RuntimeError("writer died before acknowledging")

    monkeypatch.setattr(spool.ClaimedSegment, "acknowledge", crash)
    monkeypatch.setattr(queue, "acknowledge_batch", crash)
    with pytest.raises(RuntimeError):
        drain_usage_queue()
    committed = stored_ids()
    assert len(committed) == (3 if settings.REDIS_URL else 7)
    monkeypatch.undo()
    settings.USAGE_BATCH_SIZE = 3
    drain_usage_queue()
    assert stored_ids() == [f"req_ack_{index}" for index in range(7)]
    assert drain_usage_queue() == 0


def test_a_writer_killed_mid_batch_loses_nothing_and_doubles_nothing(settings):
    process = usage_process("drain-and-hang", 12, "req_kill", settings, USAGE_BATCH_SIZE="5", USAGE_WRITER_LEASE_SECONDS="0.5")
    try:
        line = process.stdout.readline()
        assert line.split() == ["committed", "5"], process.stderr.read() if not line else line
        assert len(stored_ids()) == 5
        process.kill()
        process.wait(timeout=10)
    finally:
        process.kill()
    deadline = time.monotonic() + 10
    while len(stored_ids()) < 12 and time.monotonic() < deadline:
        # the dead writer's claim returns to the queue once its lease (0.5 s here) runs out
        drain_usage_queue()
        time.sleep(0.05)
    assert stored_ids() == [f"req_kill-{index:04d}" for index in range(12)]
    assert drain_usage_queue() == 0


def test_records_wait_while_the_database_refuses_connections(monkeypatch):
    for index in range(4):
        submit_usage(usage_event(request_id=f"req_down_{index}"))

    def database_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("could not connect to server: Connection refused")

    monkeypatch.setattr("usage.records.insert_ignoring_stored", database_down)
    with pytest.raises(OperationalError):
        drain_usage_queue()
    with pytest.raises(OperationalError):
        drain_usage_queue()
    monkeypatch.undo()
    assert stored_ids() == []
    assert drain_usage_queue() == 4
    assert len(stored_ids()) == 4


@pytest.mark.skipif(connection.vendor != "postgresql", reason="only a database server can be unreachable")
def test_records_queued_by_a_process_that_cannot_reach_the_database_are_written_later(settings):
    unreachable = servers.test_database_url().replace(":5432/", ":1/")
    process = usage_process("submit-and-drain", 6, "req_unreachable", settings, DATABASE_URL=unreachable)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, out + err
    assert out.strip() == "drain failed: OperationalError"
    assert stored_ids() == []
    assert drain_usage_queue() == 6
    assert stored_ids() == [f"req_unreachable-{index:04d}" for index in range(6)]


def test_records_are_spooled_when_redis_is_unreachable(settings):
    process = usage_process("submit", 3, "req_noredis", settings, REDIS_URL="redis://127.0.0.1:1/0")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, out + err
    assert spool.spooled_segment_count() == 1
    assert drain_usage_queue() == 3
    assert stored_ids() == [f"req_noredis-{index:04d}" for index in range(3)]
    assert spool.spooled_segment_count() == 0


async def test_shutdown_flushes_what_the_worker_holds(settings):
    settings.USAGE_FLUSH_INTERVAL = 3600
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    server = asyncio.create_task(lifespan_app({"type": "lifespan"}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    while not sent:
        await asyncio.sleep(0.01)
    for index in range(4):
        submit_usage(usage_event(request_id=f"req_shutdown_{index}"))
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(server, 30)
    assert [message["type"] for message in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert await sync_to_async(stored_ids)() == [f"req_shutdown_{index}" for index in range(4)]


async def test_records_go_to_the_spool_when_the_redis_push_fails(settings):
    original_url = settings.REDIS_URL
    settings.USAGE_FLUSH_INTERVAL = 3600
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # this test's event loop gets a client for a closed port
    for index in range(3):
        submit_usage(usage_event(request_id=f"req_push_failed_{index}"))
    deadline = time.monotonic() + 10
    while spool.spooled_segment_count() == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    settings.REDIS_URL = original_url
    assert spool.spooled_segment_count() == 1
    try:
        assert await flush_usage() == 3
    finally:
        await stop_usage_writer()
    assert await sync_to_async(stored_ids)() == [f"req_push_failed_{index}" for index in range(3)]


def test_records_queued_under_the_names_from_before_the_hash_tags_are_written_after_an_upgrade(redis_required, settings):
    """A rolling upgrade: gateways of the previous release still push to `<prefix>:usage:queue`, and a
    writer of that release died holding a batch; the new writer stores both, once."""
    from proxyproject.lib.redis import cluster_configured, get_sync_redis, redis_key

    if cluster_configured():
        pytest.skip("a Redis Cluster never held the untagged names")
    client = get_sync_redis()
    client.rpush(redis_key("usage", "queue"), *(queue.encode_event(usage_event(request_id=f"req_old_{i}")) for i in range(3)))
    client.rpush(redis_key("usage", "processing", "old-writer"), queue.encode_event(usage_event(request_id="req_old_held")))
    client.sadd(redis_key("usage", "writers"), "old-writer")
    assert drain_usage_queue() == 4
    assert stored_ids() == ["req_old_0", "req_old_1", "req_old_2", "req_old_held"]
    assert client.exists(redis_key("usage", "queue"), redis_key("usage", "processing", "old-writer")) == 0
    assert client.smembers(redis_key("usage", "writers")) == set()
