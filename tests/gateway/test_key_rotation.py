"""The proof of issue 5: the master key is rotated while a bounded load of streaming and
non-streaming requests runs through two live gateway processes, and no client request fails.

The fake upstream accepts both keys during the rotation, as Anthropic does until the operator
revokes the old one; once the drain task has retired the old key, the fake stops accepting it
(the revocation) and must never see it again. A long stream opened on the old key just before the
rotation finishes on it. With Redis, the drain task knows what is in flight in every process and
retires the old key only after that stream ended; without Redis it waits out the grace period.
"""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import orjson
from django.core.management import call_command

from fake_anthropic import FakeAnthropic
from gateway.models import UpstreamKey, UpstreamKeyState
from gateway.tasks import retire_drained_upstream_keys_task
from gateway.upstream_keys import ENVIRONMENT_KEY_NAME
from tests.servers import ServerProcess, gateway_process
from tests.support import poll_until

OLD = "sk-ant-api03-rotation-old-" + "o" * 30 + "0LD7"
NEW = "sk-ant-api03-rotation-new-" + "n" * 30 + "N3W8"
POOL_CACHE_SECONDS = "0.5"
MAX_REQUESTS_PER_WORKER = 400
WORKERS = 6
MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": "Say hello"}]}


@dataclass(frozen=True)
class Outcome:
    streamed: bool
    status: int
    complete: bool
    finished_at: float


def send(client: httpx.Client, gateway: ServerProcess, token: str, *, streamed: bool, extra: dict[str, str]) -> Outcome:
    headers = {"authorization": f"Bearer {token}", "anthropic-version": "2023-06-01", **extra}
    body = {**MESSAGE, "stream": streamed}
    if streamed:
        with client.stream("POST", gateway.url + "/v1/messages", json=body, headers=headers) as response:
            text = b"".join(response.iter_bytes())
        complete = text.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n') and b"event: error" not in text
    else:
        response = client.post(gateway.url + "/v1/messages", json=body, headers=headers)
        complete = response.status_code == 200 and orjson.loads(response.content)["type"] == "message"
    return Outcome(streamed, response.status_code, complete, time.monotonic())


def send_long_stream(gateway: ServerProcess, token: str) -> Outcome:
    with httpx.Client(timeout=30) as client:
        shape = {"x-fake-stream": "events=25,interval_ms=200", "x-test-probe": "long"}
        return send(client, gateway, token, streamed=True, extra=shape)


def run_load(worker: int, gateways: list[ServerProcess], token: str, stop: threading.Event) -> list[Outcome]:
    """Alternates gateways and kinds; streams of 8 events 40 ms apart, replies after 50 ms."""
    outcomes = []
    with httpx.Client(timeout=30) as client:
        for index in range(MAX_REQUESTS_PER_WORKER):
            if stop.is_set():
                break
            gateway = gateways[(worker + index) % len(gateways)]
            streamed = (worker + index) % 2 == 0
            shape = {"x-fake-stream": "events=8,interval_ms=40"} if streamed else {"x-fake-fault": "slow-first-byte=50"}
            tag = {"x-test-gateway": str(gateways.index(gateway))}
            outcomes.append(send(client, gateway, token, streamed=streamed, extra={**shape, **tag}))
    return outcomes


def start_gateways(fake: FakeAnthropic, count: int) -> list[ServerProcess]:
    processes = [
        gateway_process(
            ANTHROPIC_BASE_URL=fake.base_url,
            ANTHROPIC_API_KEY=OLD,
            UPSTREAM_KEY_POOL_CACHE_SECONDS=POOL_CACHE_SECONDS,
            ENROLLMENT_MODE="open",
            RATE_LIMIT_MAX="1000000",
            UPSTREAM_EXTRA_REQUEST_HEADERS="x-fake-fault,x-fake-stream,x-test-probe,x-test-gateway",  # the tags it finds requests by
        )
        for _ in range(count)
    ]
    with ThreadPoolExecutor(count) as starting:
        return list(starting.map(lambda process: process.start(), processes))


def test_rotating_under_load_fails_no_request_and_the_old_key_is_never_used_after_the_drain(transactional_db, settings):
    shared = bool(settings.REDIS_URL)
    settings.UPSTREAM_KEY_POOL_CACHE_SECONDS = float(POOL_CACHE_SECONDS)
    settings.UPSTREAM_KEY_DRAIN_GRACE_SECONDS = 900 if shared else 4
    with FakeAnthropic(api_keys={OLD}) as fake:
        gateways = start_gateways(fake, 2)
        try:
            enrolled = httpx.post(gateways[0].url + "/bootstrap", json={"device_id": "rotation-load", "app_version": "1.0"})
            token = enrolled.json()["wrapper_token"]
            seeded = UpstreamKey.objects.get()
            assert (seeded.name, seeded.secret_last4) == (ENVIRONMENT_KEY_NAME, OLD[-4:])

            stop = threading.Event()
            with ThreadPoolExecutor(WORKERS + 1) as pool:
                load = [pool.submit(run_load, worker, gateways, token, stop) for worker in range(WORKERS)]
                poll_until(lambda: len(fake.requests) >= 20, 15, "load on the old key")
                long_stream = pool.submit(send_long_stream, gateways[1], token)
                poll_until(lambda: any(r.headers.get("x-test-probe") == "long" for r in fake.requests), 10, "the long stream")

                fake.set_api_keys({OLD, NEW})
                settings.ANTHROPIC_BASE_URL = fake.base_url  # the command checks the new key first
                output = io.StringIO()
                call_command(
                    "rotate_upstream_key", ENVIRONMENT_KEY_NAME, "--new-name", "rotated", stdin=io.StringIO(NEW), stdout=output
                )
                assert output.getvalue().startswith("Upstream key 'rotated' (…N3W8) is active.\n")
                poll_until(
                    lambda: {r.headers.get("x-test-gateway") for r in fake.requests if r.api_key_used == NEW[-4:]} >= {"0", "1"},
                    10,
                    "both gateways on the new key",
                )

                retired = poll_until(retire_drained_upstream_keys_task, 20, "the drain task to retire the old key")
                retired_at = time.monotonic()
                assert retired == [ENVIRONMENT_KEY_NAME]
                fake.set_api_keys({NEW})  # the operator revokes the old key at Anthropic
                after_drain = len(fake.requests)
                poll_until(lambda: len(fake.requests) >= after_drain + 40, 15, "load after the drain")
                stop.set()
                outcomes = [outcome for future in load for outcome in future.result()]
                long_outcome = long_stream.result()
        finally:
            for gateway in gateways:
                gateway.stop()
        seen = fake.requests

    failures = [outcome for outcome in outcomes + [long_outcome] if outcome.status != 200 or not outcome.complete]
    assert failures == [], (failures[:5], gateways[0].log()[-3000:], gateways[1].log()[-3000:])
    assert sum(outcome.streamed for outcome in outcomes) >= 40 and sum(not outcome.streamed for outcome in outcomes) >= 40
    [probe] = [request for request in seen if request.headers.get("x-test-probe") == "long"]
    assert probe.api_key_used == OLD[-4:]
    if shared:
        assert long_outcome.finished_at <= retired_at  # retired only once nothing was in flight on it anywhere
    assert {request.api_key_used for request in seen[after_drain:]} == {NEW[-4:]}
    assert {request.api_key_used for request in seen[:after_drain]} == {OLD[-4:], NEW[-4:]}
    old, new = UpstreamKey.objects.get(name=ENVIRONMENT_KEY_NAME), UpstreamKey.objects.get(name="rotated")
    assert (old.state, old.encrypted_secret, new.state) == (UpstreamKeyState.RETIRED, "", UpstreamKeyState.ACTIVE)
