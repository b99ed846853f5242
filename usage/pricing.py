"""Exact cost of a request from the ModelPrice table, and the worst-case cost the spend caps reserve.

The table is held in process and reloaded after USAGE_PRICE_CACHE_SECONDS (or at once when an
operator saves a price in this process), so pricing on the hot path never queries the database.
Inside an event loop a stale table keeps serving while a helper thread reloads it; only the very
first load of a process waits for the database.

Rules (anthropic-api.md): the most specific matching pattern wins; a record is priced at the rate
in force when it happened; a prompt-length tier prices every token of the request, output included,
where the prompt is input + cache reads + cache writes; batch halves input and output; `speed: fast`
has its own row; US-only inference multiplies every category for the models whose row says so.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import close_old_connections
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from proxyproject.lib.logging import log_event
from usage.events import UsageEvent
from usage.models import COST_DECIMAL_PLACES, ModelPrice, Speed

COST_QUANTUM = Decimal(1).scaleb(-COST_DECIMAL_PLACES)
PER_MILLION = Decimal(1_000_000)
BATCH_MULTIPLIER = Decimal("0.5")
FREE_ENDPOINT_SUFFIXES = ("/count_tokens",)
_SUFFIX = re.compile(r"\[[^\]]*\]$")
logger = logging.getLogger("usage.pricing")


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for one request's model, tier and speed."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    us_geo_multiplier: Decimal

    @property
    def prompt_side_max(self) -> Decimal:
        """The dearest rate a prompt token can be billed at (a 1h cache write costs more than input)."""
        return max(self.input, self.cache_write_5m, self.cache_write_1h, self.cache_read)


@dataclass(frozen=True, slots=True)
class PriceRow:
    pattern: str
    speed: str
    prompt_tokens_above: int
    effective_from: dt.datetime
    rates: Rates


def pattern_specificity(pattern: str) -> tuple[int, int, str]:
    """Sort key, most specific first: literal characters count, `*` counts nothing, a `[...]` set one."""
    literal = len(re.sub(r"\[[^\]]*\]", "?", pattern).replace("*", ""))
    return (-literal, -len(pattern), pattern)


def normalize_model_id(model: str) -> str:
    """`claude-opus-4-8[1m]` and `Claude-Opus-4-8` price as `claude-opus-4-8`."""
    return _SUFFIX.sub("", model.strip()).lower()


def is_us_only(inference_geo: str | None) -> bool:
    geo = (inference_geo or "").strip().lower()
    return geo == "us" or geo.startswith(("us-", "us_"))


class PriceTable:
    """Every ModelPrice row, grouped by pattern in specificity order."""

    def __init__(self, rows: list[PriceRow]) -> None:
        by_pattern: dict[str, list[PriceRow]] = {}
        for row in rows:
            by_pattern.setdefault(row.pattern, []).append(row)
        self._patterns = sorted(by_pattern, key=pattern_specificity)
        self._rows = {
            pattern: sorted(by_pattern[pattern], key=lambda row: row.effective_from, reverse=True) for pattern in self._patterns
        }

    def _in_force(self, pattern: str, at: dt.datetime) -> list[PriceRow]:
        """The latest row of each (speed, tier) of `pattern` that had started by `at`."""
        latest: dict[tuple[str, int], PriceRow] = {}
        for row in self._rows[pattern]:
            if row.effective_from <= at:
                latest.setdefault((row.speed, row.prompt_tokens_above), row)
        return list(latest.values())

    def _matching_rows(self, model: str, at: dt.datetime) -> list[PriceRow]:
        model_id = normalize_model_id(model)
        for pattern in self._patterns:
            if fnmatch.fnmatchcase(model_id, pattern.lower()):
                rows = self._in_force(pattern, at)
                if rows:
                    return rows
        return []

    def rates_for(self, model: str, at: dt.datetime, *, prompt_tokens: int, speed: str | None) -> Rates | None:
        rows = self._matching_rows(model, at)
        if not rows:
            return None
        wanted = Speed.FAST if (speed or "").lower() == Speed.FAST else Speed.STANDARD
        same_speed = [row for row in rows if row.speed == wanted] or [row for row in rows if row.speed == Speed.STANDARD] or rows
        tiers = sorted(same_speed, key=lambda row: row.prompt_tokens_above, reverse=True)
        chosen = next((row for row in tiers if prompt_tokens > row.prompt_tokens_above), tiers[-1])
        return chosen.rates

    def every_rate_for(self, model: str, at: dt.datetime, *, prompt_tokens_at_most: int) -> list[Rates]:
        """All rates a request for `model` with a prompt of at most that size could be billed at."""
        rows = self._matching_rows(model, at)
        reachable = [row for row in rows if row.prompt_tokens_above < prompt_tokens_at_most or row.prompt_tokens_above == 0]
        return [row.rates for row in reachable]

    def every_rate_at(self, at: dt.datetime) -> list[Rates]:
        return [row.rates for pattern in self._patterns for row in self._in_force(pattern, at)]


def _row_from_model(price: ModelPrice) -> PriceRow:
    return PriceRow(
        pattern=price.model_pattern.strip(),
        speed=price.speed,
        prompt_tokens_above=price.prompt_tokens_above,
        effective_from=price.effective_from,
        rates=Rates(
            input=price.input_per_mtok,
            output=price.output_per_mtok,
            cache_write_5m=price.cache_write_5m_per_mtok,
            cache_write_1h=price.cache_write_1h_per_mtok,
            cache_read=price.cache_read_per_mtok,
            us_geo_multiplier=price.us_geo_multiplier,
        ),
    )


def load_price_table() -> PriceTable:
    return PriceTable([_row_from_model(price) for price in ModelPrice.objects.all()])


class _PriceCache:
    def __init__(self) -> None:
        self.table: PriceTable | None = None
        self.loaded_at = 0.0
        self.generation = 0
        self.refreshing = False
        self.lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-prices")

    def load_now(self) -> PriceTable:
        """Load, and keep the result unless an invalidation happened meanwhile (it may predate an edit)."""
        generation = self.generation
        table = load_price_table()
        with self.lock:
            if generation == self.generation:
                self.table, self.loaded_at = table, time.monotonic()
        return table

    def load_in_this_thread(self) -> PriceTable:
        try:
            return self.load_now()
        finally:
            close_old_connections()

    def load_in_helper_thread(self) -> PriceTable:
        """For event-loop threads, where Django refuses synchronous queries."""
        return self.executor.submit(self.load_in_this_thread).result()

    def refresh_in_background(self) -> None:
        with self.lock:
            if self.refreshing:
                return
            self.refreshing = True
        self.executor.submit(self.load_in_this_thread).add_done_callback(self._refresh_done)

    def _refresh_done(self, _future: object) -> None:
        with self.lock:
            self.refreshing = False


_cache = _PriceCache()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def get_price_table() -> PriceTable:
    table = _cache.table
    fresh = table is not None and time.monotonic() - _cache.loaded_at < settings.USAGE_PRICE_CACHE_SECONDS
    if fresh:
        return table
    if not _in_event_loop():
        return _cache.load_now()
    if table is None:
        return _cache.load_in_helper_thread()
    _cache.refresh_in_background()
    return table


async def preload_price_table() -> None:
    """Start-up: the first request of a worker prices from memory, without waiting for the database."""
    try:
        await asyncio.get_running_loop().run_in_executor(_cache.executor, _cache.load_in_this_thread)
    except Exception as exc:  # database away at start-up: the first pricing loads it instead
        log_event(logger, "Price table not preloaded", logging.WARNING, error=f"{type(exc).__name__}: {exc}")


def invalidate_price_table() -> None:
    with _cache.lock:
        _cache.generation += 1
        _cache.table = None


@receiver(post_save, sender=ModelPrice)
@receiver(post_delete, sender=ModelPrice)
def _price_changed(**kwargs: object) -> None:
    invalidate_price_table()


def prompt_tokens_of(event: UsageEvent) -> int:
    return event.input_tokens + event.cache_read_tokens + event.cache_write_5m_tokens + event.cache_write_1h_tokens


def billable(event: UsageEvent) -> bool:
    """count_tokens is free; a request that used no tokens costs nothing whatever its model."""
    if event.endpoint.rstrip("/").endswith(FREE_ENDPOINT_SUFFIXES):
        return False
    return prompt_tokens_of(event) + event.output_tokens > 0


def cost_at_rates(event: UsageEvent, rates: Rates) -> Decimal:
    batch = BATCH_MULTIPLIER if (event.service_tier or "").lower() == "batch" else Decimal(1)
    geo = rates.us_geo_multiplier if is_us_only(event.inference_geo) else Decimal(1)
    per_million = (
        event.input_tokens * rates.input * batch
        + event.output_tokens * rates.output * batch
        + event.cache_write_5m_tokens * rates.cache_write_5m
        + event.cache_write_1h_tokens * rates.cache_write_1h
        + event.cache_read_tokens * rates.cache_read
    )
    return (per_million * geo / PER_MILLION).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def as_utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment


def price_usage(event: UsageEvent) -> Decimal | None:
    """The exact USD cost of one request, or None when its model matches no price (never a silent 0)."""
    if not billable(event):
        return Decimal(0).quantize(COST_QUANTUM)
    if not event.model:
        return None
    at = as_utc(event.occurred_at)
    rates = get_price_table().rates_for(event.model, at, prompt_tokens=prompt_tokens_of(event), speed=event.speed)
    if rates is None:
        return None
    return cost_at_rates(event, rates)


def worst_case_cost(model: str, body_bytes: int, max_tokens: int, at: dt.datetime) -> Decimal:
    """An upper bound on what a request can cost, for the spend reservation.

    Every body byte may be a prompt token, billed at the dearest prompt-side rate (a 1h cache write
    is 2x input); output is bounded by max_tokens. Any speed, the US multiplier and every tier the
    body is big enough to reach are assumed, because the reservation must hold whatever the
    response turns out to be. An unknown model is bounded by the dearest rates of every known
    model, so caps still hold. (Tokens the body does not carry, such as a Files API document or
    web search results, are outside this bound; settling adds them, so a cap can be passed by them.)
    """
    table = get_price_table()
    at = as_utc(at)
    candidates = table.every_rate_for(model, at, prompt_tokens_at_most=body_bytes) or table.every_rate_at(at)
    if not candidates:
        raise LookupError("no model prices are in force: seed or add ModelPrice rows")
    prompt_rate = max(rates.prompt_side_max * max(rates.us_geo_multiplier, Decimal(1)) for rates in candidates)
    output_rate = max(rates.output * max(rates.us_geo_multiplier, Decimal(1)) for rates in candidates)
    total = (max(body_bytes, 0) * prompt_rate + max(max_tokens, 0) * output_rate) / PER_MILLION
    return total.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)
