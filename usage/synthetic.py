"""Years of realistic usage records, made fast: for benchmarks and capacity checks of the usage
tables (`manage.py generate_usage`, `make bench-usage`).

Records come day by day in time order, as the writer would have stored them, with traffic growing
over the period; devices are used unevenly (a few heavy, many light), each belongs to one of a few
organizations, and the model, status and token mix follow a desktop coding client's traffic. Costs
are the price table's, exactly: each (model, day) is quoted once through `usage.pricing`, and a
record's cost is its tokens at those rates in whole units of 1e-10 USD, which is exact for every
rate with at most four decimals (any other rate is quoted record by record). Prompts stay under
the 200k long-prompt tier and no record is batch, fast or US-only, so one quote per model and day
is the quote of each of its records.

On PostgreSQL the rows are streamed with COPY; elsewhere (small runs on SQLite) they go through the
writer's own insert.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import orjson
from django.db import connection, transaction
from django.utils import timezone

from tokens.models import Device, Organization, Person
from usage.events import UsageEvent
from usage.models import COST_DECIMAL_PLACES, UsageRecord
from usage.partitions import ensure_month_partitions, usage_table_is_partitioned
from usage.pricing import CATEGORIES, quote_usage
from usage.records import StoredRow, column_of, insert_ignoring_stored

SYNTHETIC_PREFIX = "synthetic-"
"""Request ids, device ids and organization names of generated data start with this."""
SYNTHETIC_ISSUER = "https://synthetic.invalid"
"""The identity provider of generated people."""
UNITS_PER_USD = 10**COST_DECIMAL_PLACES
UNITS_PER_TOKEN_PER_MTOK = UNITS_PER_USD // 1_000_000
MAX_PROMPT_TOKENS = 190_000
MODELS = (
    ("claude-sonnet-4-5-20250929", 46),
    ("claude-sonnet-4-6", 18),
    ("claude-haiku-4-5-20251001", 22),
    ("claude-opus-4-1-20250805", 6),
    ("claude-opus-4-6", 7),
    ("claude-experimental-preview", 1),
)
"""Model ids and their shares of requests; the last matches no price, so its records are unpriced."""
OUTCOMES = (
    (200, "", 9_560),
    (429, "rate_limit_error", 170),
    (529, "overloaded_error", 90),
    (400, "invalid_request_error", 80),
    (499, "client_disconnected", 50),
    (500, "api_error", 30),
    (401, "authentication_error", 20),
)
"""(status, error type, share in ten-thousandths)."""
ENDPOINTS = (("/v1/messages", 97), ("/v1/messages/count_tokens", 3))
APPS = ("claude-code", "desktop", "vscode")


@dataclass(frozen=True)
class SyntheticPlan:
    records: int
    days: int = 730
    devices: int = 2_000
    organizations: int = 40
    seed: int = 19
    until: dt.datetime | None = None


@dataclass(frozen=True)
class _Cast:
    device_pks: list[int]
    device_refs: list[str]
    org_pks: list[int | None]
    person_pks: list[int | None]
    cumulative_weights: list[float]


@dataclass(frozen=True)
class _DayQuote:
    """One model's rates on one day, as integer units of 1e-10 USD per token, and the pricing
    basis without its moment; None rates: quote each record."""

    unit_rates: tuple[int, ...] | None
    basis_tail: bytes
    flag: str
    priced: bool


def make_cast(plan: SyntheticPlan, run: str) -> _Cast:
    """The organizations, devices and people the records belong to; device weights fall off like
    Zipf's law. Each device has a person of its own but one in ten, which has none (a shared machine)."""
    orgs = Organization.objects.bulk_create(
        [Organization(name=f"{SYNTHETIC_PREFIX}{run}-org-{index:03d}") for index in range(plan.organizations)]
    )
    rng = random.Random(plan.seed)
    devices = Device.objects.bulk_create(
        [
            Device(
                device_id=f"{SYNTHETIC_PREFIX}{run}-dev-{index:05d}",
                organization=orgs[rng.randrange(len(orgs))],
                app_name=APPS[index % len(APPS)],
            )
            for index in range(plan.devices)
        ]
    )
    weights, total = [], 0.0
    for rank in range(1, len(devices) + 1):
        total += 1 / rank**0.8
        weights.append(total)
    order = list(range(len(devices)))
    rng.shuffle(order)
    people = Person.objects.bulk_create(
        [
            Person(
                issuer=SYNTHETIC_ISSUER,
                subject=f"{device.device_id}-person",
                email=f"{device.device_id}@example.invalid",
                organization_id=device.organization_id,
            )
            for index, device in enumerate(devices)
            if index % 10 != 9
        ]
    )
    person_of = {person.subject.removesuffix("-person"): person.pk for person in people}
    devices = [devices[index] for index in order]
    return _Cast(
        device_pks=[device.pk for device in devices],
        device_refs=[device.device_id for device in devices],
        org_pks=[device.organization_id for device in devices],
        person_pks=[person_of.get(device.device_id) for device in devices],
        cumulative_weights=weights,
    )


def records_per_day(plan: SyntheticPlan) -> list[int]:
    """Traffic that doubles over the period, weekdays busier than weekends; sums to plan.records."""
    start = _first_day(plan)
    weights = []
    for day in range(plan.days):
        growth = 2 ** (day / max(plan.days - 1, 1))
        weekday = (start + dt.timedelta(days=day)).weekday()
        weights.append(growth * (0.45 if weekday >= 5 else 1.0))
    scale = plan.records / sum(weights)
    counts = [math.floor(weight * scale) for weight in weights]
    for day in range(plan.records - sum(counts)):
        counts[-1 - day % plan.days] += 1
    return counts


def _first_day(plan: SyntheticPlan) -> dt.datetime:
    """The plan's days are the whole UTC days before `until`'s: no record is in the future."""
    until = (plan.until or timezone.now()).astimezone(dt.UTC)
    return until.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=plan.days)


class _Pricer:
    def __init__(self) -> None:
        self.quotes: dict[tuple[str, dt.date], _DayQuote] = {}

    def for_day(self, model: str, day: dt.datetime) -> _DayQuote:
        key = (model, day.date())
        found = self.quotes.get(key)
        if found is None:
            found = self.quotes[key] = self._quote(model, day)
        return found

    @staticmethod
    def _quote(model: str, day: dt.datetime) -> _DayQuote:
        quote = quote_usage(
            UsageEvent(request_id="quote", occurred_at=day, endpoint="/v1/messages", method="POST", model=model, input_tokens=1)
        )
        basis = quote.basis()
        basis.pop("at", None)
        tail = orjson.dumps(basis)[1:]
        if quote.match is None:
            return _DayQuote(None, tail, quote.flag, False)
        rates = quote.match.row.rates
        units = [getattr(rates, name) * UNITS_PER_TOKEN_PER_MTOK for name, _ in CATEGORIES]
        exact = all(unit == unit.to_integral_value() for unit in units)
        return _DayQuote(tuple(int(unit) for unit in units) if exact else None, tail, quote.flag, True)


def _tokens(rng: random.Random, failed: bool, free: bool) -> tuple[int, int, int, int, int]:
    """(input, output, 5m cache write, 1h cache write, cache read) of a coding client's request."""
    if failed:
        return (0, 0, 0, 0, 0)
    fresh = int(rng.lognormvariate(6.5, 1.4))
    if free:
        return (min(fresh, MAX_PROMPT_TOKENS), 0, 0, 0, 0)
    cache_read = int(rng.lognormvariate(10.2, 0.9)) if rng.random() < 0.8 else 0
    cache_write = int(rng.lognormvariate(7.5, 1.2)) if rng.random() < 0.5 else 0
    prompt_room = MAX_PROMPT_TOKENS - min(fresh, MAX_PROMPT_TOKENS)
    cache_read = min(cache_read, prompt_room)
    cache_write = min(cache_write, prompt_room - cache_read)
    one_hour = rng.random() < 0.1
    output = min(int(rng.lognormvariate(5.8, 1.1)) + 1, 32_000)
    return (min(fresh, MAX_PROMPT_TOKENS), output, 0 if one_hour else cache_write, cache_write if one_hour else 0, cache_read)


def synthetic_rows(plan: SyntheticPlan, cast: _Cast, run: str) -> Iterator[StoredRow]:
    """Every record of the plan in time order, as the writer's column values."""
    rng = random.Random(plan.seed)
    pricer = _Pricer()
    models = [model for model, _ in MODELS]
    model_weights = [share for _, share in MODELS]
    outcomes = [(status, error) for status, error, _ in OUTCOMES]
    outcome_weights = [share for _, _, share in OUTCOMES]
    endpoints = [endpoint for endpoint, _ in ENDPOINTS]
    endpoint_weights = [share for _, share in ENDPOINTS]
    recorded_at = timezone.now()
    start = _first_day(plan)
    sequence = 0
    for day_index, count in enumerate(records_per_day(plan)):
        day = start + dt.timedelta(days=day_index)
        offsets = sorted(rng.random() * 86_400 for _ in range(count))
        chosen_devices = rng.choices(range(len(cast.device_pks)), cum_weights=cast.cumulative_weights, k=count)
        chosen_models = rng.choices(models, weights=model_weights, k=count)
        chosen_outcomes = rng.choices(outcomes, weights=outcome_weights, k=count)
        chosen_endpoints = rng.choices(endpoints, weights=endpoint_weights, k=count)
        for offset, device, model, (status, error), endpoint in zip(
            offsets, chosen_devices, chosen_models, chosen_outcomes, chosen_endpoints
        ):
            sequence += 1
            occurred_at = day + dt.timedelta(seconds=offset)
            yield _row(
                rng=rng,
                request_id=f"{SYNTHETIC_PREFIX}{run}-{sequence:09d}",
                occurred_at=occurred_at,
                quote=pricer.for_day(model, day),
                model=model,
                status=status,
                error=error,
                endpoint=endpoint,
                device_pk=cast.device_pks[device],
                device_ref=cast.device_refs[device],
                org_pk=cast.org_pks[device],
                person_pk=cast.person_pks[device],
                recorded_at=recorded_at,
            )


def _row(
    *,
    rng: random.Random,
    request_id: str,
    occurred_at: dt.datetime,
    quote: _DayQuote,
    model: str,
    status: int,
    error: str,
    endpoint: str,
    device_pk: int,
    device_ref: str,
    org_pk: int | None,
    person_pk: int | None,
    recorded_at: dt.datetime,
) -> StoredRow:
    failed = status >= 400
    free = endpoint.endswith("/count_tokens")
    tokens = _tokens(rng, failed, free)
    streamed = not free and rng.random() < 0.85
    latency = rng.lognormvariate(7.6, 0.9) if not failed else rng.lognormvariate(5.0, 0.8)
    billable = not free and (tokens[0] + tokens[1] + tokens[2] + tokens[3] + tokens[4]) > 0
    if not billable:
        cost: Decimal | None = Decimal(0)
        priced, flag, pricing = True, "", {}
    elif not quote.priced:
        cost, priced, flag, pricing = None, False, quote.flag, {"at": occurred_at.isoformat()}
    else:
        cost = _cost(quote, tokens, model, occurred_at)
        priced, flag = True, quote.flag
        pricing = orjson.loads(b'{"at":"' + occurred_at.isoformat().encode() + b'",' + quote.basis_tail)
    return {
        "request_id": request_id,
        "upstream_request_id": "" if status in (401, 499) else "req_" + request_id[-9:],
        "occurred_at": occurred_at,
        "endpoint": endpoint,
        "method": "POST",
        "device_id": device_pk,
        "organization_id": org_pk,
        "device_ref": device_ref,
        "device_pk": device_pk,
        "org_pk": org_pk,
        "person_pk": person_pk,
        "session_id": f"{device_ref[-5:]}-{occurred_at:%Y%m%d%H}",
        "model": model,
        "requested_model": "",
        "status": status,
        "error_type": error,
        "is_error": failed,
        "streamed": streamed,
        "client_disconnected": status == 499,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cache_write_5m_tokens": tokens[2],
        "cache_write_1h_tokens": tokens[3],
        "cache_read_tokens": tokens[4],
        "web_search_requests": 1 if billable and rng.random() < 0.01 else 0,
        "web_fetch_requests": 0,
        "service_tier": "standard" if billable else "",
        "speed": "",
        "inference_geo": "",
        "latency_ms": round(latency, 3),
        "ttfb_ms": round(latency * 0.3, 3) if streamed and not failed else None,
        "upstream_key_name": "primary" if rng.random() < 0.7 else "secondary",
        "cost": cost,
        "priced": priced,
        "price_flag": flag,
        "pricing": pricing,
        "extra": {},
        "recorded_at": recorded_at,
    }


def _cost(quote: _DayQuote, tokens: tuple[int, ...], model: str, occurred_at: dt.datetime) -> Decimal | None:
    if quote.unit_rates is None:
        event = UsageEvent(
            request_id="quote",
            occurred_at=occurred_at,
            endpoint="/v1/messages",
            method="POST",
            model=model,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            cache_write_5m_tokens=tokens[2],
            cache_write_1h_tokens=tokens[3],
            cache_read_tokens=tokens[4],
        )
        return quote_usage(event).cost
    units = sum(count * rate for count, rate in zip(tokens, quote.unit_rates))
    return Decimal(units).scaleb(-COST_DECIMAL_PLACES)


@dataclass(frozen=True)
class GeneratedUsage:
    run: str
    records: int
    devices: int
    organizations: int
    since: dt.datetime
    until: dt.datetime


def existing_synthetic_records() -> int:
    return UsageRecord.objects.filter(request_id__startswith=SYNTHETIC_PREFIX).count()


def generate_usage(
    plan: SyntheticPlan, *, progress: Callable[[int], None] = lambda stored: None, chunk: int = 50_000
) -> GeneratedUsage:
    """Make the plan's organizations, devices and records; `progress` hears the running total."""
    run = secrets.token_hex(3)
    start = _first_day(plan)
    until = start + dt.timedelta(days=plan.days)
    with transaction.atomic():
        cast = make_cast(plan, run)
    rows = synthetic_rows(plan, cast, run)
    if connection.vendor != "postgresql":
        stored = _insert_rows(rows, progress, chunk)
    else:
        if usage_table_is_partitioned():
            ensure_month_partitions(first=start, last=until)
        with _indexes_rebuilt_after_if_empty():
            stored = _copy_rows(rows, progress, chunk)
    return GeneratedUsage(run, stored, plan.devices, plan.organizations, start, until)


@contextlib.contextmanager
def _indexes_rebuilt_after_if_empty() -> Iterator[None]:
    """Into an empty table, load without the secondary indexes and build them once at the end: three
    times faster than keeping ten indexes up to date row by row. The unique keys stay. Then ANALYZE,
    so the planner knows the new rows at once."""
    quote = connection.ops.quote_name
    table = UsageRecord._meta.db_table
    definitions: list[str] = []
    if not UsageRecord.objects.exists():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
                "(SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u'))",
                [table, table],
            )
            found = cursor.fetchall()
            for name, _ in found:
                cursor.execute(f"DROP INDEX {quote(name)}")
            # pg_indexes gives a partitioned table's index as `ON ONLY` the parent: made again that
            # way it stays invalid and no partition gets it, so every query would scan the months.
            definitions = [definition.replace(" ON ONLY ", " ON ", 1) for _, definition in found]
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if definitions and connection.in_atomic_block:
                # Inside a transaction (a test's) the rows' deferred foreign key checks are still
                # pending, and PostgreSQL refuses to index a partition with pending trigger events.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for definition in definitions:
                cursor.execute(definition)
            cursor.execute(f"ANALYZE {quote(table)}")


def _insert_rows(rows: Iterator[StoredRow], progress: Callable[[int], None], chunk: int) -> int:
    stored, batch = 0, []
    for row in rows:
        batch.append(row)
        if len(batch) == chunk:
            stored += _insert_batch(batch, progress, stored)
            batch = []
    if batch:
        stored += _insert_batch(batch, progress, stored)
    return stored


def _insert_batch(batch: list[StoredRow], progress: Callable[[int], None], before: int) -> int:
    with transaction.atomic():
        insert_ignoring_stored(batch)
    progress(before + len(batch))
    return len(batch)


_COPY_COLUMNS = [field for field in UsageRecord._meta.concrete_fields if not field.primary_key]
_JSON_COLUMNS = ("pricing", "extra")


def _copy_rows(rows: Iterator[StoredRow], progress: Callable[[int], None], chunk: int) -> int:
    """COPY in one transaction per chunk, so a run stopped half-way keeps what it made. JSON
    columns go as their text, which PostgreSQL parses into jsonb."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column_of(field)) for field in _COPY_COLUMNS)
    names = [field.attname for field in _COPY_COLUMNS]
    json_at = [names.index(name) for name in _JSON_COLUMNS]
    sql = f"COPY {quote(UsageRecord._meta.db_table)} ({columns}) FROM STDIN"
    stored = 0
    batch: list[list[object]] = []
    for row in rows:
        values = [row[name] for name in names]
        for index in json_at:
            values[index] = orjson.dumps(values[index]).decode()
        batch.append(values)
        if len(batch) == chunk:
            stored += _copy_batch(sql, batch)
            progress(stored)
            batch = []
    if batch:
        stored += _copy_batch(sql, batch)
        progress(stored)
    return stored


def _copy_batch(sql: str, batch: list[list[object]]) -> int:
    with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for values in batch:
            copy.write_row(values)
    return len(batch)


def analyze_rollup_tables() -> None:
    """Statistics for the rollup tables just filled in bulk. Until autovacuum gets to them the planner
    guesses a few rows where there are a hundred thousand and sorts 30 days of rollups on disk
    instead of hashing them: the first views after a load would time that, not the pages."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE usage_usagerollup, usage_dailyusage, usage_rolledupbucket")
