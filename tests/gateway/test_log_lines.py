"""The seed's four log lines per request, as structured events sharing one request id."""

from __future__ import annotations

import logging

import proxyproject.asgi  # noqa: F401  (set up Django's logging now, not under caplog's handler)
from tests.gateway.conftest import call_gateway
from tests.support import MASTER_KEY, MESSAGE_BODY

SEED_LINES = ["Incoming request", "Proxying request to Anthropic", "Usage tracked", "Request completed"]


async def test_a_proxied_request_logs_the_seed_lines_with_one_request_id(token, fake_upstream, caplog, settings):
    settings.LOG_REQUEST_STAGES = True
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    answer = await call_gateway(
        "POST",
        "/v1/messages",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        body=MESSAGE_BODY,
    )
    assert answer.status == 200
    records = [r for r in caplog.records if r.name == "gateway.proxy"]
    assert [r.getMessage() for r in records] == SEED_LINES
    fields = [r.event_fields for r in records]
    assert len({f["requestId"] for f in fields}) == 1
    usage = fields[2]
    assert (usage["inputTokens"], usage["outputTokens"]) == (
        answer_usage(answer)["input_tokens"],
        answer_usage(answer)["output_tokens"],
    )
    assert (fields[3]["status"], fields[3]["errorCode"]) == (200, None)
    assert MASTER_KEY not in caplog.text and token not in caplog.text


def answer_usage(answer) -> dict:
    import orjson

    return orjson.loads(answer.body)["usage"]


async def test_production_logs_one_line_per_request_at_info(token, fake_upstream, caplog, settings):
    settings.LOG_REQUEST_STAGES = False
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    answer = await call_gateway(
        "POST",
        "/v1/messages",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        body=MESSAGE_BODY,
    )
    assert answer.status == 200
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.proxy"] == ["Request completed"]


async def test_a_refused_request_logs_its_error_code_on_the_completed_line(transactional_db, caplog):
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    answer = await call_gateway("POST", "/v1/messages", headers={"authorization": "Bearer not-a-token"}, body=MESSAGE_BODY)
    assert answer.status == 401
    [line] = [r for r in caplog.records if r.getMessage() == "Request completed"]
    assert (line.event_fields["status"], line.event_fields["errorCode"]) == (401, "invalid_token")


async def test_an_upstream_error_relayed_logs_its_type_on_the_completed_line(token, fake_upstream, caplog):
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    answer = await call_gateway(
        "POST", "/v1/messages", headers={"authorization": f"Bearer {token}", "x-fake-fault": "529"}, body=MESSAGE_BODY
    )
    assert answer.status == 529
    [line] = [r for r in caplog.records if r.getMessage() == "Request completed"]
    assert (line.event_fields["status"], line.event_fields["errorCode"]) == (529, "overloaded_error")
