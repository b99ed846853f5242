"""How one usage record's cost was computed, line by line, for the admin's record page and
GET /admin/usage?request_id=...

Read from what the record stored when it was priced (`UsageRecord.pricing`: the price row's id,
pattern and effective date, its rates then, the multipliers), not from the price table now: an
operator may have edited the row since, and the breakdown must add up to the stored cost until
`reprice_usage` rewrites both. The total goes through the same `cost_at_rates` the pricing used.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from usage.models import PriceFlag, UsageRecord
from usage.pricing import CATEGORIES, COST_QUANTUM, PER_MILLION, Rates, cost_at_rates, prompt_tokens_of

CATEGORY_LABELS = {
    "input": "Input",
    "output": "Output",
    "cache_write_5m": "Cache write (5m)",
    "cache_write_1h": "Cache write (1h)",
    "cache_read": "Cache read",
}


@dataclass(frozen=True)
class CostLine:
    category: str
    tokens: int
    rate_per_mtok: Decimal
    amount: Decimal  # tokens x rate x multipliers / 1M, unrounded


@dataclass(frozen=True)
class CostBreakdown:
    request_id: str
    status: str  # "priced", "unpriced" (no price matched), "free" (no tokens, or a free endpoint), "not recorded"
    flag: str
    priced_at: str | None
    price_row: int | None
    pattern: str | None
    effective_from: str | None
    provenance: str | None
    speed: str | None
    tier: str | None
    multipliers: dict[str, str]
    lines: list[CostLine]
    total: Decimal | None
    stored_cost: Decimal | None
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "flag": self.flag,
            "priced_at": self.priced_at,
            "price_row": self.price_row,
            "pattern": self.pattern,
            "effective_from": self.effective_from,
            "provenance": self.provenance,
            "speed": self.speed,
            "tier": self.tier,
            "multipliers": self.multipliers,
            "lines": [
                {
                    "category": line.category,
                    "tokens": line.tokens,
                    "rate_per_mtok": plain(line.rate_per_mtok),
                    "amount": plain(line.amount),
                }
                for line in self.lines
            ],
            "total": None if self.total is None else format(self.total, "f"),
            "stored_cost": None if self.stored_cost is None else format(self.stored_cost, "f"),
            "notes": self.notes,
        }


def plain(amount: Decimal) -> str:
    """Exact, without trailing zeros or an exponent: 0.003, 22.5, 0."""
    return format(amount.normalize(), "f") if amount else "0"


def _notes(record: UsageRecord) -> list[str]:
    notes = []
    unsplit = (record.extra or {}).get("cache_write_unsplit_tokens")
    if unsplit:
        notes.append(f"{unsplit:,} cache-written tokens had no TTL split: billed at the 5m rate.")
    if record.price_flag == PriceFlag.FALLBACK:
        notes.append("Fast mode was asked for but this model has no fast rate: priced at the standard rate.")
    if record.price_flag == PriceFlag.ASSUMED:
        notes.append("The price row's rates are not all published: some are the operator's assumption.")
    if record.price_flag == PriceFlag.UNKNOWN:
        notes.append("No price matches this model: its cost is unknown, not zero.")
    return notes


def _tier(basis: dict[str, Any], prompt: int) -> str:
    above = int(basis.get("tier_above") or 0)
    if not above:
        return f"base (prompt {prompt:,} tokens)"
    return f"long prompt: {prompt:,} > {above:,} tokens, every token at this row's rates"


def cost_breakdown(record: UsageRecord) -> CostBreakdown:
    basis = record.pricing or {}
    empty: dict[str, Any] = {
        "request_id": record.request_id,
        "flag": record.price_flag,
        "priced_at": basis.get("at"),
        "price_row": None,
        "pattern": None,
        "effective_from": None,
        "provenance": None,
        "speed": None,
        "tier": None,
        "multipliers": {},
        "lines": [],
        "stored_cost": record.cost,
        "notes": _notes(record),
    }
    if "rates" not in basis:
        if not record.priced:
            return CostBreakdown(status="unpriced", total=None, **empty)
        status = "free" if basis or record.cost == 0 else "not recorded"
        return CostBreakdown(status=status, total=record.cost, **empty)
    stored_rates = {name: Decimal(value) for name, value in basis["rates"].items()}
    batch, geo = Decimal(basis["batch"]), Decimal(basis["geo"])
    multiplier = batch * geo
    lines = [
        CostLine(
            CATEGORY_LABELS[name],
            getattr(record, tokens),
            stored_rates[name],
            getattr(record, tokens) * stored_rates[name] * multiplier / PER_MILLION,
        )
        for name, tokens in CATEGORIES
    ]
    rates = Rates(us_geo_multiplier=geo, **stored_rates)
    return CostBreakdown(
        request_id=record.request_id,
        status="priced",
        flag=record.price_flag,
        priced_at=basis["at"],
        price_row=basis.get("row"),
        pattern=basis.get("pattern"),
        effective_from=basis.get("effective_from"),
        provenance=basis.get("provenance"),
        speed=basis.get("speed"),
        tier=_tier(basis, prompt_tokens_of(record)),
        multipliers={"batch": plain(batch), "geo": plain(geo)},
        lines=lines,
        total=cost_at_rates(record, rates, multiplier).quantize(COST_QUANTUM),
        stored_cost=record.cost,
        notes=_notes(record),
    )
