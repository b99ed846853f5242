"""SIGKILL of a gateway process mid-stream: the streams it was relaying are recorded as interrupted
(`gateway_crashed`) with the tokens relayed until the crash, once the writer finds their process
gone; what had finished is recorded once. Runs on the embedded defaults (the spool) and, in the
second pass, with the records and checkpoints queued in Redis."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field

import httpx
import orjson

from fake_anthropic import FakeAnthropic
from gateway.usage_tally import estimated_tokens
from tests.servers import gateway_process
from tests.support import MASTER_KEY, MESSAGE_BODY, enroll, poll_until
from tests.usage.cast import ensure_seeded_prices
from usage.models import OpenStream, UsageRecord
from usage.writer import drain_usage_queue

LONG_STREAM_BODY = (
    b'{"model":"claude-sonnet-4-5","max_tokens":4096,"stream":true,"messages":[{"role":"user","content":"Say hello"}]}'
)
DELTAS_BEFORE_THE_CRASH = 8


@dataclass
class ReadStream:
    """A client reading one stream in a thread, counting the text deltas it has received."""

    url: str
    headers: dict[str, str]
    request_id: str = ""
    input_tokens: int = -1
    text_bytes: list[int] = field(default_factory=list)
    progressed: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with httpx.stream(
                "POST", self.url + "/v1/messages", content=LONG_STREAM_BODY, headers=self.headers, timeout=30
            ) as answer:
                self.request_id = answer.headers["x-gateway-request-id"]
                buffered = b""
                for chunk in answer.iter_raw():
                    buffered += chunk
                    *events, buffered = buffered.split(b"\n\n")
                    for event in events:
                        self.read(event)
        except httpx.HTTPError:
            pass  # the gateway died under it
        finally:
            self.ended.set()

    def read(self, event: bytes) -> None:
        name, _, data = event.partition(b"\ndata: ")
        payload = orjson.loads(data)
        if name == b"event: message_start":
            self.input_tokens = payload["message"]["usage"]["input_tokens"]
        elif name == b"event: content_block_delta":
            self.text_bytes.append(len(payload["delta"]["text"].encode()))
            if len(self.text_bytes) >= DELTAS_BEFORE_THE_CRASH:
                self.progressed.set()


UNPUSHED_TAIL_EVENTS = 5


def records_by_request(request_ids: list[str], timeout: float = 30.0) -> dict[str, UsageRecord]:
    """Drain as the writer would until every request has its record (the orphans need their
    owner to have been quiet for USAGE_ORPHAN_STREAM_SECONDS first)."""

    def all_recorded() -> dict[str, UsageRecord]:
        drain_usage_queue()
        found = {record.request_id: record for record in UsageRecord.objects.filter(request_id__in=request_ids)}
        return found if len(found) == len(request_ids) else {}

    return poll_until(all_recorded, timeout, f"the records of {len(request_ids)} requests", interval=0.2)


def test_streams_cut_by_a_gateway_crash_are_recorded_with_the_tokens_relayed_so_far(transactional_db, settings):
    ensure_seeded_prices()
    settings.USAGE_ORPHAN_STREAM_SECONDS = 1.0
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        server = gateway_process(
            ANTHROPIC_BASE_URL=fake.base_url,
            ANTHROPIC_API_KEY=MASTER_KEY,
            USAGE_FLUSH_INTERVAL="0.1",
            USAGE_CHECKPOINT_TOKENS="1",
        ).start()
        try:
            token = enroll(server)
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
            finished = httpx.post(server.url + "/v1/messages", content=MESSAGE_BODY, headers=headers, timeout=10)
            assert finished.status_code == 200
            slow = {**headers, "x-fake-stream": "events=200,interval_ms=100,first_byte_ms=0"}
            streams = [ReadStream(server.url, slow) for _ in range(2)]
            readers = [threading.Thread(target=stream.run) for stream in streams]
            for reader in readers:
                reader.start()
            assert all(stream.progressed.wait(timeout=20) for stream in streams)
            server.process.send_signal(signal.SIGKILL)
            assert server.process.wait(timeout=10) == -signal.SIGKILL
            for reader in readers:
                reader.join(timeout=10)
        finally:
            server.stop()

    finished_id = finished.headers["x-gateway-request-id"]
    records = records_by_request([finished_id, *(stream.request_id for stream in streams)])
    assert set(records) == {finished_id, *(stream.request_id for stream in streams)}
    complete = records[finished_id]
    assert (complete.status, complete.error_type, complete.output_tokens) == (200, "", finished.json()["usage"]["output_tokens"])
    for stream in streams:
        record = records[stream.request_id]
        assert (record.status, record.error_type, record.is_error, record.streamed) == (200, "gateway_crashed", True, True)
        assert record.input_tokens == stream.input_tokens > 0
        # Checkpointed before each event was written to the client: everything the client got is
        # counted, and the event the gateway relayed as it died may be counted too. With Redis a
        # checkpoint reaches the queue at the writer's next push (the documented bound): the events of
        # the last UNPUSHED_TAIL_EVENTS (half a second at this pace) may be missing.
        counted_from = sum(stream.text_bytes[:-UNPUSHED_TAIL_EVENTS]) if settings.REDIS_URL else sum(stream.text_bytes)
        upper = estimated_tokens(sum(stream.text_bytes) + max(stream.text_bytes))
        assert estimated_tokens(counted_from) <= record.output_tokens <= upper
        assert record.extra["output_tokens_estimated"] is True
        assert record.cost > 0
    assert OpenStream.objects.count() == 0
    assert UsageRecord.objects.filter(request_id__in=list(records)).count() == 3
