"""An alias cannot carry a device past its allowlist: the served model is the one checked."""

from __future__ import annotations

import orjson

from tests.gateway.conftest import bearer, call_gateway
from tests.support import enroll_device


async def test_an_alias_to_a_model_outside_the_allowlist_is_refused_and_nothing_goes_upstream(transactional_db, fake_upstream):
    token = await enroll_device(allowed_models="claude-haiku-*", model_aliases="claude-haiku-* = claude-opus-4-1")
    body = orjson.dumps({"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body)
    error = orjson.loads(answer.body)["error"]
    assert (answer.status, error["details"]["error_code"]) == (403, "model_not_allowed")
    assert "claude-opus-4-1" in error["message"]
    assert fake_upstream.requests == []
