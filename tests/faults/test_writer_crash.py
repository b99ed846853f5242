"""SIGKILL of the usage writer process (USAGE_WRITER=process) while requests flow: clients notice
nothing, and once a writer runs again every request has exactly one record, with its own usage (no
record lost in the dead writer's claimed batch, none doubled by its replay, no stream taken for an
interrupted one)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx

from fake_anthropic import FakeAnthropic
from tests import servers
from tests.support import MASTER_KEY, MESSAGE_BODY, STREAM_BODY, enroll, poll_until
from tests.usage.cast import ensure_seeded_prices
from usage.models import OpenStream, UsageRecord

WRITER_ENV = {
    "USAGE_WRITER": "process",
    "USAGE_FLUSH_INTERVAL": "0.05",
    "USAGE_BATCH_SIZE": "5",
    "USAGE_WRITER_LEASE_SECONDS": "1",
    "USAGE_ORPHAN_STREAM_SECONDS": "5",
}


def start_writer() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_usage_writer"],
        cwd=servers.BASE_DIR,
        env=servers.server_environment(**WRITER_ENV),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Traffic:
    """Requests, every other one a stream, sent one after another until stopped; what each got."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        self.answers: list[tuple[str, int, bool]] = []  # (gateway request id, status, streamed)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                streamed = len(self.answers) % 2 == 1
                answer = client.post(
                    self.url + "/v1/messages", content=STREAM_BODY if streamed else MESSAGE_BODY, headers=self.headers
                )
                self.answers.append((answer.headers.get("x-gateway-request-id", ""), answer.status_code, streamed))


def test_killing_the_usage_writer_loses_and_doubles_no_record(transactional_db):
    ensure_seeded_prices()
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        gateway = servers.gateway_process(
            ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY=MASTER_KEY, RATE_LIMIT_MAX="1000000", **WRITER_ENV
        ).start()
        writer = start_writer()
        traffic = Traffic(gateway.url, enroll(gateway))
        try:
            traffic.thread.start()
            poll_until(lambda: UsageRecord.objects.count() >= 20, 20, "20 stored records")
            writer.send_signal(signal.SIGKILL)  # most likely mid-batch: a batch of 5 every 50 ms
            writer.wait(timeout=10)
            killed_at = len(traffic.answers)
            time.sleep(1.0)  # requests keep flowing with no writer at all
            assert len(traffic.answers) > killed_at
            writer = start_writer()
            time.sleep(1.0)
            traffic.stop.set()
            traffic.thread.join(timeout=20)
            wanted = {request_id: streamed for request_id, _, streamed in traffic.answers}
            poll_until(lambda: UsageRecord.objects.count() >= len(wanted), 30, "every answered request's record")
        finally:
            traffic.stop.set()
            writer.send_signal(signal.SIGTERM)
            writer.wait(timeout=30)
            gateway.stop()

    assert {status for _, status, _ in traffic.answers} == {200}
    records = list(UsageRecord.objects.values_list("request_id", "streamed", "error_type", "output_tokens"))
    assert sorted(request_id for request_id, *_ in records) == sorted(wanted)
    assert {(request_id, streamed) for request_id, streamed, *_ in records} == set(wanted.items())
    assert {(error_type, output_tokens) for _, _, error_type, output_tokens in records} == {("", 22)}
    assert OpenStream.objects.count() == 0
