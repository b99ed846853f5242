"""What a Messages request can cost, estimated from its body before it goes upstream, for admission
against the spend caps.

The prompt side is estimated, the output side bounded:

- text and code: body bytes / TEXT_BYTES_PER_TOKEN; tool definitions (JSON schemas, which tokenize
  densest) / JSON_BYTES_PER_TOKEN. Both are counted on the JSON-encoded body, whose escapes and keys
  only add bytes, so the figure is above the real count for ordinary prompts: English prose runs
  about 4 bytes a token and code about 3.5, and the gateway's fake bills 4;
- images are priced as the API bills them, never by their base64 bytes: width x height / 750
  tokens after the API scales an image into ~1.15 megapixels, so at most IMAGE_TOKENS;
- a PDF costs its pages, each page's text and its image (PDF_PAGE_TOKENS a page, pages counted in
  the decoded file; a file whose pages cannot be counted falls back to its base64 bytes as text);
- with a `cache_control` mark anywhere, the whole prompt is priced at the dearest cache write the
  marks ask for (1h when one says so, else 5m): reads are cheaper, so this is a bound;
- the output is `max_tokens` at the output rate, with the US-only multiplier and any tier the
  estimated prompt reaches.

`CostEstimate.affordable_max_tokens` turns an amount the caps grant into the `max_tokens` that fits.
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


@dataclass(frozen=True, slots=True)
class _Media:
    base64_bytes: int = 0
    tokens: int = 0


def _pdf_tokens(data: str) -> int | None:
    try:
        decoded = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None
    pages = len(_PDF_PAGE.findall(decoded))
    return pages * PDF_PAGE_TOKENS if pages else None


def _block_media(block: dict[str, Any]) -> _Media:
    kind = block.get("type")
    if kind == "tool_result" and isinstance(block.get("content"), list):
        return _blocks_media(block["content"])
    source = block.get("source")
    if kind not in ("image", "document") or not isinstance(source, dict):
        return _Media()
    data = source.get("data")
    encoded = len(data) if source.get("type") == "base64" and isinstance(data, str) else 0
    if kind == "image":
        return _Media(encoded, IMAGE_TOKENS)
    if source.get("media_type") == "application/pdf" and encoded and isinstance(data, str):
        tokens = _pdf_tokens(data)
        if tokens is not None:
            return _Media(encoded, tokens)
    return _Media()


def _blocks_media(blocks: list[Any]) -> _Media:
    encoded = tokens = 0
    for block in blocks:
        if isinstance(block, dict):
            found = _block_media(block)
            encoded += found.base64_bytes
            tokens += found.tokens
    return _Media(encoded, tokens)


def _media(parsed: dict[str, Any]) -> _Media:
    messages = parsed.get("messages")
    if not isinstance(messages, list):
        return _Media()
    blocks = [block for message in messages if isinstance(message, dict) for block in _content_list(message)]
    return _blocks_media(blocks)


def _content_list(message: dict[str, Any]) -> list[Any]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def estimate_prompt_tokens(parsed: dict[str, Any], body: bytes) -> int:
    """Prompt tokens the body can be billed for, by the ratios above."""
    media = _media(parsed) if b'"base64"' in body or b'"image"' in body else _Media()
    tools = parsed.get("tools")
    tool_bytes = len(orjson.dumps(tools)) if isinstance(tools, list) and tools else 0
    text_bytes = max(len(body) - media.base64_bytes - tool_bytes, 0)
    return (
        math.ceil(text_bytes / TEXT_BYTES_PER_TOKEN)
        + math.ceil(tool_bytes / JSON_BYTES_PER_TOKEN)
        + media.tokens
        + REQUEST_OVERHEAD_TOKENS
    )


def _prompt_rate(rates: Rates, body: bytes) -> Decimal:
    if b'"cache_control"' not in body:
        return rates.input
    return max(rates.input, rates.cache_write_1h if b'"1h"' in body else rates.cache_write_5m)


def _min_output_tokens(parsed: dict[str, Any], configured: int) -> int:
    thinking = parsed.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        return max(configured, THINKING_MIN_BUDGET + 1)
    return configured


def _usd(per_million: Decimal) -> Decimal:
    return (per_million / PER_MILLION).quantize(Decimal("1e-12"), rounding=ROUND_CEILING)


def estimate_message_cost(
    model: str, parsed: dict[str, Any], body: bytes, at: dt.datetime, *, min_output_tokens: int, batch: bool = False
) -> CostEstimate:
    """The estimate of one Messages request (a batch's `params` with `batch`); raises LookupError
    when no prices are in force. An unknown model takes the dearest rates of every known one."""
    max_tokens = parsed.get("max_tokens")
    max_tokens = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0 else 0
    prompt_tokens = estimate_prompt_tokens(parsed, body)
    table = get_price_table()
    at = as_utc(at)
    candidates = table.every_rate_for(model, at, prompt_tokens_at_most=prompt_tokens) or table.every_rate_at(at)
    if not candidates:
        raise LookupError("no model prices are in force: seed or add ModelPrice rows")
    multiplier = BATCH_MULTIPLIER if batch else ONE
    prompt_rate = max(_prompt_rate(rates, body) * max(rates.us_geo_multiplier, ONE) for rates in candidates) * multiplier
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
