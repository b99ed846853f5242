"""What a Messages request can cost, estimated from its body before it goes upstream, for admission
against the spend caps.

The prompt side is estimated, the output side bounded:

- text and code: body bytes / TEXT_BYTES_PER_TOKEN; tool definitions (JSON schemas, which tokenize
  densest) / JSON_BYTES_PER_TOKEN. Both are counted on the JSON-encoded body, whose escapes and keys
  only add bytes, so the figure is above the real count for ordinary prompts: English prose runs
  about 4 bytes a token and code about 3.5, and the gateway's fake bills 4;
- images are priced as the API bills them, never by their base64 bytes: width x height / 750
  tokens after the API scales an image into ~1.15 megapixels, so at most IMAGE_TOKENS (a URL or
  file image too);
- a PDF costs its pages, each page's text and its image (PDF_PAGE_TOKENS a page, pages counted in
  the decoded file; a file whose pages cannot be counted falls back to its base64 bytes as text);
- with a `cache_control` mark anywhere, the whole prompt is priced at the dearest cache write the
  marks ask for (1h when one says so, else 5m): reads are cheaper, so this is a bound;
- the output is `max_tokens` at the output rate, with the US-only multiplier and any tier the
  estimated prompt reaches.

One walk over the blocks finds media and cache marks (a substring search of a 100 KB body costs
more than the walk). `CostEstimate.affordable_max_tokens` turns an amount the caps grant into the `max_tokens` that fits.
Tokens a body does not carry (a Files API document, web search results) are outside the estimate;
settling adds them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

import orjson

from proxyproject.lib.errors import InvalidRequest
from usage.price_table import Rates
from usage.pricing import BATCH_MULTIPLIER, ONE, PER_MILLION, as_utc, get_price_table

TEXT_BYTES_PER_TOKEN = 3.0
JSON_BYTES_PER_TOKEN = 2.5
IMAGE_TOKENS = 1_600
PDF_PAGE_TOKENS = 3_000 + IMAGE_TOKENS
REQUEST_OVERHEAD_TOKENS = 512  # the API's own framing and the tool-use system prompt
THINKING_MIN_BUDGET = 1_024
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """USD figures: `input_cost` the prompt's, `output_rate` one output token's."""

    prompt_tokens: int
    input_cost: Decimal
    output_rate: Decimal
    max_tokens: int
    min_output_tokens: int

    @property
    def full(self) -> Decimal:
        return self.input_cost + self.max_tokens * self.output_rate

    @property
    def minimum(self) -> Decimal:
        return self.input_cost + min(self.min_output_tokens, self.max_tokens) * self.output_rate

    def affordable_max_tokens(self, amount: Decimal) -> int:
        """The largest max_tokens whose bound fits `amount` (never above the request's own)."""
        if self.output_rate <= 0:
            return self.max_tokens
        return max(0, min(self.max_tokens, math.floor((amount - self.input_cost) / self.output_rate)))


def _pdf_tokens(data: str) -> int | None:
    try:
        decoded = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None
    pages = len(_PDF_PAGE.findall(decoded))
    return pages * PDF_PAGE_TOKENS if pages else None


@dataclass(slots=True)
class _Scan:
    """What one walk over the body's blocks found: base64 media and its billed tokens, and the
    dearest cache write a `cache_control` mark asks for."""

    base64_bytes: int = 0
    media_tokens: int = 0
    cache_write: str | None = None  # "5m" or "1h"

    def mark(self, block: dict[str, Any]) -> None:
        marked = block.get("cache_control")
        if isinstance(marked, dict) and self.cache_write != "1h":
            self.cache_write = "1h" if marked.get("ttl") == "1h" else "5m"

    def media(self, block: dict[str, Any]) -> None:
        kind = block.get("type")
        if kind == "tool_result" and isinstance(block.get("content"), list):
            self.blocks(block["content"])
            return
        source = block.get("source")
        if kind not in ("image", "document") or not isinstance(source, dict):
            return
        data = source.get("data")
        if source.get("type") != "base64" or not isinstance(data, str):
            if kind == "image":
                self.media_tokens += IMAGE_TOKENS
            return
        if kind == "image":
            self.base64_bytes += len(data)
            self.media_tokens += IMAGE_TOKENS
        elif source.get("media_type") == "application/pdf" and (tokens := _pdf_tokens(data)) is not None:
            self.base64_bytes += len(data)
            self.media_tokens += tokens

    def blocks(self, blocks: list[Any]) -> None:
        for block in blocks:
            if isinstance(block, dict):
                self.mark(block)
                self.media(block)


def _scan(parsed: dict[str, Any]) -> _Scan:
    scan = _Scan()
    scan.mark(parsed)
    for section in (parsed.get("tools"), parsed.get("system")):
        if isinstance(section, list):
            scan.blocks(section)
    messages = parsed.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            scan.blocks(content)
    return scan


def _prompt_tokens(parsed: dict[str, Any], body: bytes, scan: _Scan) -> int:
    tools = parsed.get("tools")
    tool_bytes = len(orjson.dumps(tools)) if isinstance(tools, list) and tools else 0
    text_bytes = max(len(body) - scan.base64_bytes - tool_bytes, 0)
    return (
        math.ceil(text_bytes / TEXT_BYTES_PER_TOKEN)
        + math.ceil(tool_bytes / JSON_BYTES_PER_TOKEN)
        + scan.media_tokens
        + REQUEST_OVERHEAD_TOKENS
    )


def estimate_prompt_tokens(parsed: dict[str, Any], body: bytes) -> int:
    """Prompt tokens the body can be billed for, by the ratios above."""
    return _prompt_tokens(parsed, body, _scan(parsed))


def _prompt_rate(rates: Rates, cache_write: str | None) -> Decimal:
    if cache_write is None:
        return rates.input
    return max(rates.input, rates.cache_write_1h if cache_write == "1h" else rates.cache_write_5m)


def _min_output_tokens(parsed: dict[str, Any], configured: int) -> int:
    thinking = parsed.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        return max(configured, THINKING_MIN_BUDGET + 1)
    return configured


def requested_max_tokens(params: dict[str, Any], *, field: str = "max_tokens") -> int:
    """The output bound a request asks for (0 when it names none). The spend and tokens-per-minute
    reservations are sized by it, so a value the API may still read as a number (`"64000"`,
    `64000.0`) but that is not a JSON integer is refused: reserved as no output at all, it would let
    one request's answer run past the caps."""
    if "max_tokens" not in params:
        return 0
    value = params["max_tokens"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{field}: Input should be a valid integer")
    return max(value, 0)


def _usd(per_million: Decimal) -> Decimal:
    return (per_million / PER_MILLION).quantize(Decimal("1e-12"), rounding=ROUND_CEILING)


def estimate_message_cost(
    model: str, parsed: dict[str, Any], body: bytes, at: dt.datetime, *, min_output_tokens: int, batch: bool = False
) -> CostEstimate:
    """The estimate of one Messages request (a batch's `params` with `batch`); raises LookupError
    when no prices are in force. An unknown model takes the dearest rates of every known one."""
    max_tokens = requested_max_tokens(parsed)
    scan = _scan(parsed)
    prompt_tokens = _prompt_tokens(parsed, body, scan)
    table = get_price_table()
    at = as_utc(at)
    candidates = table.every_rate_for(model, at, prompt_tokens_at_most=prompt_tokens) or table.every_rate_at(at)
    if not candidates:
        raise LookupError("no model prices are in force: seed or add ModelPrice rows")
    multiplier = BATCH_MULTIPLIER if batch else ONE
    prompt_rate = (
        max(_prompt_rate(rates, scan.cache_write) * max(rates.us_geo_multiplier, ONE) for rates in candidates) * multiplier
    )
    output_rate = max(rates.output * max(rates.us_geo_multiplier, ONE) for rates in candidates) * multiplier
    return CostEstimate(
        prompt_tokens=prompt_tokens,
        input_cost=_usd(prompt_tokens * prompt_rate),
        output_rate=_usd(output_rate),
        max_tokens=max_tokens,
        min_output_tokens=_min_output_tokens(parsed, min_output_tokens),
    )


def clamped_params(parsed: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """The request with `max_tokens` lowered, and an explicit thinking budget kept below it as the
    API requires."""
    clamped = {**parsed, "max_tokens": max_tokens}
    thinking = parsed.get("thinking")
    if isinstance(thinking, dict) and isinstance(thinking.get("budget_tokens"), int) and thinking["budget_tokens"] >= max_tokens:
        clamped["thinking"] = {**thinking, "budget_tokens": max(max_tokens - 1, THINKING_MIN_BUDGET)}
    return clamped
