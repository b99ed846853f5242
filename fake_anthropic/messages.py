"""The reply to a Messages request, as a JSON message or as the SSE events that spell it.

The reply is fixed text, or a `tool_use` block when the request has `tools` and either forces one
(`tool_choice` of type `tool` or `any`) or its last user message says "use tool". The tool input
is an example built from the tool's `input_schema`, so the streamed `input_json_delta` pieces
assemble into an object a test can predict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import invalid_request
from .ids import new_id
from .usage import message_delta_usage, message_start_usage, tokens_in_text

REPLY_WORDS = "Hello! This is the fake Anthropic API answering your request with a short fixed reply.".split(" ")
WORDS_PER_DEFAULT_DELTA = 3
TOOL_JSON_PIECE_CHARS = 12
USE_TOOL_PHRASE = "use tool"
EXAMPLE_VALUE_BY_JSON_TYPE: dict[str, Any] = {
    "string": "fake",
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}


@dataclass(frozen=True, slots=True)
class TextBlock:
    pieces: tuple[str, ...]  # one `text_delta` each

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def as_content(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(frozen=True, slots=True)
class ToolUseBlock:
    id: str
    name: str
    input: dict[str, Any]

    @property
    def input_json(self) -> str:
        return orjson.dumps(self.input).decode()

    def as_content(self) -> dict[str, Any]:
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input}


ContentBlock = TextBlock | ToolUseBlock


@dataclass(frozen=True, slots=True)
class Reply:
    message_id: str
    model: Any  # echoed as sent
    blocks: tuple[ContentBlock, ...]
    stop_reason: str
    output_tokens: int


REQUIRED_FIELDS = (("model", str, "string"), ("max_tokens", int, "integer"), ("messages", list, "list"))


def check_messages_request(body: Any, *, require_max_tokens: bool = True, location: str = "") -> None:
    """The API's light validation: required fields and their JSON types, never roles or blocks."""
    if not isinstance(body, dict):
        raise invalid_request(f"{location or 'body'}: Input should be a valid dictionary")
    for field, kind, kind_name in REQUIRED_FIELDS:
        if field == "max_tokens" and not require_max_tokens:
            continue
        if field not in body:
            raise invalid_request(f"{location}{field}: Field required")
        value = body[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise invalid_request(f"{location}{field}: Input should be a valid {kind_name}")


def last_user_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                block["text"]
                for block in content
                if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
            )
        return ""
    return ""


def example_tool_input(tool: Mapping[str, Any]) -> dict[str, Any]:
    schema = tool.get("input_schema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {}
    example = {}
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        enum = spec.get("enum")
        example[name] = enum[0] if isinstance(enum, list) and enum else EXAMPLE_VALUE_BY_JSON_TYPE.get(spec.get("type"), "fake")
    return example


def chosen_tool(body: Mapping[str, Any], user_text: str) -> tuple[Mapping[str, Any] | None, bool]:
    """The tool to call and whether `tool_choice` forced it (a forced call has no text before it)."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None, False
    named_tools = [tool for tool in tools if isinstance(tool, dict) and isinstance(tool.get("name"), str)]
    if not named_tools:
        return None, False
    choice = body.get("tool_choice")
    choice_type = choice.get("type") if isinstance(choice, dict) else None
    if choice_type == "tool":
        name = choice.get("name")
        return next((tool for tool in named_tools if tool["name"] == name), {"name": str(name)}), True
    if choice_type == "any":
        return named_tools[0], True
    if choice_type != "none" and USE_TOOL_PHRASE in user_text.lower():
        return named_tools[0], False
    return None, False


def text_pieces(text_deltas: int | None) -> list[str]:
    if text_deltas is None:
        words = [word + " " for word in REPLY_WORDS[:-1]] + [REPLY_WORDS[-1]]
        step = WORDS_PER_DEFAULT_DELTA
        return ["".join(words[start : start + step]) for start in range(0, len(words), step)]
    return [REPLY_WORDS[index % len(REPLY_WORDS)] + " " for index in range(text_deltas)]


def truncate_to_budget(pieces: Sequence[str], max_tokens: int) -> tuple[tuple[str, ...], bool]:
    """Cut the text where `max_tokens` runs out, as the model would stop; True when it was cut."""
    budget = max_tokens * 4
    kept: list[str] = []
    for piece in pieces:
        if len(piece) >= budget:
            kept.append(piece[:budget])
            return tuple(kept), len(piece) > budget or len(kept) < len(pieces)
        kept.append(piece)
        budget -= len(piece)
    return tuple(kept), False


def plan_reply(body: Mapping[str, Any], *, text_deltas: int | None = None) -> Reply:
    user_text = last_user_text(body)
    tool, forced = chosen_tool(body, user_text)
    blocks: list[ContentBlock] = []
    stop_reason = "end_turn"
    if tool is None:
        max_tokens = body.get("max_tokens")
        pieces, cut = truncate_to_budget(
            text_pieces(text_deltas), max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 1
        )
        blocks.append(TextBlock(pieces))
        stop_reason = "max_tokens" if cut else "end_turn"
    else:
        if not forced:
            blocks.append(TextBlock((f"I'll use the {tool['name']} tool.",)))
        blocks.append(ToolUseBlock(new_id("toolu_01"), tool["name"], example_tool_input(tool)))
        stop_reason = "tool_use"
    output_tokens = sum(tokens_in_text(block.text if isinstance(block, TextBlock) else block.input_json) for block in blocks)
    return Reply(new_id("msg_01"), body.get("model"), tuple(blocks), stop_reason, output_tokens)


def message_object(reply: Reply, usage: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": reply.message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [block.as_content() for block in reply.blocks],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def sse_event(name: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


PING_EVENT = sse_event("ping", {"type": "ping"})
MESSAGE_STOP_EVENT = sse_event("message_stop", {"type": "message_stop"})


@dataclass(frozen=True, slots=True)
class EventStream:
    events: list[bytes]
    midpoint: int  # a broken stream stops after this many events: some deltas, no end


def block_events(index: int, block: ContentBlock) -> list[bytes]:
    if isinstance(block, TextBlock):
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in block.pieces]
    else:
        start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
        json_text = block.input_json
        deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
            {"type": "input_json_delta", "partial_json": json_text[offset : offset + TOOL_JSON_PIECE_CHARS]}
            for offset in range(0, len(json_text), TOOL_JSON_PIECE_CHARS)
        ]
    return [
        sse_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
        *(sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas),
        sse_event("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def stream_events(reply: Reply, usage: Mapping[str, Any]) -> EventStream:
    start_message = {**message_object(reply, message_start_usage(usage)), "content": [], "stop_reason": None}
    events = [sse_event("message_start", {"type": "message_start", "message": start_message})]
    midpoint = 0
    for index, block in enumerate(reply.blocks):
        block_bytes = block_events(index, block)
        if index == 0:
            events.append(block_bytes[0])
            events.append(PING_EVENT)
            deltas = len(block_bytes) - 2
            midpoint = len(events) + max(1, deltas // 2)
            events.extend(block_bytes[1:])
        else:
            events.extend(block_bytes)
    events.append(
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                "usage": message_delta_usage(usage),
            },
        )
    )
    events.append(MESSAGE_STOP_EVENT)
    return EventStream(events, midpoint)
