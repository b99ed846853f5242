"""Upstream failures, client disconnects, the circuit breaker, and what must never happen: a master
key in a response or a log line, or a database query on an ordinary request."""

from __future__ import annotations

import logging
import time

import orjson
from asgiref.sync import sync_to_async
from django.db.backends.utils import CursorWrapper
from django.test import AsyncClient

from gateway.usage_tally import estimated_tokens
from tests.gateway.conftest import bearer, call_gateway
from tests.gateway.test_stream_checkpoints import relayed_text_bytes
from tests.support import MASTER_KEY, MESSAGE_BODY, STREAM_BODY, enroll_device
from tokens.operators import create_operator_api_key


async def test_upstream_dropping_mid_stream_ends_the_client_stream_with_an_error_event(fake_upstream, token, usage_events):
    answer = await call_gateway(
        "POST",
        "/v1/messages",
        headers=bearer(token, **{"x-fake-usage": '{"input_tokens": 321}', "x-fake-fault": "drop-mid-stream"}),
        body=STREAM_BODY,
    )
    assert answer.status == 200
    head, _, last = answer.body.rstrip(b"\n").rpartition(b"\n\n")
    assert head.startswith(b"event: message_start") and b"event: message_stop" not in head
    name, data = last.split(b"\n")
    assert name == b"event: error"
    envelope = orjson.loads(data.removeprefix(b"data: "))
    assert envelope["type"] == "error" and envelope["error"]["type"] == "api_error"
    [event] = usage_events
    assert (event.input_tokens, event.error_type, event.status) == (321, "upstream_unreachable", 200)


async def test_a_stream_cut_before_its_final_count_records_the_output_relayed_so_far_as_an_estimate(
    fake_upstream, token, usage_events
):
    cut = bearer(token, **{"x-fake-fault": "drop-mid-stream"})
    answer = await call_gateway("POST", "/v1/messages", headers=cut, body=STREAM_BODY)
    relayed = relayed_text_bytes(answer.body)
    assert relayed > 8  # some text reached the client before the cut
    [event] = usage_events
    assert event.output_tokens == estimated_tokens(relayed) > 1
    assert event.extra["output_tokens_estimated"] is True


async def test_client_leaving_mid_stream_closes_upstream_at_once_and_records_usage_so_far(fake_upstream, token, usage_events):
    started = time.monotonic()
    slow = bearer(token, **{"x-fake-usage": '{"input_tokens": 321}', "x-fake-stream": "events=50,interval_ms=200"})
    answer = await call_gateway("POST", "/v1/messages", headers=slow, body=STREAM_BODY, leave_after_first_chunk=True)
    assert time.monotonic() - started < 3
    assert answer.chunks[0].startswith(b"event: message_start")
    [event] = usage_events
    assert (event.client_disconnected, event.input_tokens, event.output_tokens, event.streamed) == (True, 321, 1, True)


async def test_a_connection_that_fails_before_any_response_is_retried_once_then_502(fake_upstream, token, usage_events):
    answer = await call_gateway(
        "POST", "/v1/messages", headers=bearer(token, **{"x-fake-fault": "drop-before-response"}), body=MESSAGE_BODY
    )
    assert (answer.status, orjson.loads(answer.body)["error"]["details"]["error_code"]) == (502, "upstream_unreachable")
    assert len(fake_upstream.requests) == 2
    assert [event.status for event in usage_events] == [502]


async def test_five_upstream_failures_open_the_breaker_and_4xx_never_count(fake_upstream, token):
    for _ in range(6):
        assert (
            await call_gateway("POST", "/v1/messages", headers=bearer(token, **{"x-fake-fault": "400"}), body=MESSAGE_BODY)
        ).status == 400
    statuses = [
        (await call_gateway("POST", "/v1/messages", headers=bearer(token, **{"x-fake-fault": fault}), body=MESSAGE_BODY)).status
        for fault in ("500", "529", "504", "500", "529")
    ]
    assert statuses == [500, 529, 504, 500, 529]
    refused = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    error = orjson.loads(refused.body)["error"]
    assert (refused.status, error["message"], error["details"]["error_code"]) == (503, "Circuit breaker is open", "circuit_open")
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert len(fake_upstream.requests) == 11


async def test_operators_read_and_reset_the_breaker(fake_upstream, token):
    _, secret = await sync_to_async(create_operator_api_key)(name="ops", created_by=None)
    client = AsyncClient()
    opened_before = (await client.get("/admin/circuit-breaker", headers={"authorization": f"Bearer {secret}"})).json()[
        "times_opened"
    ]
    other = await enroll_device()  # the upstream's breaker opens on failures of two devices
    for device_token in (token, other, token, other, token):
        await call_gateway("POST", "/v1/messages", headers=bearer(device_token, **{"x-fake-fault": "500"}), body=MESSAGE_BODY)
    assert (await client.get("/admin/circuit-breaker")).status_code == 401
    assert (await client.get("/admin/circuit-breaker", headers={"authorization": f"Bearer {token}"})).status_code == 401
    state = (await client.get("/admin/circuit-breaker", headers={"authorization": f"Bearer {secret}"})).json()
    assert (state["state"], state["consecutive_failures"], state["times_opened"], state["failure_threshold"]) == (
        "open",
        5,
        opened_before + 1,
        5,
    )
    reset = (await client.post("/admin/circuit-breaker/reset", headers={"authorization": f"Bearer {secret}"})).json()
    assert (reset["state"], reset["consecutive_failures"]) == ("closed", 0)
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)).status == 200


async def test_deep_health_reports_the_breaker_and_an_open_one_is_down(fake_upstream, token):
    client = AsyncClient()
    healthy = (await client.get("/healthz", {"deep": "1"})).json()
    assert healthy["checks"]["circuit_breaker"]["status"] == "ok" and healthy["checks"]["circuit_breaker"]["detail"] == "closed"
    other = await enroll_device()  # the upstream's breaker opens on failures of two devices
    for device_token in (token, other, token, other, token):
        await call_gateway("POST", "/v1/messages", headers=bearer(device_token, **{"x-fake-fault": "529"}), body=MESSAGE_BODY)
    down = await client.get("/healthz", {"deep": "1"})
    assert down.status_code == 503 and down.json()["checks"]["circuit_breaker"]["status"] == "down"


async def test_the_master_key_never_reaches_a_response_or_a_log_line(fake_upstream, token, settings, caplog):
    caplog.set_level(logging.DEBUG)
    answers = [
        await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY),
        await call_gateway(
            "POST", "/v1/messages", headers=bearer(token, **{"x-fake-fault": "drop-mid-stream"}), body=STREAM_BODY
        ),
        await call_gateway(
            "POST", "/v1/messages", headers=bearer(token, **{"x-fake-fault": "drop-before-response"}), body=MESSAGE_BODY
        ),
    ]
    settings.ANTHROPIC_API_KEY = "sk-ant-rejected-" + "r" * 24
    answers.append(await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY))
    assert [answer.status for answer in answers] == [
        200,
        200,
        502,
        200,
    ]  # the refused key flagged, the request retried on the draining one
    everything = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    for secret in (MASTER_KEY, settings.ANTHROPIC_API_KEY):
        assert secret not in everything
        assert all(
            secret.encode() not in answer.body and secret.encode() not in b"".join(v for _, v in answer.raw_headers)
            for answer in answers
        )
    assert "Upstream rejected the master key" in caplog.text


async def test_a_warm_ordinary_request_makes_no_database_query(fake_upstream, token, monkeypatch):
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)).status == 200
    queries: list[str] = []
    original = CursorWrapper.execute

    def counting_execute(self, sql, params=None):
        queries.append(sql)
        return original(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", counting_execute)
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=STREAM_BODY)).status == 200
    assert queries == []


async def test_a_staff_session_needs_the_csrf_token_to_reset_the_breaker(transactional_db):
    from django.contrib.auth import get_user_model

    await sync_to_async(get_user_model().objects.create_user)(username="ops", password="correct-horse-9", is_staff=True)
    browser = AsyncClient(enforce_csrf_checks=True)
    await sync_to_async(browser.login)(username="ops", password="correct-horse-9")
    assert (await browser.get("/admin/circuit-breaker")).json()["state"] == "closed"
    refused = await browser.post("/admin/circuit-breaker/reset")
    assert (refused.status_code, refused.json()["error"]["message"]) == (403, "CSRF verification failed.")
