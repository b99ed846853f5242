"""Exact cost of a request from the price table (`usage.price_table`), the record of how it was
computed. (What the spend caps reserve is estimated in `usage.spend_estimate`.)

Rules (anthropic-api.md, "Rules that cost calculators commonly get wrong"):
- the most specific matching pattern wins, at the rates in force at the request's pricing moment:
  when it happened, or for a batch result when its batch was created (`UsageEvent.priced_at`);
- a prompt-length tier prices every token of the request, output included, where the prompt is
  input + cache reads + cache writes;
- `speed: fast` has its own row; a model without one is priced at its standard row and flagged
  `fallback`, never silently;
- batch halves every category, cache writes and reads included; US-only inference multiplies every
  category by the row's geo multiplier; the multipliers stack with each other and with the tier;
- a row whose provenance is `assumed` flags the request `assumed`; a model without a price is
  recorded unpriced (`unknown`), never at zero.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from usage.counts import TOKEN_KINDS, TokenCounts, prompt_tokens, total_tokens
from usage.events import UsageEvent
from usage.models import COST_DECIMAL_PLACES, PriceFlag, Provenance, Speed
from usage.price_table import (
    PriceMatch,
    PriceRow,
    Rates,
    get_price_table,
    invalidate_price_table,
    normalize_model_id,
    preload_price_table,
)

__all__ = [
    "BATCH_MULTIPLIER",
    "COST_QUANTUM",
    "PriceQuote",
    "Rates",
    "as_utc",
    "billable",
    "cost_at_rates",
    "get_price_table",
    "invalidate_price_table",
    "normalize_model_id",
    "preload_price_table",
    "price_usage",
    "quote_usage",
]

COST_QUANTUM = Decimal(1).scaleb(-COST_DECIMAL_PLACES)
PER_MILLION = Decimal(1_000_000)
BATCH_MULTIPLIER = Decimal("0.5")
ONE = Decimal(1)
BATCH_TIER = "batch"
FREE_ENDPOINT_SUFFIXES = ("/count_tokens",)
CATEGORIES = TOKEN_KINDS
"""(rate name on Rates, token count name on UsageEvent and UsageRecord alike)."""


def is_us_only(inference_geo: str | None) -> bool:
    geo = (inference_geo or "").strip().lower()
    return geo == "us" or geo.startswith(("us-", "us_"))


def is_batch(service_tier: str | None) -> bool:
    return (service_tier or "").lower() == BATCH_TIER


def is_fast(speed: str | None) -> bool:
    return (speed or "").lower() == Speed.FAST


def prompt_tokens_of(counts: TokenCounts) -> int:
    """What a long-context price tier is chosen by."""
    return prompt_tokens(counts)


def billable(event: UsageEvent) -> bool:
    """count_tokens is free; a request that used no tokens costs nothing whatever its model."""
    if event.endpoint.rstrip("/").endswith(FREE_ENDPOINT_SUFFIXES):
        return False
    return total_tokens(event) > 0


def cost_at_rates(counts: TokenCounts, rates: Rates, multiplier: Decimal) -> Decimal:
    """Every category at its own rate, times the stacked multipliers (batch x geo), rounded once."""
    per_million = (
        counts.input_tokens * rates.input
        + counts.output_tokens * rates.output
        + counts.cache_write_5m_tokens * rates.cache_write_5m
        + counts.cache_write_1h_tokens * rates.cache_write_1h
        + counts.cache_read_tokens * rates.cache_read
    )
    return (per_million * multiplier / PER_MILLION).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def as_utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def pricing_moment(event: UsageEvent) -> dt.datetime:
    """When the rates are taken from: the batch's creation for a batch result, else the request's time."""
    return as_utc(event.priced_at or event.occurred_at)


@dataclass(frozen=True, slots=True)
class PriceQuote:
    """One request's cost and what it was computed from. `cost` None: no price matched (unknown model)."""

    cost: Decimal | None
    flag: str
    at: dt.datetime | None = None
    match: PriceMatch | None = None
    batch: Decimal = ONE
    geo: Decimal = ONE

    def basis(self) -> dict[str, Any]:
        """What the record keeps to show (and reprice) how its cost was computed."""
        if self.at is None:
            return {}
        if self.match is None:
            return {"at": self.at.isoformat()}
        return {"at": self.at.isoformat(), **_row_basis(self.match.row, self.batch, self.geo)}


_ROW_BASES_KEPT = 1024
_row_bases: dict[tuple[int, int, int], tuple[PriceRow, Decimal, Decimal, dict[str, Any]]] = {}


def _row_basis(row: PriceRow, batch: Decimal, geo: Decimal) -> dict[str, Any]:
    """The part of a basis that depends only on the price row and the multipliers, made once per row:
    formatting it was a tenth of the usage writer's CPU per record. Keyed by identity, not equality:
    equal Decimals can print differently ("4" and "4.00"), and the basis keeps them as printed. The
    entry holds its row, so an id is never reused while its entry stands. Read-only: records share it."""
    key = (id(row), id(batch), id(geo))
    entry = _row_bases.get(key)
    if entry is not None and entry[0] is row and entry[1] is batch and entry[2] is geo:
        return entry[3]
    rates = row.rates
    basis = {
        "row": row.id,
        "pattern": row.pattern,
        "effective_from": row.effective_from.isoformat(),
        "speed": row.speed,
        "tier_above": row.prompt_tokens_above,
        "provenance": row.provenance,
        "rates": {name: format(getattr(rates, name), "f") for name, _ in CATEGORIES},
        "batch": format(batch, "f"),
        "geo": format(geo, "f"),
    }
    if len(_row_bases) >= _ROW_BASES_KEPT:
        _row_bases.clear()
    _row_bases[key] = (row, batch, geo, basis)
    return basis


FREE = PriceQuote(Decimal(0).quantize(COST_QUANTUM), PriceFlag.EXACT)


def quote_usage(event: UsageEvent) -> PriceQuote:
    """The exact USD cost of one request and its basis, or an `unknown` quote when its model matches
    no price (never a silent 0)."""
    if not billable(event):
        return FREE
    at = pricing_moment(event)
    match = None
    if event.model:
        match = get_price_table().match(event.model, at, prompt_tokens=prompt_tokens_of(event), fast=is_fast(event.speed))
    if match is None:
        return PriceQuote(None, PriceFlag.UNKNOWN, at)
    rates = match.row.rates
    batch = BATCH_MULTIPLIER if is_batch(event.service_tier) else ONE
    geo = rates.us_geo_multiplier if is_us_only(event.inference_geo) else ONE
    if match.fallback:
        flag = PriceFlag.FALLBACK
    elif match.row.provenance == Provenance.ASSUMED:
        flag = PriceFlag.ASSUMED
    else:
        flag = PriceFlag.EXACT
    return PriceQuote(cost_at_rates(event, rates, batch * geo), flag, at, match, batch, geo)


def price_usage(event: UsageEvent) -> Decimal | None:
    """The exact USD cost of one request, or None when its model matches no price."""
    return quote_usage(event).cost
