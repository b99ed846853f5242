"""The usage vocabulary: what a request is counted in, and the totals made of those counts.

Every module that stores, sums, prices, exports or shows usage takes its field names from here.

The totals differ on purpose:

- `prompt_tokens`: everything the model read (fresh input, cache reads, cache writes);
- `total_tokens`: the prompt plus the output, what the operator's reports call a request's tokens;
- `tokens_per_minute`: what counts against a device's tokens-per-minute limit. Cache reads do not:
  Anthropic's own input-tokens-per-minute limits leave them out (a cached prefix costs the
  upstream a tenth of fresh input), and a client that caches well must not be throttled for the
  same context read again on every turn. Cache writes are fresh input and count.
"""

from __future__ import annotations

from typing import Protocol

TOKEN_KINDS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_write_5m", "cache_write_5m_tokens"),
    ("cache_write_1h", "cache_write_1h_tokens"),
    ("cache_read", "cache_read_tokens"),
)
"""(kind, count field): the kind names a price's rate and a metric's label; the field is the count's
name on UsageEvent, UsageRecord, UsageRollup, the API's totals and the CSV exports alike."""
TOKEN_FIELDS = tuple(name for _, name in TOKEN_KINDS)
"""Token counts of a request, in the order the reports, exports and charts show them."""
TOOL_REQUEST_FIELDS = ("web_search_requests", "web_fetch_requests")
"""Server tool uses, priced per request rather than per token."""
COUNT_FIELDS = (*TOKEN_FIELDS, *TOOL_REQUEST_FIELDS)
"""Every count a usage record, a rollup and a report holds."""


class TokenCounts(Protocol):
    input_tokens: int
    output_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int


def cache_write_tokens(counts: TokenCounts) -> int:
    return counts.cache_write_5m_tokens + counts.cache_write_1h_tokens


def prompt_tokens(counts: TokenCounts) -> int:
    return counts.input_tokens + counts.cache_read_tokens + cache_write_tokens(counts)


def total_tokens(counts: TokenCounts) -> int:
    return prompt_tokens(counts) + counts.output_tokens


def tokens_per_minute(counts: TokenCounts) -> int:
    """Everything but cache reads (see the module's docstring)."""
    return counts.input_tokens + cache_write_tokens(counts) + counts.output_tokens
