"""Anthropic SDK clients from proxyclient, through a live gateway to the fake upstream: a long
session that crosses refreshes, the asyncio twin, and the 401 that makes the client renew once."""

from __future__ import annotations

import asyncio
import time

from fake_anthropic.request_log import last_four
from proxyclient import ProxyClient, ProxySession
from proxyclient.sdk import anthropic_client
from tests.proxyclient.conftest import FAKE_UPSTREAM_KEY, audit_kinds, client_config
from tests.support import poll_until
from tokens.models import AuditKind, Device
from tokens.revocation import revoke_device_tokens

MODEL = "claude-sonnet-5-5"
REPLY = "Hello! This is the fake Anthropic API answering your request with a short fixed reply."
QUESTION = [{"role": "user", "content": "Say hello"}]


class PresentedTokens(list):
    """SDK middleware placed after proxyclient's: records the token each attempt carries."""

    def __call__(self, request, call_next):
        self.append(request.headers["Authorization"].removeprefix("Bearer "))
        return call_next(request)


class AsyncPresentedTokens(list):
    async def __call__(self, request, call_next):
        self.append(request.headers["Authorization"].removeprefix("Bearer "))
        return await call_next(request)


def test_long_sdk_session_crosses_refreshes(short_lived_gateway, upstream, tmp_path):
    presented = PresentedTokens()
    proxy = ProxyClient(client_config(short_lived_gateway.url, tmp_path), announce=None).start()
    try:
        claude = proxy.anthropic(middleware=[presented], max_retries=0)
        deadline = time.monotonic() + 15
        replies = []
        while len(set(presented)) < 3 and time.monotonic() < deadline:
            replies.append(claude.messages.create(model=MODEL, max_tokens=32, messages=QUESTION).content[0].text)
            time.sleep(0.1)
        with claude.messages.stream(model=MODEL, max_tokens=32, messages=QUESTION) as stream:
            streamed = stream.get_final_text()
    finally:
        proxy.stop()
    assert len(set(presented)) >= 3
    assert replies == [REPLY] * len(replies) and streamed == REPLY
    kinds = audit_kinds(proxy.device_id)
    assert kinds[0] == AuditKind.BOOTSTRAP and set(kinds[1:]) == {AuditKind.REFRESH}
    assert {request.api_key_used for request in upstream.requests} == {last_four(FAKE_UPSTREAM_KEY)}
    assert len(upstream.requests) == len(presented)


async def test_async_sdk_session_crosses_a_refresh(short_lived_gateway, upstream, tmp_path):
    presented = AsyncPresentedTokens()
    proxy = await ProxyClient(client_config(short_lived_gateway.url, tmp_path), announce=None).astart()
    try:
        claude = proxy.async_anthropic(middleware=[presented], max_retries=0)
        deadline = time.monotonic() + 10
        while len(set(presented)) < 2 and time.monotonic() < deadline:
            message = await claude.messages.create(model=MODEL, max_tokens=32, messages=QUESTION)
            assert message.content[0].text == REPLY
            await asyncio.sleep(0.1)
    finally:
        await proxy.astop()
    assert len(set(presented)) >= 2


def test_token_the_gateway_calls_expired_is_renewed_once_and_the_request_retried(short_lived_gateway, upstream, tmp_path):
    """The local clock is set back 100 s after the token arrived, so the client believes the
    expired token is still good."""
    clock_change = [0.0]
    session = ProxySession(client_config(short_lived_gateway.url, tmp_path), clock=lambda: time.time() + clock_change[0])
    session.ensure_token()
    clock_change[0] = -100.0
    stale = session.grant
    poll_until(lambda: time.time() >= stale.expires_at + 1.0, 10, "the token to expire")
    presented = PresentedTokens()
    claude = anthropic_client(session, middleware=[presented], max_retries=0)
    message = claude.messages.create(model=MODEL, max_tokens=32, messages=QUESTION)
    session.close()
    assert message.content[0].text == REPLY
    assert presented == [stale.wrapper_token, session.grant.wrapper_token]
    assert presented[0] != presented[1]
    assert audit_kinds(session.device_id) == [AuditKind.BOOTSTRAP, AuditKind.REFRESH]


def test_revoked_token_mid_session_bootstraps_again_and_retries(gateway, upstream, tmp_path):
    presented = PresentedTokens()
    proxy = ProxyClient(client_config(gateway.url, tmp_path), announce=None).start()
    try:
        claude = proxy.anthropic(middleware=[presented], max_retries=0)
        assert claude.messages.create(model=MODEL, max_tokens=32, messages=QUESTION).content[0].text == REPLY
        revoke_device_tokens(device=Device.objects.get(device_id=proxy.device_id), actor="test")
        assert claude.messages.create(model=MODEL, max_tokens=32, messages=QUESTION).content[0].text == REPLY
    finally:
        proxy.stop()
    assert len(presented) == 3 and presented[0] == presented[1] != presented[2]
    assert audit_kinds(proxy.device_id) == [AuditKind.BOOTSTRAP, AuditKind.DEVICE_REVOKED, AuditKind.BOOTSTRAP]
