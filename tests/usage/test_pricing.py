"""Costs to the micro-dollar (exactly, in fact) against hand-computed cases, one per pricing rule,
on the price table the data migration seeds from docs/anthropic-api.md."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
import pytest

from tests.usage.cast import NOV_25, usage_event
from usage.models import ModelPrice, PriceFlag, Provenance
from usage.price_table import PriceMatch, PriceRow, Rates
from usage.pricing import ONE, PriceQuote, get_price_table, price_usage, quote_usage
from usage.spend_estimate import CostEstimate, estimate_message_cost

pytestmark = pytest.mark.usefixtures("prices")
UTC = dt.UTC


def test_every_category_at_its_own_rate():
    # Sonnet 4.5: 1000*3 + 500*15 + 2000*3.75 + 1000*6 + 3000*0.30 = 24,900 per million
    event = usage_event(
        input_tokens=1000, output_tokens=500, cache_write_5m_tokens=2000, cache_write_1h_tokens=1000, cache_read_tokens=3000
    )
    assert price_usage(event) == Decimal("0.0249")


def test_most_specific_pattern_wins():
    # Fable 5.1 reads cache at 0.25, Fable 5 (the broader pattern) at 1.00
    assert price_usage(usage_event(model="claude-fable-5-1", cache_read_tokens=1_000_000)) == Decimal("0.25")
    assert price_usage(usage_event(model="claude-fable-5", cache_read_tokens=1_000_000)) == Decimal("1")
    assert price_usage(usage_event(model="claude-mythos-5-1-20261001", cache_read_tokens=1_000_000)) == Decimal("0.25")


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5[1m]", "Claude-Sonnet-4-5-20250929[1m]"]
)
def test_dated_undated_and_suffixed_ids_price_alike(model):
    assert price_usage(usage_event(model=model, input_tokens=1000, output_tokens=1000)) == Decimal("0.018")


def test_price_change_applies_from_its_effective_date():
    # Sonnet 5.5 cache reads: 0.20 until 2026-10-07, then 0.10
    last_second = dt.datetime(2026, 10, 6, 23, 59, 59, tzinfo=UTC)
    before = usage_event(model="claude-sonnet-5-5", occurred_at=last_second, cache_read_tokens=1_000_000)
    after = usage_event(model="claude-sonnet-5-5", occurred_at=dt.datetime(2026, 10, 7, tzinfo=UTC), cache_read_tokens=1_000_000)
    assert price_usage(before) == Decimal("0.2")
    assert price_usage(after) == Decimal("0.1")
    # Sonnet 5 (no change) keeps 0.20 after the date
    assert price_usage(usage_event(model="claude-sonnet-5", cache_read_tokens=1_000_000)) == Decimal("0.2")


def test_long_prompt_tier_prices_every_token_including_output():
    # prompt = 150,000 input + 40,000 cache read + 10,001 cache write = 200,001 > 200k: all at long-context rates
    # 150000*6 + 40000*0.60 + 10001*7.50 + 1000*22.50 = 1,021,507.5 per million
    event = usage_event(input_tokens=150_000, cache_read_tokens=40_000, cache_write_5m_tokens=10_001, output_tokens=1000)
    assert price_usage(event) == Decimal("1.0215075")


def test_prompt_of_exactly_the_threshold_stays_in_the_base_tier():
    # 200,000 is not more than 200k: 150000*3 + 40000*0.30 + 10000*3.75 + 1000*15 = 514,500
    event = usage_event(input_tokens=150_000, cache_read_tokens=40_000, cache_write_5m_tokens=10_000, output_tokens=1000)
    assert price_usage(event) == Decimal("0.5145")


def test_long_prompt_tier_only_for_the_models_that_have_it():
    # Sonnet 4 (dated id) has it: 250000*6 + 100*22.50; Sonnet 4.6 does not: 250000*3 + 100*15
    sonnet_4 = usage_event(model="claude-sonnet-4-20250514", input_tokens=250_000, output_tokens=100)
    assert price_usage(sonnet_4) == Decimal("1.50225")
    assert price_usage(usage_event(model="claude-sonnet-4-6", input_tokens=250_000, output_tokens=100)) == Decimal("0.7515")


def test_haiku_5_5_tier_above_100k():
    # 100,001 input: 100001*0.50 + 2000*2.50 = 55,000.5; 100,000 input: 100000*0.10 + 2000*0.50 = 11,000
    assert price_usage(usage_event(model="claude-haiku-5-5", input_tokens=100_001, output_tokens=2000)) == Decimal("0.0550005")
    assert price_usage(usage_event(model="claude-haiku-5-5", input_tokens=100_000, output_tokens=2000)) == Decimal("0.011")


def test_batch_halves_every_category_cache_writes_and_reads_included():
    # (10000*3 + 2000*15 + 10000*0.30 + 1000*3.75 + 1000*6) * 0.5 = 36,375
    event = usage_event(
        service_tier="batch",
        input_tokens=10_000,
        output_tokens=2000,
        cache_read_tokens=10_000,
        cache_write_5m_tokens=1000,
        cache_write_1h_tokens=1000,
    )
    assert price_usage(event) == Decimal("0.036375")


def test_batch_and_cache_multipliers_stack_a_cached_batch_read_costs_5_percent_of_input():
    # Opus 4.6: 1,000,000 cache reads in a batch = 0.50 * 0.5 = 0.25, i.e. 5 % of the $5 input price
    event = usage_event(model="claude-opus-4-6", service_tier="batch", cache_read_tokens=1_000_000)
    assert price_usage(event) == Decimal("0.25") == Decimal("0.05") * 5


def test_batch_tier_and_geo_all_multiply():
    # Sonnet 4.5 long context in a batch: (250000*6 + 10000*7.50 + 1000*22.50) * 0.5 = 798,750
    event = usage_event(service_tier="batch", input_tokens=250_000, cache_write_5m_tokens=10_000, output_tokens=1000)
    assert price_usage(event) == Decimal("0.79875")
    # Opus 4.6, US-only, batch: (1000*5 + 1000*10) * 0.5 * 1.1 = 8,250
    us_batch = usage_event(
        model="claude-opus-4-6", service_tier="batch", inference_geo="us", input_tokens=1000, cache_write_1h_tokens=1000
    )
    assert price_usage(us_batch) == Decimal("0.00825")


def test_fast_mode_on_a_model_without_a_fast_rate_is_flagged_fallback_not_silently_standard():
    # Sonnet 4.5 has no fast row: priced at its standard 1000*3 + 1000*15, flagged
    quote = quote_usage(usage_event(speed="fast", input_tokens=1000, output_tokens=1000))
    assert (quote.cost, quote.flag) == (Decimal("0.018"), PriceFlag.FALLBACK)
    standard = quote_usage(usage_event(speed="standard", input_tokens=1000, output_tokens=1000))
    assert (standard.cost, standard.flag) == (Decimal("0.018"), PriceFlag.EXACT)


def test_fast_cache_rates_are_marked_assumed_and_flag_the_request():
    row = ModelPrice.objects.get(model_pattern="claude-opus-5-5*", speed="fast")
    assert row.provenance == Provenance.ASSUMED
    assert ModelPrice.objects.get(model_pattern="claude-opus-5-5*", speed="standard").provenance == Provenance.DERIVED
    # 1000*8 + 1000*40 + 1000*10 (assumed 5m write rate) = 58,000
    quote = quote_usage(
        usage_event(model="claude-opus-5-5", speed="fast", input_tokens=1000, output_tokens=1000, cache_write_5m_tokens=1000)
    )
    assert (quote.cost, quote.flag) == (Decimal("0.058"), PriceFlag.ASSUMED)
    assert quote_usage(usage_event(model="claude-opus-5-5", input_tokens=1000)).flag == PriceFlag.EXACT


def test_the_bare_id_claude_sonnet_4_gets_the_long_context_tier():
    # 250000*6 + 100*22.50, like claude-sonnet-4-0 and claude-sonnet-4-20250514
    for model in ("claude-sonnet-4", "claude-sonnet-4-0", "claude-sonnet-4-20250514", "claude-sonnet-4[1m]"):
        assert price_usage(usage_event(model=model, input_tokens=250_000, output_tokens=100)) == Decimal("1.50225"), model
    # and stays at the base rate below the threshold
    assert price_usage(usage_event(model="claude-sonnet-4", input_tokens=1000, output_tokens=1000)) == Decimal("0.018")


def test_a_batch_is_priced_at_the_rates_in_force_when_it_was_created():
    # Sonnet 5.5 cache reads: created before the 2026-10-07 cut (0.20), results fetched after it (0.10 would be wrong)
    event = usage_event(
        model="claude-sonnet-5-5",
        service_tier="batch",
        cache_read_tokens=1_000_000,
        occurred_at=dt.datetime(2026, 10, 7, 1, tzinfo=UTC),
        priced_at=dt.datetime(2026, 10, 6, 23, tzinfo=UTC),
    )
    quote = quote_usage(event)
    assert quote.cost == Decimal("0.1")  # 0.20 * 0.5
    assert quote.basis()["at"] == "2026-10-06T23:00:00+00:00"
    assert quote.basis()["effective_from"] == "2020-01-01T00:00:00+00:00"


def test_fast_speed_has_its_own_rates():
    fast = usage_event(model="claude-opus-5-5", speed="fast", input_tokens=1000, output_tokens=1000)
    standard = usage_event(model="claude-opus-5-5", speed="standard", input_tokens=1000, output_tokens=1000)
    assert price_usage(fast) == Decimal("0.048")  # 1000*8 + 1000*40
    assert price_usage(standard) == Decimal("0.024")  # 1000*4 + 1000*20


def test_us_only_inference_costs_1_1x_for_opus_4_6_and_newer_only():
    tokens = {"input_tokens": 1000, "output_tokens": 1000, "cache_read_tokens": 1000, "cache_write_1h_tokens": 1000}
    # (1000*5 + 1000*25 + 1000*0.50 + 1000*10) = 40,500; x1.1 = 44,550
    assert price_usage(usage_event(model="claude-opus-4-6", inference_geo="us", **tokens)) == Decimal("0.04455")
    assert price_usage(usage_event(model="claude-opus-4-6", inference_geo="global", **tokens)) == Decimal("0.0405")
    assert price_usage(usage_event(model="claude-opus-4-5-20251101", inference_geo="us", **tokens)) == Decimal("0.0405")


def test_batch_and_geo_combine():
    # Haiku 5.5: (1000*0.10*0.5 + 1000*0.50*0.5) * 1.1 = 330
    event = usage_event(model="claude-haiku-5-5", service_tier="batch", inference_geo="us", input_tokens=1000, output_tokens=1000)
    assert price_usage(event) == Decimal("0.00033")


def test_cache_writes_split_by_ttl():
    # Opus 5.5: 1000*5 (5m) + 1000*8 (1h) = 13,000
    event = usage_event(model="claude-opus-5-5", cache_write_5m_tokens=1000, cache_write_1h_tokens=1000)
    assert price_usage(event) == Decimal("0.013")


@pytest.mark.parametrize("streamed", [True, False])
def test_cache_reads_are_priced_as_cache_reads_streamed_or_not(streamed):
    # Sonnet 5: 50,000 cache reads at 0.20 = 0.01, never at the 2.00 input rate (0.10)
    event = usage_event(model="claude-sonnet-5", streamed=streamed, input_tokens=10, cache_read_tokens=50_000, output_tokens=20)
    assert price_usage(event) == Decimal("0.01022")  # 10*2 + 50000*0.20 + 20*10


def test_unknown_model_has_no_price_rather_than_zero():
    assert price_usage(usage_event(model="gpt-4o", input_tokens=1000, output_tokens=10)) is None
    assert price_usage(usage_event(model=None, input_tokens=1000)) is None
    assert quote_usage(usage_event(model="gpt-4o", input_tokens=1000)).flag == PriceFlag.UNKNOWN


def test_the_exact_pattern_beats_a_wildcard_with_the_same_letters():
    ModelPrice.objects.create(
        model_pattern="claude-haiku-4-5",
        effective_from=dt.datetime(2020, 1, 1, tzinfo=UTC),
        input_per_mtok=7,
        output_per_mtok=7,
        cache_write_5m_per_mtok=7,
        cache_write_1h_per_mtok=7,
        cache_read_per_mtok=7,
    )
    assert price_usage(usage_event(model="claude-haiku-4-5", input_tokens=1_000_000)) == Decimal("7")
    assert price_usage(usage_event(model="claude-haiku-4-5-20251001", input_tokens=1_000_000)) == Decimal("1")


def test_requests_without_tokens_and_count_tokens_cost_nothing():
    assert price_usage(usage_event(model="gpt-4o", status=401)) == Decimal(0)
    assert price_usage(usage_event(endpoint="/v1/messages/count_tokens", input_tokens=5000)) == Decimal(0)


def test_costs_are_exact_decimals_to_ten_places():
    # Haiku 5.5 with US geo: 1 cache-write token at 0.125*1.1 per million = 0.0000001375
    cost = price_usage(usage_event(model="claude-haiku-5-5", inference_geo="us", cache_write_5m_tokens=1))
    assert cost == Decimal("0.0000001375")
    assert cost.as_tuple().exponent == -10


def test_price_lookups_do_not_query_the_database(django_assert_num_queries):
    get_price_table()
    with django_assert_num_queries(0):
        for _ in range(100):
            price_usage(usage_event(input_tokens=10, output_tokens=10))


def test_saving_a_price_takes_effect_at_once():
    event = usage_event(model="claude-haiku-4-5", output_tokens=1_000_000)
    assert price_usage(event) == Decimal("5")
    row = ModelPrice.objects.get(model_pattern="claude-haiku-4-5*")
    row.output_per_mtok = Decimal("4.5")
    row.save()
    assert price_usage(event) == Decimal("4.5")


def test_an_operator_can_schedule_a_new_price():
    ModelPrice.objects.create(
        model_pattern="claude-haiku-4-5*",
        effective_from=dt.datetime(2026, 12, 1, tzinfo=UTC),
        input_per_mtok=1,
        output_per_mtok=4,
        cache_write_5m_per_mtok="1.25",
        cache_write_1h_per_mtok=2,
        cache_read_per_mtok="0.1",
    )
    assert price_usage(usage_event(model="claude-haiku-4-5", output_tokens=1_000_000)) == Decimal("5")
    later = usage_event(model="claude-haiku-4-5", output_tokens=1_000_000, occurred_at=dt.datetime(2026, 12, 1, tzinfo=UTC))
    assert price_usage(later) == Decimal("4")


def estimate_of(model: str, body: dict) -> CostEstimate:
    return estimate_message_cost(model, body, orjson.dumps(body), NOV_25, min_output_tokens=1024)


def test_the_estimate_assumes_fast_speed_and_us_geo():
    # Opus 5.5 fast, US: output 40*1.1 a million tokens
    assert estimate_of("claude-opus-5-5", {"max_tokens": 100}).output_rate == Decimal("0.000044")


def test_the_estimate_of_an_unknown_model_uses_the_dearest_known_prices():
    # output: Opus 4.1 at 75 (above every other row with its geo multiplier)
    assert estimate_of("some-new-model", {"max_tokens": 100}).output_rate == Decimal("0.000075")


def test_a_prompt_estimated_past_a_tier_is_priced_at_the_tier():
    # Sonnet 4.5 above 200k prompt tokens: 22.50 output instead of 15
    assert estimate_of("claude-sonnet-4-5-20250929", {"max_tokens": 1, "system": "x" * 10}).output_rate == Decimal("0.000015")
    assert estimate_of("claude-sonnet-4-5-20250929", {"max_tokens": 1, "system": "x" * 700_000}).output_rate == Decimal(
        "0.0000225"
    )


def test_a_basis_prints_each_rows_rates_as_that_row_has_them():
    """Bases are made once per price row; two rows equal as numbers but printed differently (3 and
    3.00) must each keep their own printing, so the rows are told apart by identity, not equality."""

    def quote_from(rate: str, row_id: int) -> PriceQuote:
        rates = Rates(Decimal(rate), Decimal("15"), Decimal("3.75"), Decimal("6"), Decimal("0.3"), Decimal("1.1"))
        row = PriceRow("claude-x*", "", 0, NOV_25, rates, id=row_id)
        return PriceQuote(Decimal("1"), PriceFlag.EXACT, NOV_25, PriceMatch(row, False), ONE, ONE)

    plain, padded = quote_from("3", 7), quote_from("3.00", 7)
    assert plain.match == padded.match  # equal rows: an equality-keyed cache would print the first twice
    assert [plain.basis()["rates"]["input"], padded.basis()["rates"]["input"]] == ["3", "3.00"]
    assert plain.basis() == {
        "at": NOV_25.isoformat(),
        "row": 7,
        "pattern": "claude-x*",
        "effective_from": NOV_25.isoformat(),
        "speed": "",
        "tier_above": 0,
        "provenance": "published",
        "rates": {"input": "3", "output": "15", "cache_write_5m": "3.75", "cache_write_1h": "6", "cache_read": "0.3"},
        "batch": "1",
        "geo": "1",
    }
