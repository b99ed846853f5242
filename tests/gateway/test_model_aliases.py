"""Model aliases on the request path: applied before the allowlist, the served model sent upstream
and recorded beside the one asked for."""

from __future__ import annotations

import orjson
import pytest
from asgiref.sync import sync_to_async

from tests.gateway.conftest import bearer, call_gateway
from tests.support import enroll_device
from tokens.models import Device, Organization
from tokens.revocation import policy_changed

OPUS_TO_SONNET = "claude-opus-* = claude-sonnet-4-5"


def body_for(model: str, **fields: object) -> bytes:
    return orjson.dumps({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], **fields})


def models_sent(fake) -> list[str]:
    return [orjson.loads(seen.body)["model"] for seen in fake.requests if seen.path == "/v1/messages"]


def put_in_organization(token_device: str, **org_fields: object) -> None:
    organization = Organization.objects.create(name=f"org-{token_device}", **org_fields)
    device = Device.objects.get(device_id=token_device)
    device.organization = organization
    device.save()
    policy_changed(device=device)


async def test_claude_codes_default_model_is_served_by_the_alias_for_a_device_limited_to_sonnet(
    transactional_db, fake_upstream, usage_events
):
    events = usage_events
    token = await enroll_device(allowed_models="claude-sonnet-*", model_aliases=OPUS_TO_SONNET)
    answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body_for("claude-opus-4-8", stream=False))
    assert answer.status == 200
    assert orjson.loads(answer.body)["model"] == "claude-sonnet-4-5"
    assert models_sent(fake_upstream) == ["claude-sonnet-4-5"]
    [event] = events
    assert (event.model, event.requested_model) == ("claude-sonnet-4-5", "claude-opus-4-8")


async def test_a_model_no_alias_matches_goes_as_asked_and_records_no_requested_model(
    transactional_db, fake_upstream, usage_events
):
    events = usage_events
    token = await enroll_device(model_aliases=OPUS_TO_SONNET)
    raw = b'{"model":"claude-haiku-4-5",  "max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=raw)).status == 200
    assert [seen.body for seen in fake_upstream.requests] == [raw]  # byte for byte: nothing re-encoded
    assert (events[0].model, events[0].requested_model) == ("claude-haiku-4-5", None)


@pytest.mark.parametrize(
    ("device_rules", "served"),
    [("", "claude-sonnet-4-5"), ("claude-opus-4-8 = claude-haiku-4-5", "claude-haiku-4-5")],
)
async def test_the_organizations_aliases_apply_after_the_devices_own(transactional_db, fake_upstream, device_rules, served):
    token = await enroll_device(model_aliases=device_rules)
    device_id = (
        await Device.objects.filter(model_aliases=device_rules)
        .order_by("-created_at")
        .values_list("device_id", flat=True)
        .afirst()
    )
    await sync_to_async(put_in_organization)(device_id, model_aliases=OPUS_TO_SONNET)
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(token), body=body_for("claude-opus-4-8"))).status == 200
    assert models_sent(fake_upstream) == [served]


async def test_count_tokens_is_aliased_too(transactional_db, fake_upstream):
    token = await enroll_device(allowed_models="claude-sonnet-*", model_aliases=OPUS_TO_SONNET)
    body = orjson.dumps({"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "hi"}]})
    answer = await call_gateway("POST", "/v1/messages/count_tokens", headers=bearer(token), body=body)
    assert answer.status == 200
    [seen] = fake_upstream.requests
    assert orjson.loads(seen.body)["model"] == "claude-sonnet-4-5"
