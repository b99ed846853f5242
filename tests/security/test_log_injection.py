"""Log and metric injection: what a client sends (a model name, a path, a Host header) cannot write
a log line of its own, put a NUL or another control character into a log or a metric label, fake
another field, or flood the log with tracebacks."""

from __future__ import annotations

import logging
import secrets
from urllib.parse import quote

import orjson
import pytest

import proxyproject.asgi  # noqa: F401  (set up Django's logging now, not under caplog's handler)
from proxyproject.lib.logging import DisallowedHostLogFilter, StructuredFormatter
from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool, token  # noqa: F401  (fixtures)

FORGED_LINE = "2026-12-02T00:00:00.000+00:00 INFO    gateway.proxy: Request completed status=200"


def formatted_lines(records: list[logging.LogRecord], as_json: bool) -> list[str]:
    """What the console handler writes for these records, split into the lines a reader sees."""
    formatter = StructuredFormatter(as_json=as_json)
    return "\n".join(formatter.format(record) for record in records).split("\n")


async def send_model(token: str, model: str) -> int:  # noqa: F811
    body = orjson.dumps({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    return (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body)).status


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
async def test_a_v1_path_with_a_newline_cannot_write_its_own_log_line(fake_upstream, caplog, as_json):  # noqa: F811
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    answer = await call_gateway("POST", "/v1/messages%0A" + quote(FORGED_LINE) + "%0D%1B[2J", body=b"{}")
    assert answer.status == 400  # not canonical, refused; the path is still logged as it arrived
    records = [r for r in caplog.records if r.name == "gateway.proxy"]
    lines = formatted_lines(records, as_json)
    assert len(lines) == len(records) == 2
    assert not any(line.startswith(FORGED_LINE[:20]) or "\x1b" in line or "\r" in line for line in lines)
    if as_json:
        assert orjson.loads(lines[0])["path"] == "/v1/messages\\n" + FORGED_LINE + "\\r\\x1b[2J"
    else:
        assert 'path="/v1/messages\\\\n' + FORGED_LINE + '\\\\r\\\\x1b[2J"' in lines[0]


async def test_a_model_name_with_control_characters_is_refused_before_it_is_logged(token, fake_upstream, settings, caplog):  # noqa: F811
    settings.LOG_REQUEST_STAGES = True
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    assert await send_model(token, f"claude-sonnet-4-5\n{FORGED_LINE}") == 400
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.proxy"] == [
        "Incoming request",
        "Usage tracked",
        "Request completed",
    ]
    assert fake_upstream.requests == []


async def test_a_value_with_spaces_cannot_fake_another_field_in_text_logs(token, fake_upstream, settings, caplog):  # noqa: F811
    settings.LOG_REQUEST_STAGES = True
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    assert await send_model(token, 'claude-sonnet-4-5 deviceId=someone-else "x"') == 200
    proxying = formatted_lines([r for r in caplog.records if r.getMessage() == "Proxying request to Anthropic"], as_json=False)
    assert len(proxying) == 1
    assert ' model="claude-sonnet-4-5 deviceId=someone-else \\"x\\"" ' in proxying[0]
    assert proxying[0].count(" deviceId=") == 2  # the real field, and the quoted text inside the model's value


async def test_a_nul_byte_in_a_v1_path_reaches_neither_the_log_nor_a_metric_label(
    transactional_db, fake_upstream, settings, caplog
):  # noqa: F811
    settings.METRICS_TOKEN = "scrape-" + secrets.token_hex(16)
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    marker = secrets.token_hex(4)
    assert (await call_gateway("POST", f"/v1/claude%00{marker}%E2%80%AE", body=b"{}")).status == 400
    records = [r for r in caplog.records if r.name == "gateway.proxy"]
    text = "\n".join(formatted_lines(records, as_json=False))
    assert "\x00" not in text and "\u202e" not in text
    assert f" path=/v1/claude\\x00{marker}\\u202e\n" in text
    json_lines = formatted_lines(records, as_json=True)
    assert all("\\u0000" not in line and "\u202e" not in line for line in json_lines)
    assert orjson.loads(json_lines[0])["path"] == f"/v1/claude\\x00{marker}\\u202e"
    scrape = await call_gateway("GET", "/metrics", headers={"authorization": f"Bearer {settings.METRICS_TOKEN}"})
    assert scrape.status == 200
    assert b"\x00" not in scrape.body and "\u202e".encode() not in scrape.body


async def test_a_path_with_an_encoded_newline_cannot_write_its_own_log_line(caplog):
    caplog.set_level(logging.WARNING, logger="django.request")
    answer = await call_gateway("GET", f"/no-such-page\n{FORGED_LINE}", headers={"host": "127.0.0.1"})
    assert answer.status == 404
    records = [r for r in caplog.records if r.name == "django.request"]
    assert [r.levelname for r in records] == ["WARNING"]
    for as_json in (False, True):
        assert len(formatted_lines(records, as_json)) == 1


@pytest.fixture
def host_filter_clock(monkeypatch) -> list[float]:
    """The invalid-Host log filter's clock, moved by the test; starts past any time it has seen."""
    host_filters = [
        f for f in logging.getLogger("django.security.DisallowedHost").filters if isinstance(f, DisallowedHostLogFilter)
    ]
    assert host_filters
    now = [max(host_filter.clock() for host_filter in host_filters) + 10_000.0]
    for host_filter in host_filters:  # Django configures logging again each time it is set up
        monkeypatch.setattr(host_filter, "clock", lambda: now[0])
    return now


async def test_invalid_host_headers_are_one_warning_line_without_traceback_per_interval(caplog, settings, host_filter_clock):
    settings.DISALLOWED_HOST_LOG_INTERVAL = 60.0
    caplog.set_level(logging.INFO, logger="django.security.DisallowedHost")
    caplog.set_level(logging.INFO, logger="django.request")
    statuses = [(await call_gateway("GET", "/healthz", headers={"host": f"evil-{n}.example"})).status for n in range(50)]
    assert statuses == [400] * 50
    assert [(r.name, r.levelname, r.exc_info, r.getMessage()) for r in caplog.records] == [
        ("django.security.DisallowedHost", "WARNING", None, "Invalid Host header refused"),
    ]
    [first] = caplog.records
    assert (first.event_fields["host"], first.event_fields["path"]) == ("evil-0.example", "/healthz")
    [line] = formatted_lines([first], as_json=False)
    assert "Traceback" not in line and len(line) < 300

    host_filter_clock[0] += 59.0
    await call_gateway("GET", "/healthz", headers={"host": "evil-50.example\n" + FORGED_LINE})
    assert len(caplog.records) == 1
    host_filter_clock[0] += 1.0
    await call_gateway("GET", "/healthz", headers={"host": "evil-52.example\x00"})
    assert len(caplog.records) == 2
    second = caplog.records[1]
    assert (second.levelname, second.exc_info, second.event_fields["suppressed"]) == ("WARNING", None, 50)
    [line] = formatted_lines([second], as_json=False)
    assert "host=evil-52.example\\x00 " in line
