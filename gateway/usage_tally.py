"""Usage as the upstream reports it, gathered from a JSON message or from the events of a stream.

Streams report usage twice or more: `message_start` carries the prompt side (and `output_tokens: 1`),
each `message_delta` carries cumulative counts that may also restate input and cache fields. The
rule (anthropic-api.md) is: the last value seen for each field wins, falling back to
`message_start`. Fields may be absent or null; anything that is not a non-negative integer is
ignored rather than trusted, since a malformed upstream body must not crash a worker.

Cache writes: the TTL split (`cache_creation.ephemeral_5m/1h_input_tokens`) says which rate each
written token takes, the total (`cache_creation_input_tokens`) how many were written. Written
tokens are never dropped: with no split they are all 5-minute writes; where the total is larger
than the split's sum (a split of zeros, or a partial one, in one object or across a stream's
events) the remainder is billed at the 5m rate, as the API's pricing rules say; where the split
sums to more than the total, the split is kept, since it names more written tokens.

What is read comes from a JSON parser, so an object is checked as a `dict`: `isinstance` against the
`Mapping` ABC costs a Python call, and made a sixtieth of a request's instructions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from usage.events import UsageEvent

BYTES_PER_TOKEN = 4  # English text and code run at 3.5-4.5 bytes per token on Claude's tokenizers


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class UsageTally:
    """The merged usage of one response, plus the model and message id the upstream named."""

    __slots__ = ("fields", "model", "message_id", "error_type", "seen", "content_bytes", "final_count_seen")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.model: str | None = None
        self.message_id: str | None = None
        self.error_type: str | None = None
        self.seen = False
        self.content_bytes = 0  # of a stream's text, thinking and tool-input deltas relayed so far
        self.final_count_seen = False  # a stream's message_delta, which carries its output count

    def merge(self, usage: object) -> None:
        """Fold one `usage` object in: every non-null field overrides what was seen before."""
        if not isinstance(usage, dict):
            return
        self.seen = True
        _merge_into(self.fields, usage)

    def observe_message(self, message: object) -> None:
        """A whole message object (a non-streaming reply, or `message_start.message`)."""
        if not isinstance(message, dict):
            return
        self.model = _text(message.get("model")) or self.model
        self.message_id = _text(message.get("id")) or self.message_id
        self.merge(message.get("usage"))

    def observe_error(self, envelope: object) -> None:
        if isinstance(envelope, dict) and isinstance(envelope.get("error"), dict):
            self.error_type = _text(envelope["error"].get("type")) or "api_error"

    def apply_to(self, event: UsageEvent) -> None:
        """Copy the counts into the usage event (cache writes split by TTL when the upstream says)."""
        fields = self.fields
        event.input_tokens = _count(fields.get("input_tokens")) or 0
        event.output_tokens = _count(fields.get("output_tokens")) or 0
        event.cache_read_tokens = _count(fields.get("cache_read_input_tokens")) or 0
        event.cache_write_5m_tokens, event.cache_write_1h_tokens, unsplit = cache_writes_of(fields)
        if unsplit:
            event.extra["cache_write_unsplit_tokens"] = unsplit
        tools = fields.get("server_tool_use")
        if isinstance(tools, dict):
            event.web_search_requests = _count(tools.get("web_search_requests")) or 0
            event.web_fetch_requests = _count(tools.get("web_fetch_requests")) or 0
        event.service_tier = _text(fields.get("service_tier"))
        event.speed = _text(fields.get("speed"))
        event.inference_geo = _text(fields.get("inference_geo"))
        if self.model:
            event.model = self.model
        if self.message_id:
            event.extra["message_id"] = self.message_id


def estimated_tokens(content_bytes: int) -> int:
    return (content_bytes + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def estimate_cut_stream_output(tally: UsageTally, event: UsageEvent) -> None:
    """A stream cut before its message_delta (client gone, upstream dropped, shutdown) reported only
    message_start's output count: the output relayed meanwhile is estimated from its bytes, as a
    crash checkpoint does, and marked as an estimate."""
    if tally.final_count_seen or not tally.content_bytes:
        return
    estimated = estimated_tokens(tally.content_bytes)
    if estimated > event.output_tokens:
        event.output_tokens = estimated
        event.extra["output_tokens_estimated"] = True


def cache_writes_of(fields: Mapping[str, Any]) -> tuple[int, int, int]:
    """(5m, 1h, unsplit) written tokens: the unsplit remainder of the total is already in the 5m count."""
    split = fields.get("cache_creation")
    five_minutes = (_count(split.get("ephemeral_5m_input_tokens")) if isinstance(split, dict) else None) or 0
    one_hour = (_count(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else None) or 0
    total = _count(fields.get("cache_creation_input_tokens")) or 0
    unsplit = max(total - five_minutes - one_hour, 0)
    return five_minutes + unsplit, one_hour, unsplit


def _merge_into(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if value is None:
            continue
        if isinstance(value, dict):
            nested = target.get(key)
            if not isinstance(nested, dict):
                nested = target[key] = {}
            _merge_into(nested, value)
        else:
            target[key] = value
