"""Attack 6 of issue 13, headers: what a device sends besides Anthropic's API headers must not reach
the upstream. The fake upstream records exactly what it received."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import call_gateway, fake_upstream, fresh_breaker_and_pool, token  # noqa: F401  (the gateway tests' fixtures)
from tests.support import MASTER_KEY, MESSAGE_BODY

# Claude Code 2.1's headers on a model call, as captured through a proxy, with the SDK's own extras.
CLAUDE_CODE_HEADERS = {
    "accept": "application/json",
    "x-stainless-retry-count": "0",
    "x-stainless-timeout": "600",
    "x-stainless-lang": "js",
    "x-stainless-package-version": "0.74.0",
    "x-stainless-os": "MacOS",
    "x-stainless-arch": "x64",
    "x-stainless-runtime": "node",
    "x-stainless-runtime-version": "v22.16.0",
    "x-stainless-helper-method": "stream",
    "anthropic-dangerous-direct-browser-access": "true",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,context-1m-2025-08-07",
    "x-app": "cli",
    "user-agent": "claude-cli/2.1.69 (external, cli)",
    "content-type": "application/json",
    "x-claude-code-session-id": "b4e5aaaa-9a3e-47c4-84ad-3a70f38c676e",
    "x-client-request-id": "5d0e1f2a-0000-4000-8000-000000000001",
}
ROUTING_HEADERS = {
    "x-forwarded-for": "10.0.0.1",
    "x-forwarded-host": "internal.example",
    "x-forwarded-proto": "https",
    "x-forwarded-port": "8443",
    "forwarded": "for=10.0.0.1;host=internal.example;proto=https",
    "x-real-ip": "10.0.0.1",
}
# What the upstream connection adds itself, and the master key the gateway puts in.
TRANSPORT_HEADERS = {"host", "content-length", "accept-encoding", "x-api-key"}


@pytest.fixture
def default_allowlist(settings):
    """The setting as deployed: the test environment adds the fake's knobs, production adds nothing."""
    settings.UPSTREAM_EXTRA_REQUEST_HEADERS = ()


async def send(token: str, extra: dict[str, str]):
    headers = [("authorization", f"Bearer {token}"), *CLAUDE_CODE_HEADERS.items(), *extra.items()]
    return await call_gateway("POST", "/v1/messages", headers=headers, body=MESSAGE_BODY, query=b"beta=true")


async def test_only_anthropic_and_client_headers_reach_the_upstream(fake_upstream, token, default_allowlist):
    others = {
        "cookie": "sessionid=abc",
        "proxy-authorization": "Basic eDp5",
        "x-api-key": token,
        "accept-language": "*",
        "sec-fetch-mode": "cors",
        "x-team": "blue",
        "via": "1.1 corp-proxy",
        "accept-encoding": "gzip, br",
    }
    answer = await send(token, others)
    assert answer.status == 200
    [seen] = fake_upstream.requests
    assert set(seen.headers) == set(CLAUDE_CODE_HEADERS) | TRANSPORT_HEADERS
    assert {name: seen.headers[name] for name in CLAUDE_CODE_HEADERS} == CLAUDE_CODE_HEADERS
    assert (seen.headers["x-api-key"], seen.headers["accept-encoding"]) == ("***" + MASTER_KEY[-4:], "identity")


async def test_client_routing_headers_do_not_reach_the_upstream(fake_upstream, token, default_allowlist):
    answer = await send(token, ROUTING_HEADERS)
    assert answer.status == 200
    [seen] = fake_upstream.requests
    assert set(seen.headers) & set(ROUTING_HEADERS) == set()
    assert set(seen.headers) == set(CLAUDE_CODE_HEADERS) | TRANSPORT_HEADERS


async def test_client_organization_id_does_not_reach_the_upstream(fake_upstream, token, default_allowlist):
    answer = await send(token, {"anthropic-organization-id": "org-of-someone-else"})
    assert answer.status == 200
    [seen] = fake_upstream.requests
    assert "anthropic-organization-id" not in seen.headers
    assert seen.headers["anthropic-version"] == "2023-06-01"


async def test_fake_fault_header_does_not_reach_the_upstream(fake_upstream, token, default_allowlist):
    answer = await send(token, {"x-fake-fault": "529", "x-fake-stream": "events=2", "x-fake-usage": '{"output_tokens": 9}'})
    assert answer.status == 200
    [seen] = fake_upstream.requests
    assert not [name for name in seen.headers if name.startswith("x-fake-")]


async def test_operator_extra_headers_cross_but_never_routing_credentials_or_organization(fake_upstream, token, settings):
    settings.UPSTREAM_EXTRA_REQUEST_HEADERS = (
        "x-team",
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
        "anthropic-organization-id",
        "cookie",
        "authorization",
    )
    answer = await send(token, {**ROUTING_HEADERS, "x-team": "blue", "anthropic-organization-id": "org-x", "cookie": "a=b"})
    assert answer.status == 200
    [seen] = fake_upstream.requests
    assert set(seen.headers) == set(CLAUDE_CODE_HEADERS) | TRANSPORT_HEADERS | {"x-team"}
    assert seen.headers["x-team"] == "blue"


async def test_a_forwarded_header_the_client_names_in_connection_is_dropped(fake_upstream, token, default_allowlist):
    answer = await send(token, {"connection": "keep-alive, x-stainless-os", "keep-alive": "timeout=5"})
    assert answer.status == 200
    [seen] = fake_upstream.requests
    assert set(seen.headers) == set(CLAUDE_CODE_HEADERS) - {"x-stainless-os"} | TRANSPORT_HEADERS
