"""SIGTERM with a stream longer than the grace period: the stream ends with a retryable
`event: error` rather than being cut mid-event, the request is recorded as interrupted with what it
used so far, and the server exits without a traceback."""

from __future__ import annotations

import signal
import threading

import httpx
import jwt
import orjson

from fake_anthropic import FakeAnthropic
from tests.servers import gateway_process
from tests.support import MASTER_KEY, STREAM_BODY, enroll
from usage.models import UsageRecord


def test_a_stream_longer_than_the_grace_period_ends_with_a_retryable_error_event(transactional_db, settings):
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        server = gateway_process(
            ANTHROPIC_BASE_URL=fake.base_url,
            ANTHROPIC_API_KEY=MASTER_KEY,
            SHUTDOWN_GRACE_SECONDS="2",
            REDIS_KEY_PREFIX=settings.REDIS_KEY_PREFIX,
        ).start()
        token = enroll(server)
        first_bytes = threading.Event()
        body = bytearray()

        def stream() -> None:
            headers = {
                "authorization": f"Bearer {token}",
                "content-type": "application/json",
                "x-fake-stream": "events=100,interval_ms=200,first_byte_ms=0",
            }
            with httpx.stream("POST", server.url + "/v1/messages", content=STREAM_BODY, headers=headers, timeout=30) as answer:
                for chunk in answer.iter_raw():
                    body.extend(chunk)
                    first_bytes.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first_bytes.wait(timeout=20)
        server.process.send_signal(signal.SIGTERM)
        reader.join(timeout=30)
        exit_code = server.process.wait(timeout=30)

    log = server.log()
    assert exit_code == -signal.SIGTERM, log
    assert "Traceback" not in log
    events = bytes(body).rstrip(b"\n").split(b"\n\n")
    assert events[0].startswith(b"event: message_start")
    assert events[-1].startswith(b"event: error\ndata: ")
    error = orjson.loads(events[-1].split(b"data: ", 1)[1])
    assert error["error"]["type"] == "overloaded_error"
    assert error["error"]["details"] == {"error_code": "gateway_shutting_down"}
    assert b"message_stop" not in body
    device_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    record = UsageRecord.objects.get(device_ref=device_id, endpoint="/v1/messages")
    assert (record.status, record.error_type, record.streamed) == (200, "gateway_shutting_down", True)
    assert record.input_tokens > 0
