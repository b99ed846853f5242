"""Seed ModelPrice from the price table in docs/anthropic-api.md (USD per million tokens, late 2026).

Operators edit these rows in the admin afterwards; this migration only fills an empty table and
removes only the rows it added, so it never overwrites an operator's prices.

Choices the table leaves open, made explicit here:
- Families sharing a price but not the US-only multiplier get their own patterns: Opus 4.5 is
  older than Opus 4.6, so `claude-opus-4-5*` is 1.0x while `claude-opus-4-[6-8]*` is 1.1x; Sonnet 4.6
  (`claude-sonnet-4-6*`) is newer than Opus 4.6, Sonnet 4.5/4/3.7 are not.
- The long-prompt tier of Sonnet 4.5 and 4 lives on their own patterns (4-5, 4-0, the dated
  `claude-sonnet-4-2025*` and the bare id `claude-sonnet-4`) next to a base row, so Sonnet 4.6 and
  3.7 never get it.
- Opus 5.5 fast is published as 8 / 40; its cache rates keep Opus 5.5's own ratios to input
  (1.25x, 2x, 0.05x), doubled like input: 10 / 16 / 0.40.
"""

import datetime as dt
from decimal import Decimal

from django.db import migrations

SEED_START = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
SONNET_5_5_CACHE_READ_CUT = dt.datetime(2026, 10, 7, tzinfo=dt.UTC)
SONNET_4_5_AND_4 = ("claude-sonnet-4-5*", "claude-sonnet-4-0*", "claude-sonnet-4-2025*", "claude-sonnet-4")

# (patterns, label, speed, prompt_tokens_above, effective_from,
#  input, 5m cache write, 1h cache write, cache read, output, US-only multiplier)
PRICES = [
    (
        ("claude-fable-5-1*", "claude-mythos-5-1*"),
        "Fable / Mythos 5.1",
        "standard",
        0,
        SEED_START,
        "10",
        "12.50",
        "20",
        "0.25",
        "50",
        "1.1",
    ),
    (
        ("claude-fable-5*", "claude-mythos-5*"),
        "Fable / Mythos 5",
        "standard",
        0,
        SEED_START,
        "10",
        "12.50",
        "20",
        "1",
        "50",
        "1.1",
    ),
    (("claude-opus-5-5*",), "Opus 5.5", "standard", 0, SEED_START, "4", "5", "8", "0.20", "20", "1.1"),
    (("claude-opus-5-5*",), "Opus 5.5 fast", "fast", 0, SEED_START, "8", "10", "16", "0.40", "40", "1.1"),
    (
        ("claude-opus-5*", "claude-opus-4-[6-8]*"),
        "Opus 5, 4.8, 4.7, 4.6",
        "standard",
        0,
        SEED_START,
        "5",
        "6.25",
        "10",
        "0.50",
        "25",
        "1.1",
    ),
    (("claude-opus-4-5*",), "Opus 4.5", "standard", 0, SEED_START, "5", "6.25", "10", "0.50", "25", "1"),
    (
        ("claude-opus-4-1*", "claude-opus-4-0*", "claude-opus-4-2025*"),
        "Opus 4.1, 4",
        "standard",
        0,
        SEED_START,
        "15",
        "18.75",
        "30",
        "1.50",
        "75",
        "1",
    ),
    (("claude-sonnet-5-5*",), "Sonnet 5.5", "standard", 0, SEED_START, "2", "2.50", "4", "0.20", "10", "1.1"),
    (("claude-sonnet-5-5*",), "Sonnet 5.5", "standard", 0, SONNET_5_5_CACHE_READ_CUT, "2", "2.50", "4", "0.10", "10", "1.1"),
    (("claude-sonnet-5*",), "Sonnet 5", "standard", 0, SEED_START, "2", "2.50", "4", "0.20", "10", "1.1"),
    (("claude-sonnet-4-6*",), "Sonnet 4.6", "standard", 0, SEED_START, "3", "3.75", "6", "0.30", "15", "1.1"),
    (
        ("claude-sonnet-4*", "claude-3-7-sonnet*"),
        "Sonnet 4.x, 3.7",
        "standard",
        0,
        SEED_START,
        "3",
        "3.75",
        "6",
        "0.30",
        "15",
        "1",
    ),
    (SONNET_4_5_AND_4, "Sonnet 4.5, 4", "standard", 0, SEED_START, "3", "3.75", "6", "0.30", "15", "1"),
    (SONNET_4_5_AND_4, "Sonnet 4.5, 4 long context", "standard", 200_000, SEED_START, "6", "7.50", "12", "0.60", "22.50", "1"),
    (("claude-haiku-5-5*",), "Haiku 5.5", "standard", 0, SEED_START, "0.10", "0.125", "0.20", "0.01", "0.50", "1.1"),
    (
        ("claude-haiku-5-5*",),
        "Haiku 5.5 long prompt",
        "standard",
        100_000,
        SEED_START,
        "0.50",
        "0.625",
        "1.00",
        "0.05",
        "2.50",
        "1.1",
    ),
    (("claude-haiku-4-5*",), "Haiku 4.5", "standard", 0, SEED_START, "1", "1.25", "2", "0.10", "5", "1"),
    (("claude-3-5-haiku*",), "Haiku 3.5", "standard", 0, SEED_START, "0.80", "1", "1.60", "0.08", "4", "1"),
    (("claude-3-haiku*",), "Haiku 3", "standard", 0, SEED_START, "0.25", "0.30", "0.50", "0.03", "1.25", "1"),
]


def seed_rows():
    for patterns, label, speed, above, start, inp, cw5, cw1, cr, out, geo in PRICES:
        for pattern in patterns:
            yield {
                "model_pattern": pattern,
                "label": label,
                "speed": speed,
                "prompt_tokens_above": above,
                "effective_from": start,
                "input_per_mtok": Decimal(inp),
                "cache_write_5m_per_mtok": Decimal(cw5),
                "cache_write_1h_per_mtok": Decimal(cw1),
                "cache_read_per_mtok": Decimal(cr),
                "output_per_mtok": Decimal(out),
                "us_geo_multiplier": Decimal(geo),
            }


def seed(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    if ModelPrice.objects.exists():
        return
    ModelPrice.objects.bulk_create(ModelPrice(**row) for row in seed_rows())


def unseed(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    for row in seed_rows():
        ModelPrice.objects.filter(**row).delete()


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
