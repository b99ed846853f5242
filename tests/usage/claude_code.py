"""A request shaped like Claude Code's ordinary turn: Opus, max_tokens 64000, streaming, ~100 KB of
system prompt, tool schemas and a conversation with code, cache_control marks where Claude Code
puts them (the system prompt and the last message)."""

from __future__ import annotations

from typing import Any

import orjson

OPUS = "claude-opus-4-8"
CODE = '''def settle(reservation, actual):
    """Replace the reservation by what the request cost."""
    if actual is None:
        return reservation.amount
    return min(actual, reservation.amount) + max(actual - reservation.amount, 0)
'''
PROSE = (
    "You are an interactive command line tool that helps users with software engineering tasks. "
    "Use the instructions below and the tools available to you to assist the user. "
)


def _tool(index: int) -> dict[str, Any]:
    return {
        "name": f"Tool{index}",
        "description": f"Runs operation {index} on the workspace. " * 6,
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The absolute path to the file to modify"},
                "old_string": {"type": "string", "description": "The text to replace"},
                "new_string": {"type": "string", "description": "The text to replace it with"},
                "replace_all": {"type": "boolean", "default": False, "description": "Replace all occurrences"},
            },
            "required": ["file_path", "old_string", "new_string"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    }


def claude_code_request(size: int = 100_000, *, stream: bool = True, max_tokens: int = 64_000) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": OPUS,
        "max_tokens": max_tokens,
        "stream": stream,
        "system": [{"type": "text", "text": PROSE * 60, "cache_control": {"type": "ephemeral"}}],
        "tools": [_tool(index) for index in range(18)],
        "messages": [],
    }
    turn = 0
    while not body["messages"] or len(orjson.dumps(body)) < size:
        role = "user" if turn % 2 == 0 else "assistant"
        text = f"Please look at this file (turn {turn}):\n{CODE * 8}" if role == "user" else PROSE * 4 + CODE * 4
        body["messages"].append({"role": role, "content": [{"type": "text", "text": text}]})
        turn += 1
    if body["messages"][-1]["role"] == "assistant":
        body["messages"].append({"role": "user", "content": [{"type": "text", "text": "Go on."}]})
    body["messages"][-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return body


def claude_code_body(size: int = 100_000, *, stream: bool = True, max_tokens: int = 64_000) -> bytes:
    return orjson.dumps(claude_code_request(size, stream=stream, max_tokens=max_tokens))
