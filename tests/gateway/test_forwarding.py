"""What crosses the gateway in each direction: headers, query, body, status, and the usage seen."""

from __future__ import annotations

import gzip

import orjson
import pytest

from tests.gateway.conftest import bearer, call_gateway
from tests.support import MASTER_KEY, MESSAGE_BODY, STREAM_BODY


async def test_request_is_forwarded_byte_identical_with_the_master_key_and_without_client_credentials(
    fake_upstream, token, usage_events
):
    headers = [
        *bearer(token).items(),
        ("anthropic-beta", "context-1m-2025-08-07,fine-grained-tool-streaming-2025-05-14"),
        ("x-api-key", token),
        ("cookie", "sessionid=abc"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("x-claude-code-session-id", "sess-1"),
        ("accept-encoding", "gzip, br"),
    ]
    answer = await call_gateway("POST", "/v1/messages", headers=headers, body=MESSAGE_BODY, query=b"beta=true")
    assert answer.status == 200
    [seen] = fake_upstream.requests
    assert (seen.path, seen.query_string, seen.body) == ("/v1/messages", "beta=true", MESSAGE_BODY)
    assert seen.api_key_used == MASTER_KEY[-4:]
    assert seen.headers["x-api-key"] == "***" + MASTER_KEY[-4:]
    assert "authorization" not in seen.headers and "cookie" not in seen.headers
    assert not {"x-hop", "keep-alive", "connection"} & set(seen.headers)
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == "context-1m-2025-08-07,fine-grained-tool-streaming-2025-05-14"
    assert seen.headers["x-claude-code-session-id"] == "sess-1"
    assert seen.headers["accept-encoding"] == "identity"
    assert [event.session_id for event in usage_events] == ["sess-1"]


async def test_upstream_auth_header_can_be_a_bearer_authorization(fake_upstream, token, settings):
    settings.UPSTREAM_AUTH_HEADER = "authorization"
    answer = await call_gateway(
        "POST", "/v1/messages", headers={"x-api-key": token, "content-type": "application/json"}, body=MESSAGE_BODY
    )
    assert answer.status == 200
    [seen] = fake_upstream.requests
    assert seen.headers["authorization"] == "Bearer ***" + MASTER_KEY[-4:]
    assert "x-api-key" not in seen.headers


async def test_response_keeps_request_id_and_replaces_the_master_keys_rate_limits_with_the_devices(
    fake_upstream, token, settings
):
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
    [seen] = fake_upstream.requests
    headers = answer.headers
    assert headers["request-id"] == seen.request_id
    assert "anthropic-organization-id" not in headers
    assert answer.all("anthropic-ratelimit-requests-limit") == [str(settings.RATE_LIMIT_MAX)]
    assert answer.all("anthropic-ratelimit-requests-remaining") == [str(settings.RATE_LIMIT_MAX - 1)]
    assert not [name for name in headers if name.startswith("anthropic-ratelimit-") and "tokens" in name]
    assert headers["x-gateway-request-id"].startswith("req_gw_")
    assert len(answer.all("date")) == 0 and int(headers["content-length"]) == len(answer.body)
    assert orjson.loads(answer.body)["type"] == "message"


async def test_non_streaming_usage_is_read_from_the_reply(fake_upstream, token, usage_events):
    usage = '{"input_tokens": 1200, "output_tokens": 345, "cache_read_input_tokens": 5000, "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}}'
    await call_gateway("POST", "/v1/messages", headers=bearer(token, **{"x-fake-usage": usage}), body=MESSAGE_BODY)
    [event] = usage_events
    assert (event.status, event.streamed, event.model, event.upstream_key_name) == (
        200,
        False,
        "claude-sonnet-4-5",
        "ANTHROPIC_API_KEY",
    )
    assert (
        event.input_tokens,
        event.output_tokens,
        event.cache_read_tokens,
        event.cache_write_5m_tokens,
        event.cache_write_1h_tokens,
    ) == (1200, 345, 5000, 10, 20)


async def test_stream_is_relayed_unchanged_and_its_usage_read(fake_upstream, token, usage_events):
    answer = await call_gateway(
        "POST", "/v1/messages", headers=bearer(token, **{"x-fake-usage": '{"output_tokens": 77}'}), body=STREAM_BODY
    )
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    assert answer.body.startswith(b"event: message_start\n") and answer.body.endswith(
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    [event] = usage_events
    assert (event.streamed, event.output_tokens, event.client_disconnected, event.ttfb_ms is not None) == (True, 77, False, True)


@pytest.mark.parametrize("accept_encoding", ["gzip, deflate, br, zstd", None])
async def test_compression_is_identity_end_to_end_whatever_the_client_accepts(fake_upstream, token, accept_encoding):
    extra = {"accept-encoding": accept_encoding} if accept_encoding else {}
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token, **extra), body=STREAM_BODY)
    [seen] = fake_upstream.requests
    assert seen.headers["accept-encoding"] == "identity"
    assert "content-encoding" not in answer.headers
    assert answer.body.startswith(b"event: message_start")
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(answer.body)


async def test_catalogue_routes_pass_through_with_their_query(fake_upstream, token):
    models = await call_gateway("GET", "/v1/models", headers=bearer(token), query=b"limit=2")
    assert models.status == 200 and len(orjson.loads(models.body)["data"]) == 2
    assert [(r.method, r.path, r.query_string) for r in fake_upstream.requests] == [("GET", "/v1/models", "limit=2")]


async def test_unknown_routes_pass_through_when_the_operator_allows_them(fake_upstream, token, settings):
    settings.GATEWAY_FORWARD_UNKNOWN_ROUTES = True
    unknown = await call_gateway("DELETE", "/v1/skills/skill_123", headers=bearer(token), query=b"beta=true")
    assert unknown.status == 404 and orjson.loads(unknown.body)["error"]["type"] == "not_found_error"
    assert [(r.method, r.path, r.query_string) for r in fake_upstream.requests] == [
        ("DELETE", "/v1/skills/skill_123", "beta=true")
    ]


async def test_batch_results_url_points_at_the_gateway(fake_upstream, token, settings):
    body = orjson.dumps({"requests": [{"custom_id": "a", "params": orjson.loads(MESSAGE_BODY)}]})
    created = await call_gateway("POST", "/v1/messages/batches", headers=bearer(token), body=body)
    batch = orjson.loads(created.body)
    assert created.status == 200
    fetched = await call_gateway("GET", f"/v1/messages/batches/{batch['id']}", headers=bearer(token))
    listed = await call_gateway("GET", "/v1/messages/batches", headers=bearer(token))
    expected = f"{settings.PROXY_BASE_URL}/v1/messages/batches/{batch['id']}/results"
    assert orjson.loads(fetched.body)["results_url"] == expected
    assert orjson.loads(listed.body)["data"][0]["results_url"] == expected
    assert int(fetched.headers["content-length"]) == len(fetched.body)
    results = await call_gateway("GET", f"/v1/messages/batches/{batch['id']}/results", headers=bearer(token))
    assert results.status == 200 and orjson.loads(results.body.splitlines()[0])["custom_id"] == "a"
