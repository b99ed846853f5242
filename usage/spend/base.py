"""Spend counters: the interface both backends implement (`local`, `redis`) and the values they
take and answer. Amounts are integer nano-dollars, rounded up, so neither Redis nor Lua ever sees a
float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

NANO = Decimal("1e-9")
# The most one reservation holds: 2**53 nano-dollars (about $9 million) is exact in Lua's numbers, and
# a few hundred of them still fit a Redis counter. A request's bound is the device's own claim (its
# max_tokens, up to 2**64): reserved as is, an absurd one overflowed the counter in the Redis script.
MAX_RESERVATION_NANOS = 2**53


def to_nanos(amount: Decimal) -> int:
    return int((Decimal(amount) / NANO).to_integral_value(rounding=ROUND_CEILING))


def from_nanos(units: int) -> Decimal:
    return (Decimal(units) * NANO).quantize(NANO)


@dataclass(frozen=True, slots=True)
class Counter:
    """One cap's running total, e.g. `device:12:day:2026-11-25`; it lives until `expires_at` (epoch s)."""

    name: str
    expires_at: float

    @property
    def subject(self) -> str:
        """`device:12`: whose spend it counts (a device, person or organization)."""
        scope, pk, _ = self.name.split(":", 2)
        return f"{scope}:{pk}"

    @property
    def period_bucket(self) -> str:
        """`day:2026-11-25`: which period of the subject's."""
        return self.name.split(":", 2)[2]


@dataclass(frozen=True, slots=True)
class CapCheck:
    counter: Counter
    cap_nanos: int
    scope: str  # "device", "person" or "org"
    period: str  # "day", "week" or "month"
    resets_at: float  # epoch seconds: the period's end
    subject_pk: int = 0  # the device's or organization's primary key
    starts_at: float = 0.0  # epoch seconds: the period's start
    alert_thresholds: tuple[int, ...] = ()  # percentages of the cap at which operators are told


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    """`granted` nanos were reserved in every counter; or none were (`granted` None) and `failed`
    is the index of the first cap without room for the minimum, with that counter's state."""

    granted: int | None
    failed: int | None = None
    settled: int = 0
    reserved: int = 0


class SpendBackend(Protocol):
    async def reserve(
        self, checks: list[CapCheck], nanos: int, request_id: str, now: float, ttl_seconds: float, *, floor: int | None = None
    ) -> ReserveOutcome:
        """Reserve until `now + ttl_seconds`, in every counter or in none: `nanos` when every cap has
        room for it, else the least room left when that is at least `floor` (`floor` defaults to
        `nanos`: all or nothing). A negative `floor` reserves `nanos` whatever the caps say (a soft
        cap: counted, never refused)."""

    async def finish(
        self, counters: tuple[Counter, ...], request_id: str, actual_nanos: int | None, now: float
    ) -> tuple[int, ...]:
        """Drop the reservation; add `actual_nanos` to the settled totals unless None (released).
        Returns each counter's settled total after, in the same atomic step: the one settle that
        moves a counter across a budget threshold is the one that sees it cross."""

    def raise_settled_to(self, totals: dict[Counter, int]) -> None:
        """Reconciliation: each counter's settled total becomes at least the database's figure."""

    def adjust_settled(self, deltas: dict[Counter, int]) -> None:
        """Repricing: move each existing counter's settled total by its delta, never below zero.
        A counter that does not exist yet is left to be loaded from the database."""

    def snapshot(self, counter: Counter, now: float) -> tuple[int, int]:
        """(settled, live reserved) nanos."""
