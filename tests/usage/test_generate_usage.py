"""`manage.py generate_usage`: N realistic records (COPY on PostgreSQL), priced by the price table,
rolled up, and reported by /admin/usage with the records' own totals on either database."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Count, Sum

from tests.usage.cast import usage_event
from tokens.models import Device
from tokens.operators import create_operator_api_key
from usage.models import UsageRecord, UsageRollup
from usage.pricing import quote_usage
from usage.synthetic import SYNTHETIC_PREFIX

pytestmark = pytest.mark.usefixtures("prices")
SMALL = ["--records=3000", "--days=4", "--devices=12", "--organizations=3"]
TOKEN_SUMS = ("input_tokens", "output_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens")


def generate(*arguments: str) -> str:
    out = io.StringIO()
    call_command("generate_usage", *arguments, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_generate_usage_makes_exactly_the_records_asked_for_over_the_days_asked_for():
    generate(*SMALL)
    records = UsageRecord.objects.filter(request_id__startswith=SYNTHETIC_PREFIX)
    assert records.count() == 3000
    assert records.values("device_ref").distinct().count() <= 12
    assert Device.objects.filter(device_id__startswith=SYNTHETIC_PREFIX).count() == 12
    days = {moment.date() for moment in records.values_list("occurred_at", flat=True)}
    assert len(days) == 4


def test_generated_records_totals_match_their_hour_and_day_rollups():
    generate(*SMALL)
    records = UsageRecord.objects.aggregate(requests=Count("id"), cost=Sum("cost"), **{name: Sum(name) for name in TOKEN_SUMS})
    for period in ("hour", "day"):
        rollups = UsageRollup.objects.filter(period=period).aggregate(
            requests=Sum("requests"), cost=Sum("cost"), **{name: Sum(name) for name in TOKEN_SUMS}
        )
        # SQLite sums decimals in floating point: costs agree to 1e-8 USD there, exactly on PostgreSQL.
        assert round(rollups.pop("cost"), 8) == round(records["cost"], 8)
        assert rollups == {name: value for name, value in records.items() if name != "cost"}


def test_generated_costs_are_what_the_price_table_quotes_for_each_record():
    generate(*SMALL)
    checked = 0
    for record in UsageRecord.objects.order_by("occurred_at")[::97]:
        event = usage_event(
            request_id=record.request_id,
            occurred_at=record.occurred_at,
            endpoint=record.endpoint,
            model=record.model,
            status=record.status,
            service_tier=record.service_tier,
            **{name: getattr(record, name) for name in TOKEN_SUMS},
        )
        quote = quote_usage(event)
        assert (record.cost, record.priced, record.price_flag) == (quote.cost, quote.cost is not None, quote.flag)
        checked += 1
    assert checked == 31


def test_generated_mix_has_errors_unpriced_models_and_free_token_counts():
    generate(*SMALL)
    records = UsageRecord.objects.all()
    assert records.filter(is_error=True).exists()
    assert records.filter(priced=False, cost__isnull=True).exists()
    assert records.filter(endpoint="/v1/messages/count_tokens", cost=Decimal(0)).exists()


def test_generate_usage_refuses_a_database_that_already_holds_generated_records():
    generate(*SMALL, "--no-rollups")
    with pytest.raises(CommandError, match="already holds 3,000 generated usage records"):
        generate(*SMALL)
    generate(*SMALL, "--no-rollups", "--yes")
    assert UsageRecord.objects.count() == 6000


@pytest.mark.skipif(connection.vendor == "postgresql", reason="the limit is SQLite's")
def test_generate_usage_refuses_ten_million_records_on_sqlite():
    with pytest.raises(CommandError, match="need PostgreSQL"):
        generate("--records=10000000")
    assert not UsageRecord.objects.exists()


def test_admin_usage_for_one_device_answers_the_sum_of_its_records(client):
    generate(*SMALL, "--no-rollups")
    until = UsageRecord.objects.order_by("-occurred_at").values_list("occurred_at", flat=True)[0] + dt.timedelta(seconds=1)
    since = until - dt.timedelta(days=2)
    device = UsageRecord.objects.values("device_ref").annotate(n=Count("id")).order_by("-n")[0]["device_ref"]
    _key, secret = create_operator_api_key(name="scale", created_by=None)
    answer = client.get(
        "/admin/usage",
        {"device": device, "since": since.isoformat(), "until": until.isoformat()},
        headers={"authorization": f"Bearer {secret}"},
    ).json()
    mine = UsageRecord.objects.filter(device_ref=device, occurred_at__gte=since, occurred_at__lt=until)
    expected = mine.aggregate(requests=Count("id"), cost=Sum("cost"), **{name: Sum(name) for name in TOKEN_SUMS})
    totals = answer["totals"]
    assert {name: totals[name] for name in ("requests", *TOKEN_SUMS)} == {
        name: expected[name] for name in ("requests", *TOKEN_SUMS)
    }
    assert Decimal(totals["cost"]) == expected["cost"]
    assert totals["errors"] == mine.filter(is_error=True).count()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="indexes are dropped and rebuilt around the COPY on PostgreSQL")
def test_generate_usage_rebuilds_every_records_index_valid_on_every_partition():
    generate(*SMALL)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT parent.relname, bool_and(ix.indisvalid), count(child.inhrelid) "
            "FROM pg_index ix JOIN pg_class parent ON parent.oid = ix.indexrelid "
            "LEFT JOIN pg_inherits child ON child.inhparent = ix.indexrelid "
            "WHERE ix.indrelid = 'usage_usagerecord'::regclass GROUP BY parent.relname"
        )
        indexes = {name: (valid, partitions) for name, valid, partitions in cursor.fetchall()}
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_usagerecord'::regclass")
        months = cursor.fetchone()[0]
    assert "usage_rec_time_id" in indexes and months > 1
    assert indexes == {name: (True, months) for name in indexes}
