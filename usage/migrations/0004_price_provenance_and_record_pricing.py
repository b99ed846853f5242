"""Price provenance and what each record's cost was computed from.

Data steps, on tables seeded by 0002 (an operator's own rows are left as they are):
- the seeded rows get their provenance: published, except Opus 5.5 (its cache-write rates are
  derived by the standard 1.25x and 2x of input) and Opus 5.5 fast (only input and output are
  published; the cache rates are the project's assumption);
- the bare id `claude-sonnet-4` gets the rows of `claude-sonnet-4-0*` (base and long-context tier),
  copied from the table as it is now, so an operator's edits carry over. Fresh databases get them
  from 0002.
"""

import datetime as dt

from django.db import migrations, models

SEED_START = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
OPUS_5_5 = "claude-opus-5-5*"
DERIVED_NOTE = "Cache writes: the standard 1.25x (5m) and 2x (1h) of input."
ASSUMED_NOTE = "Input and output published (8 / 40); cache rates assumed at Opus 5.5's own ratios to input."
BARE_SONNET_4 = "claude-sonnet-4"
SONNET_4_0 = "claude-sonnet-4-0*"
_COPIED = (
    "label",
    "speed",
    "prompt_tokens_above",
    "effective_from",
    "input_per_mtok",
    "output_per_mtok",
    "cache_write_5m_per_mtok",
    "cache_write_1h_per_mtok",
    "cache_read_per_mtok",
    "us_geo_multiplier",
)


def provenance_of(pattern: str, speed: str) -> tuple[str, str]:
    """(provenance, note) of a seeded row."""
    if pattern == OPUS_5_5:
        return ("assumed", ASSUMED_NOTE) if speed == "fast" else ("derived", DERIVED_NOTE)
    return "published", ""


def mark_provenance(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    for speed in ("standard", "fast"):
        provenance, note = provenance_of(OPUS_5_5, speed)
        ModelPrice.objects.filter(model_pattern=OPUS_5_5, speed=speed, effective_from=SEED_START).update(
            provenance=provenance, provenance_note=note
        )


def add_bare_sonnet_4(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    if ModelPrice.objects.filter(model_pattern=BARE_SONNET_4).exists():
        return
    rows = ModelPrice.objects.filter(model_pattern=SONNET_4_0).values(*_COPIED)
    ModelPrice.objects.bulk_create(ModelPrice(model_pattern=BARE_SONNET_4, **row) for row in rows)


def flag_unpriced_records(apps, schema_editor):
    apps.get_model("usage", "UsageRecord").objects.filter(priced=False).update(price_flag="unknown")


def remove_bare_sonnet_4(apps, schema_editor):
    apps.get_model("usage", "ModelPrice").objects.filter(model_pattern=BARE_SONNET_4).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0004_device_identifiers"),
        ("usage", "0003_open_stream"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelprice",
            name="provenance",
            field=models.CharField(
                choices=[
                    ("published", "Published by Anthropic"),
                    ("derived", "Derived from published rates by a standard multiplier"),
                    ("assumed", "Assumed by the operator (not published)"),
                ],
                default="published",
                help_text="Requests priced from an assumed row are flagged in the usage records and on the dashboard.",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="modelprice",
            name="provenance_note",
            field=models.CharField(blank=True, help_text="How a derived or assumed rate was made.", max_length=300),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="price_flag",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "Exact"),
                    ("assumed", "Assumed rate"),
                    ("fallback", "Fallback rate (no fast rate: priced at the standard rate)"),
                    ("unknown", "Unknown model (unpriced)"),
                ],
                default="",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="pricing",
            field=models.JSONField(blank=True, default=dict, help_text="The price row, rates and multipliers the cost used."),
        ),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(
                condition=models.Q(("price_flag", ""), _negated=True),
                fields=["price_flag", "occurred_at"],
                name="usage_rec_flagged_time",
            ),
        ),
        migrations.RunPython(flag_unpriced_records, migrations.RunPython.noop),
        migrations.RunPython(mark_provenance, migrations.RunPython.noop),
        migrations.RunPython(add_bare_sonnet_4, remove_bare_sonnet_4),
    ]
