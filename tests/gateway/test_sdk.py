"""The official Anthropic SDK pointed at a live gateway (a real uvicorn process) in front of the fake
upstream, on real sockets: what the client sees, and what the upstream received."""

from __future__ import annotations

import anthropic
import httpx2
import orjson
import pytest

from fake_anthropic import FakeAnthropic
from fake_anthropic.usage import count_prompt_tokens
from tests.servers import gateway_process
from tests.support import MASTER_KEY, enroll

MODEL = "claude-sonnet-5"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


@pytest.fixture(scope="module")
def upstream():
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(upstream, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = gateway_process(ANTHROPIC_BASE_URL=upstream.base_url, ANTHROPIC_API_KEY=MASTER_KEY, LOG_LEVEL="debug").start()
    yield server
    server.stop()


@pytest.fixture
def fake(upstream, transactional_db):
    upstream.clear_requests()
    return upstream


class SentBodies:
    """What the SDK put on the wire (its own httpx2 client), to compare with what the upstream received."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx2.Request) -> None:
        self.bodies.append(request.read())


def sdk_client(gateway, token: str, sent: SentBodies | None = None, max_retries: int = 2) -> anthropic.Anthropic:
    hooks = {"request": [sent]} if sent else {}
    return anthropic.Anthropic(
        base_url=gateway.url, api_key=token, max_retries=max_retries, http_client=httpx2.Client(event_hooks=hooks)
    )


def test_create_reaches_upstream_byte_identical_with_the_master_key(gateway, fake):
    sent = SentBodies()
    client = sdk_client(gateway, enroll(gateway), sent)
    message = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello"}],
        extra_headers={"anthropic-beta": "context-1m-2025-08-07"},
    )
    assert message.content[0].text == "Hello! This is the fake Anthropic API answering your request with a short fixed reply."
    assert message.usage.output_tokens == 22
    [seen] = fake.requests
    assert seen.body == sent.bodies[0]
    assert (seen.method, seen.path, seen.query_string, seen.api_key_used) == ("POST", "/v1/messages", "", MASTER_KEY[-4:])
    assert "authorization" not in seen.headers
    assert (seen.headers["anthropic-version"], seen.headers["anthropic-beta"]) == ("2026-10-21", "context-1m-2025-08-07")
    assert seen.headers["user-agent"] == "Anthropic/Python 2.14.0"


def test_stream_of_text_arrives_as_the_sdk_expects(gateway, fake):
    client = sdk_client(gateway, enroll(gateway))
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello"}],
        extra_headers={"x-fake-usage": '{"input_tokens": 900, "output_tokens": 33}'},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello! This is the fake Anthropic API answering your request with a short fixed reply."
    assert (final.usage.input_tokens, final.usage.output_tokens, final.stop_reason) == (900, 33, "end_turn")


def test_stream_of_tool_use_assembles_its_input(gateway, fake):
    client = sdk_client(gateway, enroll(gateway))
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    [block] = final.content
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "fake", "days": 1})
    assert final.stop_reason == "tool_use"


def test_count_tokens_and_models(gateway, fake):
    client = sdk_client(gateway, enroll(gateway))
    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Say hello"}])
    models = client.models.list(limit=3)
    assert counted.input_tokens == count_prompt_tokens(orjson.loads(fake.requests[0].body)) > 0
    assert len(models.data) == 3 and all(model.type == "model" for model in models.data)
    assert [(r.path, r.query_string) for r in fake.requests] == [("/v1/messages/count_tokens", ""), ("/v1/models", "limit=3")]


def test_upstream_overload_surfaces_as_the_sdks_overloaded_error_after_its_retries(gateway, fake):
    client = sdk_client(gateway, enroll(gateway), max_retries=2)
    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}], extra_headers={"x-fake-fault": "529"}
        )
    assert caught.value.status_code == 529
    assert len(fake.requests) == 3


def test_a_gateway_refusal_is_not_retried_and_never_reaches_upstream(gateway, fake):
    client = sdk_client(gateway, enroll(gateway, allowed_models="claude-haiku-*"), max_retries=2)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["details"]["error_code"] == "model_not_allowed"
    forged = sdk_client(gateway, "forged-token", max_retries=2)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        forged.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert fake.requests == []
    assert MASTER_KEY not in gateway.log()
