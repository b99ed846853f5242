"""A message batch's spend, reserved as a whole before it is created and settled from its results.

Before POST /v1/messages/batches goes upstream, the estimate of every request in it
(`usage.spend_estimate`, at batch prices) is summed and reserved against the device's and
organization's caps in one step, by the rule of a single request: all of it when it fits; else, in
clamp mode, what the caps have left when that covers every request's minimum, every request's
max_tokens then lowered to one common ceiling that fits (`clamp_batch`); else refused (429
spend_cap_reached) and nothing is created.
The reservation is kept with the batch's ownership row and held for the batch's lifetime
(BATCH_RESERVATION_SECONDS), because its requests run and are billed long after the create call:

- results fetched (by the owner, through the gateway): the batch's cost, priced from the results
  as `gateway.batch_usage` records them, replaces the reservation, once (the row's `settled_at`
  decides which fetch does it, across instances);
- canceled: the reservation is released; results fetched afterwards still add what the requests
  that ran before the cancel cost;
- never fetched: the reservation lapses with the batch (its TTL in the spend counters), so an
  expired batch releases itself without a task.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.utils import timezone

from gateway.models import OwnedResource, OwnedResourceKind
from usage.events import UsageEvent
from usage.pricing import price_usage
from usage.spend import Counter, SpendReservation, release_spend, settle_spend
from usage.spend_estimate import CostEstimate, clamped_params, estimate_message_cost

# The API processes a batch within 24 hours and then expires what is left; an hour's margin.
BATCH_RESERVATION_SECONDS = 25 * 3600


@dataclass(frozen=True, slots=True)
class BatchEstimate:
    parsed: dict[str, Any]
    requests: tuple[tuple[dict[str, Any], CostEstimate], ...]  # each request item and its estimate

    @property
    def full(self) -> Decimal:
        return sum((estimate.full for _, estimate in self.requests), Decimal(0))

    @property
    def minimum(self) -> Decimal:
        return sum((estimate.minimum for _, estimate in self.requests), Decimal(0))

    def cost_with_ceiling(self, ceiling: int) -> Decimal:
        return sum(
            (e.input_cost + min(e.max_tokens, ceiling) * e.output_rate for _, e in self.requests),
            Decimal(0),
        )


def estimate_batch(body: bytes, at: dt.datetime, *, min_output_tokens: int) -> BatchEstimate:
    """Every request's estimate at batch prices; raises LookupError when no prices are in force."""
    parsed = orjson.loads(body)
    items = parsed.get("requests") if isinstance(parsed, dict) else None
    estimates = []
    for item in items if isinstance(items, list) else []:
        params = item.get("params") if isinstance(item, dict) else None
        if isinstance(params, dict) and isinstance(params.get("model"), str):
            estimate = estimate_message_cost(
                params["model"], params, orjson.dumps(params), at, min_output_tokens=min_output_tokens, batch=True
            )
            estimates.append((item, estimate))
    return BatchEstimate(parsed, tuple(estimates))


def clamp_batch(batch: BatchEstimate, granted: Decimal) -> bytes:
    """The batch body with every request's max_tokens lowered to the highest common ceiling whose
    total fits `granted` (the caps granted at least every request's minimum, so one exists)."""
    low, high = 0, max((e.max_tokens for _, e in batch.requests), default=0)
    while low < high:
        middle = (low + high + 1) // 2
        if batch.cost_with_ceiling(middle) <= granted:
            low = middle
        else:
            high = middle - 1
    for item, estimate in batch.requests:
        if estimate.max_tokens > low:
            item["params"] = clamped_params(item["params"], low)
    return orjson.dumps(batch.parsed)


def batch_cost(results: list[UsageEvent]) -> Decimal | None:
    """What the batch's succeeded results cost; None when one of them has no price."""
    total = Decimal(0)
    for event in results:
        price = price_usage(event)
        if price is None:
            return None
        total += price
    return total


def reservation_to_json(reservation: SpendReservation) -> dict[str, Any]:
    return {
        "request_id": reservation.request_id,
        "amount": str(reservation.amount),
        "nanos": reservation.nanos,
        "counters": [[counter.name, counter.expires_at] for counter in reservation.counters],
    }


def reservation_from_json(stored: dict[str, Any]) -> SpendReservation:
    counters = tuple(Counter(name, expires_at) for name, expires_at in stored["counters"])
    return SpendReservation(stored["request_id"], Decimal(stored["amount"]), stored["nanos"], counters)


def _stored_reservation(batch_id: str) -> dict[str, Any] | None:
    rows = OwnedResource.objects.filter(kind=OwnedResourceKind.MESSAGE_BATCH, resource_id=batch_id)
    return rows.values_list("reservation", flat=True).first()


def _claim_settlement(batch_id: str) -> dict[str, Any] | None:
    """The reservation, to the one caller that marks the batch settled first; None to the others."""
    rows = OwnedResource.objects.filter(
        kind=OwnedResourceKind.MESSAGE_BATCH, resource_id=batch_id, reservation__isnull=False, settled_at__isnull=True
    )
    if rows.update(settled_at=timezone.now()) != 1:
        return None
    return _stored_reservation(batch_id)


async def settle_batch_spend(batch_id: str, cost: Decimal | None) -> bool:
    """The batch's results were read whole: its cost replaces its reservation (None, a result had
    no price: the reserved worst case stays spent). False when the batch has no reservation (no
    caps when it was created) or was settled already."""
    stored = await sync_to_async(_claim_settlement)(batch_id)
    if stored is None:
        return False
    await settle_spend(reservation_from_json(stored), cost)
    return True


async def release_batch_spend(batch_id: str) -> None:
    """The batch was canceled: what it has not run will not be billed."""
    stored = await sync_to_async(_stored_reservation)(batch_id)
    if stored is not None:
        await release_spend(reservation_from_json(stored))
