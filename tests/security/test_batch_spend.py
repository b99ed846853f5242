"""Attack 4 of issue 13: creating a batch reserved nothing, so a device with a $0.01 daily cap could
create a 1,000-request batch at max_tokens 64000. A batch is now checked and reserved as a whole
at batch prices before it is created, settled from its results and released on cancel."""

from __future__ import annotations

import datetime as dt
import math
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async

from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool  # noqa: F401  (the gateway tests' fixtures)
from tests.security.owned import batch_body, create_batch
from tests.support import enroll, enroll_device
from usage.spend import current_spend

pytestmark = pytest.mark.django_db(transaction=True)

QUANTUM = Decimal("1e-12")
COST_QUANTUM = Decimal("1e-10")
INPUT, OUTPUT, CACHE_WRITE_1H = Decimal(3), Decimal(15), Decimal(6)


def _only_sonnet_priced() -> None:
    """One price row, so the worst case below is the only one that can apply."""
    from usage.models import ModelPrice
    from usage.pricing import invalidate_price_table

    ModelPrice.objects.all().delete()
    ModelPrice.objects.create(
        model_pattern="claude-sonnet-4-5*",
        speed="standard",
        prompt_tokens_above=0,
        effective_from=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        input_per_mtok=INPUT,
        output_per_mtok=OUTPUT,
        cache_write_5m_per_mtok=Decimal("3.75"),
        cache_write_1h_per_mtok=CACHE_WRITE_1H,
        cache_read_per_mtok=Decimal("0.30"),
    )
    invalidate_price_table()


def _newest_device_pk() -> int:
    from tokens.models import Device

    return Device.objects.order_by("-pk").values_list("pk", flat=True).first()


async def capped_device(cap: str, enforcement: str = "") -> tuple[str, int]:
    await sync_to_async(_only_sonnet_priced)()
    token = await enroll_device(daily_spend_cap_usd=Decimal(cap), spend_cap_enforcement=enforcement)
    return token, await sync_to_async(_newest_device_pk)()


def expected_worst_case(count: int, max_tokens: int) -> Decimal:
    """Each request: a token per 3 params bytes plus 512 of framing at the input rate (no cache
    marks), max_tokens at the output rate, all halved (batch halves every category)."""
    params = orjson.loads(batch_body(1, max_tokens=max_tokens))["requests"][0]["params"]
    prompt_tokens = math.ceil(len(orjson.dumps(params)) / 3) + 512
    input_cost = (prompt_tokens * INPUT * Decimal("0.5") / 1_000_000).quantize(QUANTUM, ROUND_CEILING)
    output_rate = (OUTPUT * Decimal("0.5") / 1_000_000).quantize(QUANTUM, ROUND_CEILING)
    return count * (input_cost + max_tokens * output_rate)


def spend_of(device_pk: int) -> tuple[Decimal, Decimal]:
    """(settled, reserved) today."""
    return current_spend("device", device_pk, "day")


async def test_a_batch_whose_worst_case_passes_the_daily_cap_is_refused_before_it_is_created(fake_upstream):
    token, device_pk = await capped_device("0.01")
    answer = await call_gateway("POST", "/v1/messages/batches", headers=bearer(token), body=batch_body(1000, max_tokens=64000))
    body = orjson.loads(answer.body)
    assert (answer.status, body["error"]["type"], body["error"]["details"]["error_code"]) == (
        429,
        "rate_limit_error",
        "spend_cap_reached",
    )
    assert answer.headers["x-should-retry"] == "false"
    assert [seen.path for seen in fake_upstream.requests] == []
    assert spend_of(device_pk) == (Decimal(0), Decimal(0))


async def test_a_strict_device_batch_that_fits_holds_its_bound_and_one_past_the_cap_is_refused(fake_upstream):
    token, device_pk = await capped_device("1.00", "strict")
    await create_batch(token, count=3, max_tokens=1000)
    worst_case = expected_worst_case(3, 1000)
    assert spend_of(device_pk) == (Decimal(0), worst_case)
    room_left = Decimal("1.00") - worst_case
    too_big = batch_body(1, max_tokens=int(room_left * 1_000_000 / OUTPUT * 2) + 100)
    refused = await call_gateway("POST", "/v1/messages/batches", headers=bearer(token), body=too_big)
    assert (refused.status, orjson.loads(refused.body)["error"]["details"]["error_code"]) == (429, "spend_cap_reached")
    assert len([seen for seen in fake_upstream.requests if seen.path == "/v1/messages/batches"]) == 1


async def test_a_batch_past_the_cap_is_created_with_its_max_tokens_lowered_to_what_fits(fake_upstream):
    token, device_pk = await capped_device("1.00")
    answer = await call_gateway("POST", "/v1/messages/batches", headers=bearer(token), body=batch_body(3, max_tokens=64000))
    assert answer.status == 200
    sent = [seen for seen in fake_upstream.requests if seen.path == "/v1/messages/batches"]
    ceilings = {item["params"]["max_tokens"] for item in orjson.loads(sent[0].body)["requests"]}
    assert len(ceilings) == 1 and 1024 <= ceilings.pop() < 64000
    settled, reserved = spend_of(device_pk)
    assert settled == 0 and Decimal("0.99") < reserved <= Decimal("1.00")


async def test_a_canceled_batch_releases_its_reservation(fake_upstream):
    token, device_pk = await capped_device("1.00")
    batch = await create_batch(token, count=3, max_tokens=1000)
    canceled = await call_gateway("POST", f"/v1/messages/batches/{batch}/cancel", headers=bearer(token))
    assert canceled.status == 200
    assert spend_of(device_pk) == (Decimal(0), Decimal(0))


async def test_fetched_results_settle_the_batch_to_its_real_cost_once(fake_upstream):
    token, device_pk = await capped_device("1.00")
    batch = await create_batch(token, count=2, max_tokens=1000)
    first = await call_gateway("GET", f"/v1/messages/batches/{batch}/results", headers=bearer(token))
    assert first.status == 200
    usages = [orjson.loads(line)["result"]["message"]["usage"] for line in first.body.splitlines()]
    real_cost = sum(
        ((usage["input_tokens"] * INPUT + usage["output_tokens"] * OUTPUT) * Decimal("0.5") / 1_000_000).quantize(
            QUANTUM, ROUND_HALF_UP
        )
        for usage in usages
    )
    assert real_cost > 0
    assert spend_of(device_pk) == (real_cost, Decimal(0))
    again = await call_gateway("GET", f"/v1/messages/batches/{batch}/results", headers=bearer(token))
    assert again.status == 200
    assert spend_of(device_pk) == (real_cost, Decimal(0))


async def test_a_batch_naming_a_model_outside_the_allowlist_is_refused(fake_upstream):
    token = await enroll_device(allowed_models="claude-haiku-*")
    answer = await call_gateway("POST", "/v1/messages/batches", headers=bearer(token), body=batch_body(2))
    assert (answer.status, orjson.loads(answer.body)["error"]["details"]["error_code"]) == (403, "model_not_allowed")
    assert fake_upstream.requests == []


@pytest.fixture
def only_sonnet_priced(transactional_db) -> None:
    """Before the gateways start: each loads the price table once at start-up."""
    _only_sonnet_priced()


def test_a_batch_reserved_on_one_gateway_counts_on_the_other_until_canceled(only_sonnet_priced, two_gateways):
    fake, first, second = two_gateways
    token = enroll(first, daily_spend_cap_usd=Decimal("0.05"))
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json", "anthropic-version": "2023-06-01"}
    body = batch_body(4, max_tokens=1000)  # about 0.032 of a 0.05 cap: one fits, two do not
    assert expected_worst_case(4, 1000) * 2 > Decimal("0.05") > expected_worst_case(4, 1000)
    created = httpx.post(first.url + "/v1/messages/batches", content=body, headers=headers, timeout=10)
    assert created.status_code == 200
    refused = httpx.post(second.url + "/v1/messages/batches", content=body, headers=headers, timeout=10)
    assert (refused.status_code, refused.json()["error"]["details"]["error_code"]) == (429, "spend_cap_reached")
    canceled = httpx.post(second.url + f"/v1/messages/batches/{created.json()['id']}/cancel", headers=headers, timeout=10)
    assert canceled.status_code == 200
    assert httpx.post(first.url + "/v1/messages/batches", content=body, headers=headers, timeout=10).status_code == 200
    assert len([seen for seen in fake.requests if seen.path == "/v1/messages/batches"]) == 2
