"""Attacks on the request path: a path checked as one route and forwarded as another.

The upstream client normalises dot segments and percent-encoded dots and slashes, so each of these
paths used to skip policy and billing (`/v1/./messages` served as `/v1/messages`) or leave `/v1`
with the master key (`/v1/../admin/usage`). Each must be refused before authentication, and the
upstream must receive nothing."""

from __future__ import annotations

import http.client
import logging

import orjson
import pytest

from fake_anthropic import FakeAnthropic
from tests.gateway.conftest import bearer, call_gateway
from tests.servers import gateway_process
from tests.support import MASTER_KEY, MESSAGE_BODY, enroll_device
from tokens.models import Device

DOT_SEGMENT_PATHS = [
    "/v1/./messages",
    "/v1/x/../messages",
    "/v1/%2e/messages",
    "/v1/%2E/messages",
    "/v1/messages/.",
    "/v1//messages",
    "/v1/messages/%2e",
    "/v1/messages/",
    "/v1/messages.",
    "/v1\\messages",
    "/v1/messages%2fcount_tokens",
    "/v1/messages%2Fcount_tokens",
    "/v1/messages%5ccount_tokens",
    "/v1/%6dessages",
    "/%761/messages",
]
TRAVERSAL_PATHS = ["/v1/../admin/usage", "/v1/%2e%2e/admin/usage", "/v1/messages/../../admin", "/v1/%2e%2e%2fadmin", "/v1/.."]
DISALLOWED_MODEL_BODY = b'{"model":"claude-opus-4-8","max_tokens":64000,"messages":[{"role":"user","content":"hi"}]}'


def error_of(answer) -> tuple[int, str, str]:
    error = orjson.loads(answer.body)["error"]
    return answer.status, error["type"], error["details"]["error_code"]


@pytest.mark.parametrize("path", DOT_SEGMENT_PATHS)
async def test_non_canonical_path_is_refused_before_authentication(fake_upstream, path):
    answer = await call_gateway("POST", path, headers={"content-type": "application/json"}, body=MESSAGE_BODY)
    assert error_of(answer) == (400, "invalid_request_error", "non_canonical_path")
    assert fake_upstream.requests == []


@pytest.mark.parametrize("path", DOT_SEGMENT_PATHS)
async def test_dot_segments_do_not_skip_the_model_allowlist(fake_upstream, transactional_db, path):
    token = await enroll_device(allowed_models="claude-sonnet-*")
    answer = await call_gateway("POST", path, headers=bearer(token), body=DISALLOWED_MODEL_BODY)
    assert error_of(answer) == (400, "invalid_request_error", "non_canonical_path")
    assert fake_upstream.requests == []


async def test_dot_segments_do_not_skip_the_daily_spend_cap(fake_upstream, live_prices):
    token = await enroll_device(daily_spend_cap_usd="0.01")
    dotted = await call_gateway("POST", "/v1/./messages", headers=bearer(token), body=DISALLOWED_MODEL_BODY)
    canonical = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=DISALLOWED_MODEL_BODY)
    assert error_of(dotted) == (400, "invalid_request_error", "non_canonical_path")
    assert error_of(canonical) == (429, "rate_limit_error", "spend_cap_reached")
    assert fake_upstream.requests == []


@pytest.mark.parametrize("path", TRAVERSAL_PATHS)
async def test_traversal_out_of_v1_never_reaches_the_upstream(fake_upstream, token, path):
    answer = await call_gateway("POST", path, headers=bearer(token), body=b"{}")
    assert error_of(answer) == (400, "invalid_request_error", "non_canonical_path")
    assert fake_upstream.requests == []


async def test_unknown_route_is_not_offered(fake_upstream, token):
    answer = await call_gateway("DELETE", "/v1/skills/skill_123", headers=bearer(token))
    assert error_of(answer) == (404, "not_found_error", "route_not_offered")
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/messages"),
        ("PUT", "/v1/files"),
        ("POST", "/v1/models"),
        ("GET", "/v1"),
        ("GET", "/v1/messages/batches/msgbatch_1/results/extra"),
    ],
)
async def test_known_path_with_another_method_or_suffix_is_not_offered(fake_upstream, token, method, path):
    answer = await call_gateway(method, path, headers=bearer(token))
    assert error_of(answer) == (404, "not_found_error", "route_not_offered")
    assert fake_upstream.requests == []


async def test_forwarded_unknown_route_still_checks_the_model(fake_upstream, transactional_db, settings):
    settings.GATEWAY_FORWARD_UNKNOWN_ROUTES = True
    token = await enroll_device(allowed_models="claude-sonnet-*")
    answer = await call_gateway("POST", "/v1/agents", headers=bearer(token), body=DISALLOWED_MODEL_BODY)
    assert error_of(answer) == (403, "permission_error", "model_not_allowed")
    not_a_string = await call_gateway("POST", "/v1/agents", headers=bearer(token), body=b'{"model":["claude-opus-4-8"]}')
    assert error_of(not_a_string) == (400, "invalid_request_error", "invalid_request")
    assert fake_upstream.requests == []


async def test_forwarded_unknown_route_is_still_canonical(fake_upstream, token, settings):
    settings.GATEWAY_FORWARD_UNKNOWN_ROUTES = True
    answer = await call_gateway("POST", "/v1/../admin", headers=bearer(token), body=b"{}")
    assert error_of(answer) == (400, "invalid_request_error", "non_canonical_path")
    assert fake_upstream.requests == []


@pytest.mark.parametrize("host", ["evil.example", "evil.example:3001", "localhost.evil.example", ""])
async def test_v1_refuses_a_host_outside_allowed_hosts(fake_upstream, token, host):
    answer = await call_gateway("POST", "/v1/messages", headers={**bearer(token), "host": host}, body=MESSAGE_BODY)
    assert error_of(answer) == (400, "invalid_request_error", "host_not_allowed")
    assert fake_upstream.requests == []


async def test_v1_serves_an_allowed_host(fake_upstream, token):
    answer = await call_gateway("POST", "/v1/messages", headers={**bearer(token), "host": "localhost:3001"}, body=MESSAGE_BODY)
    assert answer.status == 200
    assert [(r.method, r.path) for r in fake_upstream.requests] == [("POST", "/v1/messages")]


def raw_request(port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    """http.client sends the path exactly as given: no normalisation, no re-encoding."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {**headers, "content-length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


def test_a_live_server_refuses_every_attack_path_sent_raw(transactional_db):
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        server = gateway_process(ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY=MASTER_KEY).start()
        try:
            import httpx

            enrolled = httpx.post(
                server.url + "/bootstrap", json={"device_id": "raw-path-device", "app_version": "1.0.0"}, timeout=10
            )
            assert enrolled.status_code == 200, enrolled.text
            Device.objects.filter(device_id="raw-path-device").update(allowed_models="claude-sonnet-*")
            headers = {
                "authorization": f"Bearer {enrolled.json()['wrapper_token']}",
                "content-type": "application/json",
                "anthropic-version": "2023-06-01",
                "host": f"127.0.0.1:{server.port}",
            }
            for path in DOT_SEGMENT_PATHS + TRAVERSAL_PATHS:
                status, body = raw_request(server.port, "POST", path, headers, DISALLOWED_MODEL_BODY)
                assert (path, status, body["error"]["details"]["error_code"]) == (path, 400, "non_canonical_path")
            assert fake.requests == []
            status, _ = raw_request(server.port, "POST", "/v1/messages", headers, MESSAGE_BODY)
            assert status == 200
            assert [(r.method, r.path) for r in fake.requests] == [("POST", "/v1/messages")]
        finally:
            server.stop()


async def test_a_flood_of_invalid_hosts_on_v1_logs_one_line(fake_upstream, token, caplog, settings):
    settings.DISALLOWED_HOST_LOG_INTERVAL = 3600
    caplog.set_level(logging.WARNING, logger="django.security.DisallowedHost")
    for index in range(20):
        answer = await call_gateway(
            "POST", "/v1/messages", headers={**bearer(token), "host": f"evil-{index}.example"}, body=MESSAGE_BODY
        )
        assert answer.status == 400
    refused = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert len(refused) <= 1
    assert all(r.exc_info is None for r in refused)


async def test_forwarded_unknown_route_refuses_a_compressed_body_that_could_hide_its_model(fake_upstream, token, settings):
    import gzip

    settings.GATEWAY_FORWARD_UNKNOWN_ROUTES = True
    headers = {**bearer(token), "content-encoding": "gzip"}
    answer = await call_gateway("POST", "/v1/agents", headers=headers, body=gzip.compress(DISALLOWED_MODEL_BODY))
    assert error_of(answer) == (400, "invalid_request_error", "invalid_request")
    assert fake_upstream.requests == []
