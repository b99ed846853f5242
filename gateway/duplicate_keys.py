"""Bodies that name a key twice in an object the gateway reads are refused.

The gateway reads `model`, `max_tokens`, `stream` and the prompt with orjson, which keeps a key's
last value; the body then goes upstream byte for byte. A parser that kept the first value (or
refused) would see another request than the one policy admitted: `{"model": "claude-opus-4-8", …,
"model": "claude-haiku-4-5"}` would pass a Haiku-only allowlist and run on Opus, and a second
`max_tokens` would escape the spend clamp. So the top level of a body, and every object of a batch
body (its requests and their params), must name each key once.

A full check costs a second, slower parse (about 2 µs a KB). The top-level check avoids it for
ordinary bodies: a key named twice appears twice as `"key"` in the raw bytes, unless spelled with
`\\u` escapes of printable ASCII, which encoders do not emit for letters; only when the top-level keys
appear more often than once each (a tool schema with a `model` property, say), or such an escape
is present, does the full parse decide.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from proxyproject.lib.errors import InvalidRequest

_PLAIN_KEY = re.compile(r"[a-z_]{1,64}")
_ASCII_ESCAPE = re.compile(rb"\\u00[2-7][0-9A-Fa-f]")
_MOST_KEYS_SCANNED = 32  # more top-level keys than the API has: the full parse decides


def _refusal(key: str) -> InvalidRequest:
    shown = key if _PLAIN_KEY.fullmatch(key) else "(a key)"
    return InvalidRequest(f"body: the key '{shown}' appears more than once in one object; send each key once.")


@lru_cache(maxsize=64)
def _top_level_pattern(keys: tuple[str, ...]) -> re.Pattern[bytes]:
    names = b"|".join(re.escape(key.encode()) for key in keys)
    return re.compile(b'"(?:' + names + b')"')


def _first_repeated(pairs: list[tuple[str, Any]]) -> str | None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return None


def _decode_with(body: bytes, hook: Callable[[list[tuple[str, Any]]], Any]) -> None:
    try:
        json.loads(body, object_pairs_hook=hook)
    except RecursionError:
        raise InvalidRequest("body: the JSON is nested too deeply.") from None


def _first_duplicate_at_top(body: bytes) -> str | None:
    """The JSON decoder calls the hook innermost object first, so its last call is the top level."""
    last: list[str | None] = [None]

    def remember(pairs: list[tuple[str, Any]]) -> None:
        last[0] = _first_repeated(pairs)

    _decode_with(body, remember)
    return last[0]


def refuse_duplicate_top_level_keys(body: bytes, parsed: dict[str, Any]) -> None:
    """Raise InvalidRequest when the body's top-level object names a key twice."""
    keys = tuple(sorted(parsed))
    if not keys:
        return
    if len(keys) <= _MOST_KEYS_SCANNED and all(_PLAIN_KEY.fullmatch(key) for key in keys):
        if len(_top_level_pattern(keys).findall(body)) == len(keys) and not _ASCII_ESCAPE.search(body):
            return
    duplicate = _first_duplicate_at_top(body)
    if duplicate is not None:
        raise _refusal(duplicate)


def refuse_duplicate_keys_anywhere(body: bytes) -> None:
    """Raise InvalidRequest when any object in the body names a key twice."""

    def refuse(pairs: list[tuple[str, Any]]) -> None:
        if (key := _first_repeated(pairs)) is not None:
            raise _refusal(key)

    _decode_with(body, refuse)
