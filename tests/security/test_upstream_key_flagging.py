"""A device tries to take the gateway's good upstream keys out of rotation by making the upstream
refuse its own requests: a refusal is pinned on a key only when the key's own check (which carries
nothing of the client's) is refused too."""

from __future__ import annotations

import orjson
from asgiref.sync import sync_to_async

from gateway.models import UpstreamKey
from gateway.upstream_keys import add_upstream_key
from tests.gateway.conftest import bearer, call_gateway
from tests.support import MASTER_KEY, enroll_device

SECOND = "sk-ant-api03-second-" + "s" * 30 + "S3C0"


def prompt(text: str) -> bytes:
    return orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": text}]})


async def two_good_keys(fake_upstream) -> None:
    fake_upstream.set_api_keys({MASTER_KEY, SECOND})
    await sync_to_async(add_upstream_key)(name="second", secret=SECOND, actor="test")


async def test_a_prompt_that_makes_the_upstream_answer_401_flags_no_key(fake_upstream, token):
    await two_good_keys(fake_upstream)
    for _ in range(6):
        answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=prompt("FAKE_FAULT:401"))
        error = orjson.loads(answer.body)["error"]
        assert (answer.status, error["type"], error["details"]["error_code"]) == (503, "api_error", "upstream_auth_failed")
    assert not await UpstreamKey.objects.filter(flagged_at__isnull=False).aexists()
    other = await enroll_device()
    assert [(await call_gateway("POST", "/v1/messages", headers=bearer(other), body=prompt("hi"))).status for _ in range(4)] == [
        200
    ] * 4


async def test_prompts_that_make_the_upstream_answer_403_flag_no_key(fake_upstream, token):
    await two_good_keys(fake_upstream)
    statuses = [
        (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=prompt("FAKE_FAULT:403"))).status
        for _ in range(12)
    ]
    assert statuses == [403] * 12
    assert not await UpstreamKey.objects.filter(flagged_at__isnull=False).aexists()
    checks = [seen for seen in fake_upstream.requests if seen.path == "/v1/models"]
    assert len(checks) <= 2  # one per key at most: a trusted key is not checked again
