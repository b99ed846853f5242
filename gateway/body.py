"""The request body: read within the size limit, and the few fields policy needs.

The body is forwarded byte for byte; only `model`, `stream` and `max_tokens` are read from it (and
each request's `params.model` and `params.max_tokens` in a batch), with orjson, so a key named twice
where they are read is refused (`gateway/duplicate_keys.py`), and so is a `max_tokens` that is not a
JSON integer (`usage.spend_estimate.requested_max_tokens`). Malformed JSON on an endpoint that takes
JSON is refused here, before anything goes upstream. On a route outside the table (forwarded only
when an operator allows it) nothing is known of the body: a JSON object that names a model has
that model checked, anything else passes as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.channel import Receive
from gateway.duplicate_keys import refuse_duplicate_keys_anywhere, refuse_duplicate_top_level_keys
from gateway.routes import Route, RoutePolicy
from proxyproject.lib.errors import InvalidRequest, RequestTooLarge
from tokens.identifiers import require_clean_identifier
from usage.spend_estimate import requested_max_tokens

MESSAGES_PATH = "/v1/messages"
BATCHES_PATH = "/v1/messages/batches"


class ClientDisconnected(Exception):
    """The client went away while its request body was still arriving."""


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """What policy needs from a body: the models it names, whether it streams, its output bound."""

    model: str | None = None
    stream: bool = False
    max_tokens: int = 0
    batch_models: tuple[str, ...] = ()
    parsed: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # the body, for the spend estimate

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model, *self.batch_models) if self.model else self.batch_models


NO_SUMMARY = RequestSummary()


def too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"Request body exceeds the maximum of {limit} bytes.")


def check_declared_length(content_length: bytes | None, limit: int) -> None:
    """Refuse before reading when the client announces a body over the limit."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise InvalidRequest("content-length is not a number.") from None
    if declared > limit:
        raise too_large(limit)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, refusing it as soon as it grows past `limit` (chunked uploads included)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("There was an error parsing the body of your request. Please check that it is valid JSON.") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("body: Input should be a valid dictionary")
    return parsed


def check_body_readable(route: Route, content_encoding: bytes | None) -> None:
    """A route outside the table has its model checked only if the gateway can read its body: a
    compressed body could hide the model it names, so it is refused there."""
    if (
        route.spec.policy is RoutePolicy.UNKNOWN_FORWARDED
        and content_encoding
        and content_encoding.strip().lower() != b"identity"
    ):
        raise InvalidRequest("content-encoding: routes outside the gateway's route table take uncompressed bodies only.")


def summarize_body(route: Route, body: bytes) -> RequestSummary:
    """Read what policy needs; raises InvalidRequest for a body the API would refuse as unreadable."""
    spec = route.spec
    if not spec.reads_model:
        return NO_SUMMARY
    if spec.policy is RoutePolicy.UNKNOWN_FORWARDED:
        return _summarize_unknown(body)
    parsed = _parse_object(body)
    if spec.pattern == BATCHES_PATH:
        refuse_duplicate_keys_anywhere(body)
        return _summarize_batch(parsed)
    refuse_duplicate_top_level_keys(body, parsed)
    model = parsed.get("model")
    if model is None and spec.pattern == MESSAGES_PATH:
        raise InvalidRequest("model: Field required")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("model: Input should be a valid string")
    require_clean_identifier(model, field="model")
    return RequestSummary(
        model=model, stream=parsed.get("stream") is True, max_tokens=requested_max_tokens(parsed), parsed=parsed
    )


def _summarize_unknown(body: bytes) -> RequestSummary:
    """A model named by a JSON object body must pass the allowlist; one that is not a string
    cannot be checked, so it is refused rather than let through."""
    if not body.lstrip().startswith(b"{"):
        return NO_SUMMARY
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return NO_SUMMARY
    model = parsed.get("model") if isinstance(parsed, dict) else None
    if model is None:
        return NO_SUMMARY
    refuse_duplicate_top_level_keys(body, parsed)
    if not isinstance(model, str):
        raise InvalidRequest("model: Input should be a valid string")
    require_clean_identifier(model, field="model")
    return RequestSummary(model=model, stream=parsed.get("stream") is True, max_tokens=requested_max_tokens(parsed))


def _summarize_batch(parsed: dict[str, Any]) -> RequestSummary:
    requests = parsed.get("requests")
    if not isinstance(requests, list):
        return NO_SUMMARY
    models: list[str] = []
    for index, item in enumerate(requests):
        params = item.get("params") if isinstance(item, dict) else None
        if isinstance(params, dict):
            requested_max_tokens(params, field=f"requests.{index}.params.max_tokens")
        model = params.get("model") if isinstance(params, dict) else None
        if isinstance(model, str) and model not in models:
            require_clean_identifier(model, field="requests.params.model")
            models.append(model)
    return RequestSummary(batch_models=tuple(models))
