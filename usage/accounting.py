"""The one call the gateway makes once a request is over: what the request used becomes a usage
record, a price, and spent money.

The record is queued first and whatever happens to the spend counters after: a request the client
got an answer for is recorded even when Redis fails at that moment. A reservation is settled to the
price when the upstream reported usage, and released when it reported none (the request never
reached the model, so nothing was spent).
"""

from __future__ import annotations

from decimal import Decimal

from usage.events import UsageEvent
from usage.pricing import price_usage
from usage.spend import SpendReservation, release_spend, settle_spend
from usage.writer import submit_usage


async def account_usage(event: UsageEvent, *, usage_reported: bool, reservation: SpendReservation | None) -> Decimal | None:
    """Submit the record, price it, settle or release the spend reservation; returns the cost (None
    when no usage was reported or the model has no price)."""
    try:
        submit_usage(event)
    finally:
        cost = price_usage(event) if usage_reported else None
        if reservation is not None:
            if usage_reported:
                await settle_spend(reservation, cost)
            else:
                await release_spend(reservation)
    return cost
