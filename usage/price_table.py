"""The ModelPrice table as pricing reads it: rows matched to a model id, in force at a moment, held
in process.

The table is held in process and reloaded after USAGE_PRICE_CACHE_SECONDS (or at once when an
operator saves a price in this process), so pricing on the hot path never queries the database.
Inside an event loop a stale table keeps serving while a helper thread reloads it; only the very
first load of a process waits for the database.

Matching: ids are compared lower-cased without a `[...]` suffix; the most specific pattern wins
(more literal characters first, then fewer wildcards, so the bare `claude-sonnet-4` beats
`claude-sonnet-4*`). Which pattern an id matches is remembered per table, so the fnmatch scan runs
once per model id rather than once per request.
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
from decimal import Decimal

from django.conf import settings
from django.db import close_old_connections
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from proxyproject.lib.logging import log_event
from usage.models import ModelPrice, Provenance, Speed

_SUFFIX = re.compile(r"\[[^\]]*\]$")
_MATCH_MEMO_LIMIT = 4096
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
    id: int | None = None
    provenance: str = Provenance.PUBLISHED


@dataclass(frozen=True, slots=True)
class PriceMatch:
    """The row a request is priced from; `fallback`: fast was asked for and the model has no fast row."""

    row: PriceRow
    fallback: bool


def pattern_specificity(pattern: str) -> tuple[int, int, int, str]:
    """Sort key, most specific first: literal characters count, `*` counts nothing, a `[...]` set one;
    among equals, fewer wildcards first."""
    literal = len(re.sub(r"\[[^\]]*\]", "?", pattern).replace("*", ""))
    return (-literal, pattern.count("*"), -len(pattern), pattern)


def normalize_model_id(model: str) -> str:
    """`claude-opus-4-8[1m]` and `Claude-Opus-4-8` price as `claude-opus-4-8`."""
    return _SUFFIX.sub("", model.strip()).lower()


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
        self._matching_patterns: dict[str, tuple[str, ...]] = {}

    def _in_force(self, pattern: str, at: dt.datetime) -> list[PriceRow]:
        """The latest row of each (speed, tier) of `pattern` that had started by `at`."""
        latest: dict[tuple[str, int], PriceRow] = {}
        for row in self._rows[pattern]:
            if row.effective_from <= at:
                latest.setdefault((row.speed, row.prompt_tokens_above), row)
        return list(latest.values())

    def _patterns_matching(self, model: str) -> tuple[str, ...]:
        model_id = normalize_model_id(model)
        found = self._matching_patterns.get(model_id)
        if found is None:
            found = tuple(pattern for pattern in self._patterns if fnmatch.fnmatchcase(model_id, pattern.lower()))
            if len(self._matching_patterns) >= _MATCH_MEMO_LIMIT:
                self._matching_patterns.clear()
            self._matching_patterns[model_id] = found
        return found

    def _matching_rows(self, model: str, at: dt.datetime) -> list[PriceRow]:
        """The rows in force at `at` of the most specific pattern that has any."""
        for pattern in self._patterns_matching(model):
            rows = self._in_force(pattern, at)
            if rows:
                return rows
        return []

    def match(self, model: str, at: dt.datetime, *, prompt_tokens: int, fast: bool) -> PriceMatch | None:
        rows = self._matching_rows(model, at)
        if not rows:
            return None
        wanted = Speed.FAST if fast else Speed.STANDARD
        same_speed = [row for row in rows if row.speed == wanted]
        fallback = not same_speed
        candidates = same_speed or [row for row in rows if row.speed == Speed.STANDARD] or rows
        tiers = sorted(candidates, key=lambda row: row.prompt_tokens_above, reverse=True)
        chosen = next((row for row in tiers if prompt_tokens > row.prompt_tokens_above), tiers[-1])
        return PriceMatch(chosen, fallback)

    def every_rate_for(self, model: str, at: dt.datetime, *, prompt_tokens_at_most: int) -> list[Rates]:
        """All rates a request for `model` with a prompt of at most that size could be billed at."""
        rows = self._matching_rows(model, at)
        reachable = [row for row in rows if row.prompt_tokens_above < prompt_tokens_at_most or row.prompt_tokens_above == 0]
        return [row.rates for row in reachable]

    def every_rate_at(self, at: dt.datetime) -> list[Rates]:
        return [row.rates for pattern in self._patterns for row in self._in_force(pattern, at)]


def row_from_model(price: ModelPrice) -> PriceRow:
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
        id=price.pk,
        provenance=price.provenance,
    )


def load_price_table() -> PriceTable:
    return PriceTable([row_from_model(price) for price in ModelPrice.objects.all()])


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
    if table is not None and time.monotonic() - _cache.loaded_at < settings.USAGE_PRICE_CACHE_SECONDS:
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
