"""A message batch's spend, reserved as a whole before it is created and settled from its results.

Before POST /v1/messages/batches goes upstream, the worst case of every request in it is summed at
batch prices and reserved against the device's and organization's caps in one step, like a single
request's: a batch that does not fit is refused (429 spend_cap_reached) and nothing is created.
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
from decimal import Decimal
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.utils import timezone

from gateway.models import OwnedResource, OwnedResourceKind
from usage.events import UsageEvent
from usage.pricing import BATCH_MULTIPLIER, price_usage, worst_case_cost
from usage.spend import SpendReservation, release_spend, settle_spend
from usage.spend_counters import Counter

# The API processes a batch within 24 hours and then expires what is left; an hour's margin.
BATCH_RESERVATION_SECONDS = 25 * 3600


def _request_worst_case(params: dict[str, Any], at: dt.datetime) -> Decimal:
    """A single request's worst case, halved: batch halves every category, cache writes included."""
    model = params.get("model")
    if not isinstance(model, str):
        return Decimal(0)
    max_tokens = params.get("max_tokens")
    output_bound = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0 else 0
    return worst_case_cost(model, len(orjson.dumps(params)), output_bound, at) * BATCH_MULTIPLIER


def batch_worst_case_cost(body: bytes, at: dt.datetime) -> Decimal:
    """What the whole batch can cost at most; raises LookupError when no prices are in force."""
    parsed = orjson.loads(body)
    requests = parsed.get("requests") if isinstance(parsed, dict) else None
    if not isinstance(requests, list):
        return Decimal(0)
    params = [item["params"] for item in requests if isinstance(item, dict) and isinstance(item.get("params"), dict)]
    return sum((_request_worst_case(one, at) for one in params), Decimal(0))


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
