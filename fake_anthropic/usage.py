"""Deterministic token counts, prompt caching, and the `x-fake-usage` override.

Counts are about one token per four bytes of JSON, so a test can predict them from its own
request. Prompt caching follows the API's rules closely enough to exercise the gateway's
accounting: everything up to the last `cache_control` breakpoint is written to the cache the first
time, and read from it while its TTL lasts; a later request whose prefix matches an earlier
breakpoint (a conversation that grew) reads that part and writes the rest. The 5m/1h split comes
from the `ttl` of the breakpoint that closes each cached segment.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import invalid_request

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
MAX_REMEMBERED_PREFIXES = 100_000

# The part of `usage` that `message_start` carries; the rest travels in `message_delta`.
MESSAGE_START_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
)
MESSAGE_START_TRAILING_FIELDS = ("service_tier", "speed", "inference_geo")
MESSAGE_DELTA_CUMULATIVE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def tokens_in_bytes(size: int) -> int:
    return max(1, (size + 3) // 4)


def tokens_in_text(text: str) -> int:
    return tokens_in_bytes(len(text.encode()))


@dataclass(frozen=True, slots=True)
class PromptTokens:
    uncached: int  # billed as `input_tokens`
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0

    @property
    def total(self) -> int:
        return self.uncached + self.cache_read + self.cache_write_5m + self.cache_write_1h


def prompt_pieces(body: Mapping[str, Any]) -> Iterator[Any]:
    """The prompt in the order the API caches it: tools, then system, then message content."""
    tools = body.get("tools")
    if isinstance(tools, list):
        yield from tools
    system = body.get("system")
    if isinstance(system, list):
        yield from system
    elif system:
        yield system
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else message
            if isinstance(content, list):
                yield from content
            else:
                yield content


def breakpoint_ttl(piece: Any) -> str | None:
    if isinstance(piece, dict):
        cache_control = piece.get("cache_control")
        if isinstance(cache_control, dict):
            return "1h" if cache_control.get("ttl") == "1h" else "5m"
    return None


def piece_bytes(piece: Any) -> bytes:
    """The piece without its `cache_control`: a marker costs no tokens, and a breakpoint moves as a
    conversation grows, so neither counts nor cache keys may depend on where it sits."""
    if isinstance(piece, dict) and "cache_control" in piece:
        piece = {key: value for key, value in piece.items() if key != "cache_control"}
    return orjson.dumps(piece)


class PromptCache:
    """Prefix hashes written by earlier requests, with their expiry (monotonic seconds)."""

    def __init__(self) -> None:
        self._expiries: dict[bytes, float] = {}

    def is_live(self, key: bytes, now: float) -> bool:
        expiry = self._expiries.get(key)
        return expiry is not None and expiry > now

    def remember(self, key: bytes, ttl: str, now: float) -> None:
        self._expiries.pop(key, None)  # re-insert at the end: the dict's order is oldest-first
        self._expiries[key] = now + TTL_SECONDS[ttl]
        if len(self._expiries) > MAX_REMEMBERED_PREFIXES:
            del self._expiries[next(iter(self._expiries))]

    def clear(self) -> None:
        self._expiries.clear()


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    """What `count_tokens` answers: the whole prompt, cached or not."""
    return sum(tokens_in_bytes(len(piece_bytes(piece))) for piece in prompt_pieces(body))


def split_prompt_tokens(body: Mapping[str, Any], cache: PromptCache) -> PromptTokens:
    """Split the prompt into uncached input, cache reads and cache writes, and update `cache`."""
    pieces = list(prompt_pieces(body))
    encoded = [piece_bytes(piece) for piece in pieces]
    counts = [tokens_in_bytes(len(piece)) for piece in encoded]
    breakpoints = [(index, ttl) for index, piece in enumerate(pieces) if (ttl := breakpoint_ttl(piece))]
    automatic = breakpoint_ttl(body)  # a request-level `cache_control` marks the last block
    if automatic and pieces:
        breakpoints.append((len(pieces) - 1, automatic))
    if not breakpoints:
        return PromptTokens(uncached=sum(counts))

    last = max(index for index, _ in breakpoints)
    hasher = hashlib.blake2b(str(body.get("model")).encode(), digest_size=16)
    prefix_keys = []
    for piece in encoded[: last + 1]:
        hasher.update(piece)
        prefix_keys.append(hasher.digest())

    now = time.monotonic()
    read_through = -1
    for index in range(last, -1, -1):
        if cache.is_live(prefix_keys[index], now):
            read_through = index
            break

    written = {"5m": 0, "1h": 0}
    segment_start = read_through + 1
    for index, ttl in sorted(breakpoints):
        if index >= segment_start:
            written[ttl] += sum(counts[segment_start : index + 1])
            segment_start = index + 1
        cache.remember(prefix_keys[index], ttl, now)
    return PromptTokens(
        uncached=sum(counts[last + 1 :]),
        cache_read=sum(counts[: read_through + 1]),
        cache_write_5m=written["5m"],
        cache_write_1h=written["1h"],
    )


def build_usage(prompt: PromptTokens, output_tokens: int, *, service_tier: str = "standard") -> dict[str, Any]:
    return {
        "input_tokens": prompt.uncached,
        "cache_creation_input_tokens": prompt.cache_write_5m + prompt.cache_write_1h,
        "cache_read_input_tokens": prompt.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": prompt.cache_write_5m,
            "ephemeral_1h_input_tokens": prompt.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": service_tier,
    }


def parse_usage_override(header_value: str) -> dict[str, Any]:
    try:
        override = orjson.loads(header_value)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"x-fake-usage: not valid JSON ({exc})") from exc
    if not isinstance(override, dict):
        raise invalid_request("x-fake-usage: expected a JSON object")
    return override


def apply_usage_override(usage: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Fields of `override` replace computed ones; the cache total and its TTL split stay consistent.

    Given only the split, the total is its sum; given only the total, it is all 5m writes (how the
    API bills a write with no split).
    """
    merged = {**usage, **override}
    split = override.get("cache_creation")
    if "cache_creation_input_tokens" not in override and isinstance(split, dict):
        merged["cache_creation_input_tokens"] = sum(
            split.get(bucket) or 0 for bucket in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
        )
    elif "cache_creation" not in override and "cache_creation_input_tokens" in override:
        merged["cache_creation"] = {
            "ephemeral_5m_input_tokens": override["cache_creation_input_tokens"],
            "ephemeral_1h_input_tokens": 0,
        }
    return merged


def message_start_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """`message_start` carries the prompt side and `output_tokens: 1`, as the API sends it."""
    start = {field: usage[field] for field in MESSAGE_START_FIELDS if field in usage}
    start["output_tokens"] = 1
    start.update((field, usage[field]) for field in MESSAGE_START_TRAILING_FIELDS if field in usage)
    return start


def message_delta_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """`message_delta` carries cumulative counts and whatever else (server tools, details)."""
    delta = {field: usage[field] for field in MESSAGE_DELTA_CUMULATIVE_FIELDS if field in usage}
    start_only = set(MESSAGE_START_FIELDS) | set(MESSAGE_START_TRAILING_FIELDS)
    delta.update((field, value) for field, value in usage.items() if field not in start_only and field not in delta)
    return delta
