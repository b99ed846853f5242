"""The `anthropic-ratelimit-*` headers, from a per-minute window of what this fake has served.

They describe the master key's organization, which is exactly why the gateway must replace them
with the device's own limits; moving values (remaining drops as requests arrive) let a test prove
the gateway's headers are not the fake's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class RateLimits:
    requests: int = 4_000
    input_tokens: int = 2_000_000
    output_tokens: int = 400_000

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class RateLimitWindow:
    """Counts requests and tokens in the current minute; used only from the event-loop thread."""

    def __init__(self, limits: RateLimits = RateLimits(), clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self._clock = clock
        self._window_start = 0
        self._reset_text = ""
        self._requests = 0
        self._input_tokens = 0
        self._output_tokens = 0

    def _roll(self) -> None:
        now = int(self._clock())
        start = now - now % WINDOW_SECONDS
        if start != self._window_start:
            self._window_start = start
            reset = datetime.fromtimestamp(start + WINDOW_SECONDS, tz=UTC)
            self._reset_text = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
            self._requests = self._input_tokens = self._output_tokens = 0

    def count_request(self) -> None:
        self._roll()
        self._requests += 1

    def count_tokens(self, input_tokens: int, output_tokens: int) -> None:
        self._roll()
        self._input_tokens += input_tokens
        self._output_tokens += output_tokens

    def headers(self) -> dict[str, str]:
        self._roll()
        limits, reset = self.limits, self._reset_text
        input_left = max(0, limits.input_tokens - self._input_tokens)
        output_left = max(0, limits.output_tokens - self._output_tokens)
        return {
            "anthropic-ratelimit-requests-limit": str(limits.requests),
            "anthropic-ratelimit-requests-remaining": str(max(0, limits.requests - self._requests)),
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-tokens-limit": str(limits.tokens),
            "anthropic-ratelimit-tokens-remaining": str(input_left + output_left),
            "anthropic-ratelimit-tokens-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": str(limits.input_tokens),
            "anthropic-ratelimit-input-tokens-remaining": str(input_left),
            "anthropic-ratelimit-input-tokens-reset": reset,
            "anthropic-ratelimit-output-tokens-limit": str(limits.output_tokens),
            "anthropic-ratelimit-output-tokens-remaining": str(output_left),
            "anthropic-ratelimit-output-tokens-reset": reset,
        }
