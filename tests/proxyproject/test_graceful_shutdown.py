"""SIGTERM during streams: the gateway stops accepting, lets every in-flight stream finish, writes
every usage record, then exits."""

from __future__ import annotations

import signal
import threading

import httpx
import jwt

from fake_anthropic import FakeAnthropic
from tests.servers import gateway_process
from tests.support import MASTER_KEY, STREAM_BODY, enroll
from usage.models import UsageRecord

STREAMS = 5


def test_sigterm_lets_streams_finish_and_flushes_usage(transactional_db, settings):
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        server = gateway_process(
            ANTHROPIC_BASE_URL=fake.base_url,
            ANTHROPIC_API_KEY=MASTER_KEY,
            SHUTDOWN_GRACE_SECONDS="20",
            REDIS_KEY_PREFIX=settings.REDIS_KEY_PREFIX,
        ).start()
        token = enroll(server)
        started = threading.Barrier(STREAMS + 1, timeout=20)
        bodies: list[bytes] = [b""] * STREAMS

        def stream(index: int) -> None:
            headers = {
                "authorization": f"Bearer {token}",
                "content-type": "application/json",
                "x-fake-stream": "events=15,interval_ms=100,first_byte_ms=0",
            }
            with httpx.stream("POST", server.url + "/v1/messages", content=STREAM_BODY, headers=headers, timeout=30) as answer:
                chunks = answer.iter_raw()
                bodies[index] = next(chunks)
                started.wait()
                bodies[index] += b"".join(chunks)

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(STREAMS)]
        for thread in threads:
            thread.start()
        started.wait()
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=30)
        exit_code = server.process.wait(timeout=30)

    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught: exit by SIGTERM.
    assert exit_code == -signal.SIGTERM, server.log()
    assert "Application shutdown complete." in server.log()
    for body in bodies:
        assert body.count(b"event: content_block_delta") == 15
        assert body.rstrip().endswith(b'data: {"type":"message_stop"}')
    try:
        httpx.get(server.url + "/healthz", timeout=2)
        raise AssertionError("the stopped gateway still accepted a connection")
    except httpx.ConnectError:
        pass
    device_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    records = UsageRecord.objects.filter(device_ref=device_id, endpoint="/v1/messages")
    assert records.count() == STREAMS
    assert list(records.values_list("output_tokens", flat=True)) == [records[0].output_tokens] * STREAMS
    assert records[0].output_tokens > 0
