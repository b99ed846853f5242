"""Reading usage from a Server-Sent Events stream while relaying it, one network chunk at a time.

Network chunks do not align with events: one event may span chunks and a chunk may hold several.
The relay hands the client every complete event as soon as its last byte arrives, untouched, and
keeps only the unfinished tail of the last one. Holding that tail back (usually nothing: the API
writes whole events) is what lets a stream that breaks mid-event still end with a well-formed
`event: error` instead of half an event glued to the error.

Only the events that carry usage (`message_start`, `message_delta`) or an error are decoded; the
bulk of a stream (`content_block_delta`) is passed on without being parsed, only measured: the
length of the text, thinking or tool-input JSON it carries is what a crash-safe checkpoint estimates
the output so far from, since the upstream reports output tokens only at the end.
"""

from __future__ import annotations

import re

import orjson

from gateway.usage_tally import UsageTally

_INTERESTING = (b"message_start", b"message_delta", b"error")
_CONTENT_DELTA = b"content_block_delta"
# The string value of a delta's text, thinking or partial JSON, as it stands in the data line (escapes
# included: a few bytes more than the text, never less). One scan of the block, no JSON decoding.
_DELTA_TEXT = re.compile(rb'"(?:text|thinking|partial_json)":"([^"\\]*(?:\\.[^"\\]*)*)"')
# A stream whose events never end (not really SSE) is passed on rather than held without bound.
MAX_HELD_BYTES = 1024 * 1024


def _last_event_end(data: bytes) -> int:
    """The offset just past the last blank line in `data` (an event boundary), or 0."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    if lf < 0 and crlf < 0:
        return 0
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


class SseRelay:
    """Splits upstream bytes into whole events for the client and tallies usage on the way."""

    __slots__ = ("tally", "_held")

    def __init__(self, tally: UsageTally) -> None:
        self.tally = tally
        self._held = b""

    @property
    def content_bytes(self) -> int:
        """Of the content deltas relayed so far (kept on the tally, which estimates a cut stream's output from it)."""
        return self.tally.content_bytes

    def _measure_content(self, block: bytes) -> None:
        for match in _DELTA_TEXT.finditer(block):
            self.tally.content_bytes += match.end(1) - match.start(1)

    @property
    def holds_partial_event(self) -> bool:
        return bool(self._held)

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send to the client now: every event completed by this chunk."""
        data = self._held + chunk if self._held else chunk
        end = _last_event_end(data)
        if end == 0:
            if len(data) > MAX_HELD_BYTES:
                self._held = b""
                return data
            self._held = data
            return b""
        complete = data[:end]
        self._held = data[end:]
        if _CONTENT_DELTA in complete:
            self._measure_content(complete)
        # _INTERESTING spelled out: no generator per chunk
        if b"message_start" in complete or b"message_delta" in complete or b"error" in complete:
            self._read_events(complete)
        return complete

    def finish(self) -> bytes:
        """At a clean end of the stream: whatever is left (a last event without its blank line)."""
        rest, self._held = self._held, b""
        if rest:
            self._read_events(rest)
        return rest

    def _read_events(self, block: bytes) -> None:
        for raw_event in block.replace(b"\r\n", b"\n").split(b"\n\n"):
            if raw_event:
                self._read_event(raw_event)

    def _read_event(self, raw_event: bytes) -> None:
        name = b""
        data_lines: list[bytes] = []
        for line in raw_event.split(b"\n"):
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"event":
                name = value
            elif field == b"data":
                data_lines.append(value)
        if name not in _INTERESTING or not data_lines:
            return
        try:
            payload = orjson.loads(b"\n".join(data_lines))
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        if name == b"message_start":
            self.tally.observe_message(payload.get("message"))
        elif name == b"message_delta":
            self.tally.merge(payload.get("usage"))
            self.tally.final_count_seen = True
        else:
            self.tally.observe_error(payload)
