"""The pricing rule matrix: one row per combination of family x TTL split x prompt tier x effective
date x batch x fast x geo, priced through the gateway's usage reading (a JSON reply or a stream)
and the pricing code, and checked against a small reference calculator written here from the rules
of docs/anthropic-api.md alone (its own price table, its own family lookup, exact fractions): it
shares no code or data with `usage.pricing` or the seed migration."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import NamedTuple

import orjson
import pytest

from gateway.sse import SseRelay
from gateway.usage_tally import UsageTally
from usage.events import UsageEvent
from usage.pricing import quote_usage

pytestmark = pytest.mark.usefixtures("prices")
UTC = dt.UTC


class Family(NamedTuple):
    """Rates as the doc's table prints them: input, 5m write, 1h write, cache read, output."""

    rates: tuple[str, str, str, str, str]
    us_geo: bool  # Opus 4.6 and newer models pay 1.1x for US-only inference
    tier: tuple[int, tuple[str, str, str, str, str]] | None = None  # (prompt above, rates)
    fast: tuple[str, str, str, str, str] | None = None
    cache_read_from: tuple[dt.datetime, str] | None = None  # a dated cache-read change


SONNET_4_TIER = (200_000, ("6", "7.50", "12", "0.60", "22.50"))
REFERENCE = {
    "fable-5-1": Family(("10", "12.50", "20", "0.25", "50"), True),
    "fable-5": Family(("10", "12.50", "20", "1", "50"), True),
    # Opus 5.5 fast: input and output published (8 / 40); cache rates are the operator's assumption,
    # Opus 5.5's own ratios to input (1.25x, 2x, 0.05x), so such requests are flagged `assumed`.
    "opus-5-5": Family(("4", "5", "8", "0.20", "20"), True, fast=("8", "10", "16", "0.40", "40")),
    "opus-5": Family(("5", "6.25", "10", "0.50", "25"), True),
    "opus-4-5": Family(("5", "6.25", "10", "0.50", "25"), False),
    "opus-4-1": Family(("15", "18.75", "30", "1.50", "75"), False),
    "sonnet-5-5": Family(("2", "2.50", "4", "0.20", "10"), True, cache_read_from=(dt.datetime(2026, 10, 7, tzinfo=UTC), "0.10")),
    "sonnet-5": Family(("2", "2.50", "4", "0.20", "10"), True),
    "sonnet-4-6": Family(("3", "3.75", "6", "0.30", "15"), True),
    "sonnet-4-5": Family(("3", "3.75", "6", "0.30", "15"), False, tier=SONNET_4_TIER),
    "sonnet-3-7": Family(("3", "3.75", "6", "0.30", "15"), False),
    "haiku-5-5": Family(
        ("0.10", "0.125", "0.20", "0.01", "0.50"), True, tier=(100_000, ("0.50", "0.625", "1.00", "0.05", "2.50"))
    ),
    "haiku-4-5": Family(("1", "1.25", "2", "0.10", "5"), False),
    "haiku-3-5": Family(("0.80", "1", "1.60", "0.08", "4"), False),
    "haiku-3": Family(("0.25", "0.30", "0.50", "0.03", "1.25"), False),
}
MODELS = {  # model id as a client sends it -> family (None: not in the price list)
    "claude-fable-5-1": "fable-5-1",
    "claude-mythos-5-1-20261001": "fable-5-1",
    "claude-fable-5": "fable-5",
    "claude-mythos-5[1m]": "fable-5",
    "claude-opus-5-5": "opus-5-5",
    "claude-opus-5": "opus-5",
    "claude-opus-4-8[1m]": "opus-5",
    "claude-opus-4-7": "opus-5",
    "claude-opus-4-6": "opus-5",
    "claude-opus-4-5-20251101": "opus-4-5",
    "claude-opus-4-1-20250805": "opus-4-1",
    "claude-opus-4-0": "opus-4-1",
    "claude-opus-4-20250514": "opus-4-1",
    "claude-sonnet-5-5": "sonnet-5-5",
    "claude-sonnet-5": "sonnet-5",
    "claude-sonnet-4-6": "sonnet-4-6",
    "claude-sonnet-4-5-20250929": "sonnet-4-5",
    "claude-sonnet-4-5": "sonnet-4-5",
    "claude-sonnet-4": "sonnet-4-5",
    "claude-sonnet-4-0": "sonnet-4-5",
    "claude-sonnet-4-20250514": "sonnet-4-5",
    "claude-3-7-sonnet-20250219": "sonnet-3-7",
    "claude-haiku-5-5": "haiku-5-5",
    "claude-haiku-4-5-20251001": "haiku-4-5",
    "claude-3-5-haiku-20241022": "haiku-3-5",
    "claude-3-haiku-20240307": "haiku-3",
    "gpt-4o": None,
}
DATES = (
    dt.datetime(2026, 10, 6, 23, 59, 59, tzinfo=UTC),
    dt.datetime(2026, 10, 7, tzinfo=UTC),
    dt.datetime(2026, 11, 25, 12, tzinfo=UTC),
)
# The usage shapes of cache writes (in thousands of tokens): total, 5m split, 1h split (None: key absent).
SPLITS = {
    "no cache": (None, None, None),
    "total only": (6, None, None),
    "split agrees": (9, 4, 5),
    "zero split, total": (5, 0, 0),
    "partial split": (8, None, 3),
    "split, no total": (None, 2, 7),
}


class Row(NamedTuple):
    model: str
    split: str
    prompt: str  # "small", "at" the tier threshold, "above" it
    date: dt.datetime
    batch: bool
    fast: bool
    us: bool
    streamed: bool


def reference_writes(split: str) -> tuple[int, int]:
    """(5m, 1h) per the doc: no split is all 5m; a total above the split's sum adds its remainder to 5m."""
    total, five, one = (None if value is None else value * 1000 for value in SPLITS[split])
    split_sum = (five or 0) + (one or 0)
    return (five or 0) + max((total or 0) - split_sum, 0), one or 0


def prompt_target(family: Family | None, prompt: str) -> int:
    threshold = family.tier[0] if family and family.tier else 200_000
    return {"small": 30_000, "at": threshold, "above": threshold + 1}[prompt]


def usage_of(row: Row) -> dict[str, object]:
    """The raw usage the upstream reports, sized so the prompt (input + reads + writes) hits the target."""
    total, five, one = SPLITS[row.split]
    five_m, one_h = reference_writes(row.split)
    cache_read = 3000
    usage: dict[str, object] = {
        "input_tokens": prompt_target(REFERENCE.get(MODELS[row.model] or ""), row.prompt) - cache_read - five_m - one_h,
        "output_tokens": 1234,
        "cache_read_input_tokens": cache_read,
        "service_tier": "batch" if row.batch else "standard",
        "speed": "fast" if row.fast else "standard",
        "inference_geo": "us" if row.us else "global",
    }
    if total is not None:
        usage["cache_creation_input_tokens"] = total * 1000
    split = {
        key: value * 1000
        for key, value in (("ephemeral_5m_input_tokens", five), ("ephemeral_1h_input_tokens", one))
        if value is not None
    }
    if split:
        usage["cache_creation"] = split
    return usage


def reference_quote(row: Row, usage: dict[str, object]) -> tuple[Decimal | None, str]:
    family = REFERENCE.get(MODELS[row.model] or "")
    if family is None:
        return None, "unknown"
    five_m, one_h = reference_writes(row.split)
    tokens = (usage["input_tokens"], five_m, one_h, usage["cache_read_input_tokens"], usage["output_tokens"])
    prompt = tokens[0] + tokens[1] + tokens[2] + tokens[3]
    rates, flag = family.rates, ""
    if family.tier and prompt > family.tier[0]:
        rates = family.tier[1]
    if row.fast:
        rates, flag = (family.fast, "assumed") if family.fast else (rates, "fallback")
    rates = list(rates)
    if family.cache_read_from and row.date >= family.cache_read_from[0]:
        rates[3] = family.cache_read_from[1]
    per_million = sum(Fraction(count) * Fraction(rate) for count, rate in zip(tokens, rates))
    multiplier = (Fraction(1, 2) if row.batch else 1) * (Fraction(11, 10) if row.us and family.us_geo else 1)
    exact = per_million * multiplier / 1_000_000
    cost = (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(Decimal("1e-10"), rounding=ROUND_HALF_UP)
    return cost, flag


def matrix() -> list[Row]:
    rows = []
    for index, (model, prompt, batch, fast, us) in enumerate(
        itertools.product(MODELS, ("small", "at", "above"), (False, True), (False, True), (False, True))
    ):
        family = REFERENCE.get(MODELS[model] or "")
        if prompt == "at" and not (family and family.tier):
            continue  # no threshold to sit on: "small" and "above" (250k-ish) already show no tier applies
        split = list(SPLITS)[index % len(SPLITS)]
        rows.append(Row(model, split, prompt, DATES[index % len(DATES)], batch, fast, us, streamed=index % 2 == 0))
    return rows


def sse(name: str, payload: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def tally_of(row: Row, usage: dict[str, object]) -> UsageTally:
    """The usage as the gateway reads it: a whole reply, or a stream (prompt side first, output last)."""
    tally = UsageTally()
    message = {"id": "msg_1", "type": "message", "model": row.model}
    if not row.streamed:
        tally.observe_message({**message, "usage": usage})
        return tally
    start = sse("message_start", {"type": "message_start", "message": {**message, "usage": {**usage, "output_tokens": 1}}})
    delta = sse(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": usage["output_tokens"]}},
    )
    SseRelay(tally).feed(start + delta)
    return tally


ROWS = matrix()


def test_the_matrix_covers_every_dimension():
    assert len(ROWS) > 300
    for dimension in ("model", "split", "prompt", "date", "batch", "fast", "us", "streamed"):
        values = {getattr(row, dimension) for row in ROWS}
        assert len(values) >= 2, dimension
    assert {row.split for row in ROWS} == set(SPLITS)
    assert {row.date for row in ROWS if row.model == "claude-sonnet-5-5"} == set(DATES)


@pytest.mark.parametrize(
    "row",
    ROWS,
    ids=lambda row: (
        "-".join(str(part) for part in row[:3])
        + f"-{row.date:%m%d%H%M}-"
        + "".join(flag for flag, on in zip(("B", "F", "U", "S"), row[4:]) if on)
    ),
)
def test_cost_matches_the_reference_calculator(row: Row):
    usage = usage_of(row)
    event = UsageEvent(
        request_id="req_matrix", occurred_at=row.date, endpoint="/v1/messages", method="POST", streamed=row.streamed
    )
    if row.batch:
        # a batch result is fetched later than its batch was created, and priced at the creation
        event.priced_at, event.occurred_at = row.date, row.date + dt.timedelta(days=3)
    tally_of(row, usage).apply_to(event)
    quote = quote_usage(event)
    assert (quote.cost, quote.flag) == reference_quote(row, usage)
