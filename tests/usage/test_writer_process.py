"""USAGE_WRITER=process: gateway workers only queue usage records and hand them over; the one
`run_usage_writer` process writes every worker's records and, on SIGTERM, what is left."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx
import pytest
from asgiref.sync import sync_to_async

from proxyproject.launcher import platform_children
from tests import servers
from tests.usage.cast import usage_event
from tests.usage.test_writer import stored_ids, wait_for_records
from usage import queue, spool
from usage.writer import stop_usage_writer, submit_usage

# `redis`: the Redis queue when REDIS_URL is set, so CI runs these again on a Redis Cluster.
pytestmark = [pytest.mark.usefixtures("live_prices"), pytest.mark.redis]


def queued_records(settings) -> int:
    """Records waiting for a writer: in sealed spool segments, or in the Redis queue."""
    spooled = sum(len(segment.lines) for segment in _released(spool.claim_segments()))
    if not settings.REDIS_URL:
        return spooled
    from proxyproject.lib.redis import get_sync_redis

    return spooled + queue.queued_count(get_sync_redis())


def _released(segments):
    for segment in segments:
        segment.release()
        yield segment


def writer_process(settings, interval: str) -> subprocess.Popen:
    environment = servers.server_environment(
        USAGE_SPOOL_DIR=str(settings.USAGE_SPOOL_DIR), USAGE_FLUSH_INTERVAL=interval, USAGE_WRITER="process", LOG_LEVEL="info"
    )
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_usage_writer"],
        cwd=servers.BASE_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"the writer never logged {text!r}")


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out
    return out


async def test_a_worker_hands_its_records_over_without_writing_them(settings):
    settings.USAGE_WRITER = "process"
    settings.USAGE_FLUSH_INTERVAL = 0.05
    settings.USAGE_BATCH_SIZE = 2
    try:
        for index in range(5):
            submit_usage(usage_event(request_id=f"req_handed_{index}"))
        deadline = time.monotonic() + 10
        while await sync_to_async(queued_records)(settings) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await sync_to_async(queued_records)(settings) == 5  # sealed or pushed: any writer may take them
        await asyncio.sleep(0.2)  # a few intervals and more than two batches: still nothing written here
        assert await sync_to_async(stored_ids)() == []
    finally:
        await stop_usage_writer()


@pytest.mark.django_db(transaction=True)
async def test_the_writer_process_writes_what_workers_queue_while_it_runs(settings):
    settings.USAGE_WRITER = "process"
    settings.USAGE_FLUSH_INTERVAL = 3600
    process = writer_process(settings, interval="0.05")
    try:
        for index in range(3):
            submit_usage(usage_event(request_id=f"req_writer_{index}"))
        await stop_usage_writer()  # the worker's shutdown hands its records over at once
        assert await wait_for_records(3, timeout=30) == [f"req_writer_{index}" for index in range(3)]
    finally:
        out = stop(process)
    assert "Usage writer stopped" in out


@pytest.mark.django_db(transaction=True)
async def test_on_sigterm_the_writer_process_writes_what_is_left(settings):
    settings.USAGE_WRITER = "process"
    settings.USAGE_FLUSH_INTERVAL = 3600
    process = writer_process(settings, interval="3600")  # only its final flush can write anything
    try:
        wait_for_line(process, "Usage writer started")
        for index in range(2):
            submit_usage(usage_event(request_id=f"req_final_{index}"))
        await stop_usage_writer()
        assert await sync_to_async(stored_ids)() == []
    finally:
        stop(process)
    assert await sync_to_async(stored_ids)() == ["req_final_0", "req_final_1"]


def test_make_run_starts_the_writer_process_only_when_asked(settings):
    settings.USAGE_WRITER = "thread"
    assert "usage-writer" not in [child.name for child in platform_children("127.0.0.1", None)]
    settings.USAGE_WRITER = "process"
    writer = {child.name: child.argv for child in platform_children("127.0.0.1", None)}["usage-writer"]
    assert writer[-2:] == ["manage.py", "run_usage_writer"]


def test_a_live_gateway_only_queues_and_the_writer_process_records_every_request(transactional_db, settings):
    """End to end: a real gateway server that only queues, and the writer process that writes."""
    from fake_anthropic import FakeAnthropic
    from tests.support import MASTER_KEY, MESSAGE_BODY, enroll

    env = {"USAGE_WRITER": "process", "USAGE_SPOOL_DIR": str(settings.USAGE_SPOOL_DIR), "USAGE_FLUSH_INTERVAL": "0.1"}
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        gateway = servers.gateway_process(ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY=MASTER_KEY, **env).start()
        writer = None
        try:
            token = enroll(gateway)
            answers = [
                httpx.post(
                    gateway.url + "/v1/messages",
                    content=MESSAGE_BODY,
                    timeout=10,
                    headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
                )
                for _ in range(5)
            ]
            assert [answer.status_code for answer in answers] == [200] * 5
            wanted = sorted(answer.headers["x-gateway-request-id"] for answer in answers)
            time.sleep(1.0)  # ten hand-over intervals: the server itself writes nothing
            assert [rid for rid in stored_ids() if rid in wanted] == []
            writer = writer_process(settings, interval="0.1")
            deadline = time.monotonic() + 30
            while [rid for rid in stored_ids() if rid in wanted] != wanted and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [rid for rid in stored_ids() if rid in wanted] == wanted
        finally:
            gateway.stop()
            if writer is not None:
                stop(writer)
