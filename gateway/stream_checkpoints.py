"""Checkpoints of a stream's usage while it is relayed, so that a process that dies mid-stream
(SIGKILL, out of memory, a host lost) still leaves a record of the tokens it had relayed.

The first checkpoint goes out with the stream's first events (`message_start`: the input and cache
tokens, which the upstream bills whatever happens next); later ones once USAGE_CHECKPOINT_TOKENS
more output tokens have been relayed, or USAGE_CHECKPOINT_SECONDS have passed with some new output.
Each is queued before the events it counts are written to the client, so at any moment at most
that many tokens (or that many seconds' worth) have been relayed without a checkpoint.

The upstream reports output tokens only at the end of a stream, so a checkpoint estimates them from
the content relayed so far: one token per four bytes of text, thinking or tool-input JSON, or the
count the upstream reported if that is higher. The writer keeps the last checkpoint until the
stream's final record replaces it (`usage.open_streams`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from django.conf import settings

from gateway.sse import SseRelay
from gateway.usage_tally import estimated_tokens
from usage.writer import stream_closed, submit_stream_checkpoint

if TYPE_CHECKING:
    from gateway.proxy import ProxiedRequest


class StreamCheckpoints:
    """The checkpoints of one stream; `after_events` is called with every block of events before it
    is written to the client, `close` once the relay is over."""

    __slots__ = ("proxied", "sse", "sequence", "tokens", "at", "every_tokens", "every_seconds")

    def __init__(self, proxied: ProxiedRequest, sse: SseRelay) -> None:
        self.proxied = proxied
        self.sse = sse
        self.sequence = 0
        self.tokens = 0
        self.at = 0.0
        self.every_tokens = settings.USAGE_CHECKPOINT_TOKENS
        self.every_seconds = settings.USAGE_CHECKPOINT_SECONDS

    def after_events(self) -> None:
        tokens = estimated_tokens(self.sse.content_bytes)
        if self.sequence:
            grown = tokens - self.tokens
            if grown <= 0 or (grown < self.every_tokens and time.monotonic() - self.at < self.every_seconds):
                return
        self._submit(tokens)

    def _submit(self, tokens: int) -> None:
        proxied = self.proxied
        event = proxied.event
        assert event is not None
        snapshot = dataclasses.replace(event, extra=dict(event.extra), status=proxied.status, streamed=True)
        now = time.perf_counter()
        snapshot.latency_ms = round((now - proxied.started) * 1000, 3)
        first_byte_at = proxied.client.first_byte_at
        snapshot.ttfb_ms = round((first_byte_at - proxied.started) * 1000, 3) if first_byte_at is not None else None
        proxied.tally.apply_to(snapshot)
        if tokens > snapshot.output_tokens:
            snapshot.output_tokens = tokens
            snapshot.extra["output_tokens_estimated"] = True
        submit_stream_checkpoint(snapshot, self.sequence)
        event.checkpointed = True
        self.sequence += 1
        self.tokens = tokens
        self.at = time.monotonic()

    def close(self) -> None:
        if self.sequence:
            stream_closed(self.proxied.request_id)
