"""Usage records, model prices and rollups. The rules (pricing, rollups, spend) live in their own
modules; these are the tables they read and write."""

from __future__ import annotations

from django.db import models

from usage.counts import total_tokens

COST_DECIMAL_PLACES = 10
"""Every seeded price times every multiplier (geo 1.1, batch 0.5) stays exact at 1e-10 USD per token."""


class Speed(models.TextChoices):
    STANDARD = "standard", "Standard"
    FAST = "fast", "Fast"


class Provenance(models.TextChoices):
    """Where a price row's rates come from; a row is as good as its weakest rate."""

    PUBLISHED = "published", "Published by Anthropic"
    DERIVED = "derived", "Derived from published rates by a standard multiplier"
    ASSUMED = "assumed", "Assumed by the operator (not published)"


class PriceFlag(models.TextChoices):
    """Why a record's cost is less than certain. Blank: every rate it used is published or derived."""

    EXACT = "", "Exact"
    ASSUMED = "assumed", "Assumed rate"
    FALLBACK = "fallback", "Fallback rate (no fast rate: priced at the standard rate)"
    UNKNOWN = "unknown", "Unknown model (unpriced)"


ESTIMATED_FLAGS = (PriceFlag.ASSUMED, PriceFlag.FALLBACK)
"""Priced, but at a rate that is not published for what the request did."""


class ModelPrice(models.Model):
    """USD per million tokens for the models whose id matches `model_pattern`, from `effective_from` on.

    One pattern may have several rows: a later `effective_from` replaces an earlier one; a row with
    `prompt_tokens_above` is a long-prompt tier that prices every token of a request whose prompt
    (input + cache reads + cache writes) is larger; a `fast` row prices `speed: fast` requests.
    """

    model_pattern = models.CharField(
        max_length=200,
        help_text="fnmatch pattern on the model id, e.g. claude-sonnet-4-5*. The most specific matching pattern wins.",
    )
    label = models.CharField(max_length=100, blank=True, help_text="Human name, e.g. Sonnet 4.5.")
    speed = models.CharField(max_length=16, choices=Speed.choices, default=Speed.STANDARD)
    prompt_tokens_above = models.PositiveIntegerField(
        default=0, help_text="Long-prompt tier: applies when the prompt has more tokens than this. 0 = the base tier."
    )
    effective_from = models.DateTimeField(help_text="Requests made at or after this time (UTC) use this row.")
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cache_write_5m_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, verbose_name="5m cache write per MTok")
    cache_write_1h_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, verbose_name="1h cache write per MTok")
    cache_read_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    us_geo_multiplier = models.DecimalField(
        max_digits=6,
        decimal_places=3,
        default=1,
        help_text="Applied to every category when inference_geo is US-only (1.1 for Opus 4.6 and newer).",
    )
    provenance = models.CharField(
        max_length=16,
        choices=Provenance.choices,
        default=Provenance.PUBLISHED,
        help_text="Requests priced from an assumed row are flagged in the usage records and on the dashboard.",
    )
    provenance_note = models.CharField(max_length=300, blank=True, help_text="How a derived or assumed rate was made.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_pattern", "speed", "prompt_tokens_above", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_pattern", "speed", "prompt_tokens_above", "effective_from"], name="usage_modelprice_unique_rate"
            )
        ]

    def __str__(self) -> str:
        tier = f" >{self.prompt_tokens_above:,}" if self.prompt_tokens_above else ""
        speed = " fast" if self.speed == Speed.FAST else ""
        return f"{self.model_pattern}{speed}{tier} from {self.effective_from:%Y-%m-%d}"


class UsageRecord(models.Model):
    """One proxied request. `device_ref`, `device_pk` and `org_pk` keep who made it after the device
    or organization row is deleted; `priced` is False when no price matched the model (cost NULL).

    `pricing` keeps what the cost was computed from (the price row's id, pattern, effective date and
    rates at that moment, the multipliers and the moment priced at), so the breakdown of a record
    stays exact after an operator edits the row; `reprice_usage` rewrites it with the cost."""

    request_id = models.CharField(max_length=128, unique=True)
    upstream_request_id = models.CharField(max_length=128, blank=True)
    occurred_at = models.DateTimeField()
    endpoint = models.CharField(max_length=300)
    method = models.CharField(max_length=10)
    device = models.ForeignKey("tokens.Device", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records")
    organization = models.ForeignKey(
        "tokens.Organization", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    device_ref = models.CharField(max_length=128, blank=True, verbose_name="device id")
    device_pk = models.BigIntegerField(null=True, blank=True)
    org_pk = models.BigIntegerField(null=True, blank=True)
    person_pk = models.BigIntegerField(null=True, blank=True, help_text="The person signed in on the device (tokens.Person).")
    session_id = models.CharField(max_length=128, blank=True)
    model = models.CharField(max_length=200, blank=True)
    requested_model = models.CharField(
        max_length=200, blank=True, help_text="The model the client asked for, when a model alias served it another."
    )
    status = models.PositiveSmallIntegerField(default=0)
    error_type = models.CharField(max_length=100, blank=True)
    is_error = models.BooleanField(default=False)
    streamed = models.BooleanField(default=False)
    client_disconnected = models.BooleanField(default=False)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cache_write_5m_tokens = models.PositiveIntegerField(default=0)
    cache_write_1h_tokens = models.PositiveIntegerField(default=0)
    cache_read_tokens = models.PositiveIntegerField(default=0)
    web_search_requests = models.PositiveIntegerField(default=0)
    web_fetch_requests = models.PositiveIntegerField(default=0)
    service_tier = models.CharField(max_length=32, blank=True)
    speed = models.CharField(max_length=32, blank=True)
    inference_geo = models.CharField(max_length=32, blank=True)
    latency_ms = models.FloatField(default=0)
    ttfb_ms = models.FloatField(null=True, blank=True, verbose_name="time to first byte (ms)")
    upstream_key_name = models.CharField(max_length=100, blank=True)
    cost = models.DecimalField(
        max_digits=20, decimal_places=COST_DECIMAL_PLACES, null=True, blank=True, verbose_name="cost (USD)"
    )
    priced = models.BooleanField(default=True, help_text="False: no price matched the model, so the cost is unknown.")
    price_flag = models.CharField(max_length=16, choices=PriceFlag.choices, blank=True, default=PriceFlag.EXACT)
    pricing = models.JSONField(default=dict, blank=True, help_text="The price row, rates and multipliers the cost used.")
    extra = models.JSONField(default=dict, blank=True)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            # The admin lists newest first with the primary key as tie-break: this index gives that
            # order from each month's partition, so a page reads a hundred rows, not the table.
            models.Index(fields=["occurred_at", "id"], name="usage_rec_time_id"),
            models.Index(fields=["device_pk", "occurred_at"], name="usage_rec_device_time"),
            models.Index(fields=["org_pk", "occurred_at"], name="usage_rec_org_time"),
            models.Index(fields=["person_pk", "occurred_at"], name="usage_rec_person_time"),
            models.Index(fields=["device_ref", "occurred_at"], name="usage_rec_devref_time"),
            models.Index(fields=["priced", "occurred_at"], name="usage_rec_priced_time"),
            models.Index(fields=["price_flag", "occurred_at"], name="usage_rec_flagged_time", condition=~models.Q(price_flag="")),
        ]

    def __str__(self) -> str:
        return self.request_id

    @property
    def total_tokens(self) -> int:
        return total_tokens(self)


class OpenStream(models.Model):
    """The latest checkpoint of a stream still being relayed: its usage so far, queued by the gateway
    process that relays it (`owner`). The stream's final record deletes the row; a row whose owner has
    not been heard from for USAGE_ORPHAN_STREAM_SECONDS (`seen_at`, the writer's clock) becomes an
    interrupted record (`usage.records.record_orphaned_streams`)."""

    request_id = models.CharField(max_length=128, unique=True)
    owner = models.CharField(max_length=200, db_index=True)
    sequence = models.PositiveIntegerField()
    event = models.TextField(help_text="The usage event so far, as queued (JSON).")
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.request_id


class RollupPeriod(models.TextChoices):
    HOUR = "hour", "Hour"
    DAY = "day", "Day"


class UsageRollup(models.Model):
    """One hour or UTC day of one device's use of one model; rebuilt from raw records by `rollups`."""

    period = models.CharField(max_length=8, choices=RollupPeriod.choices)
    bucket_start = models.DateTimeField()
    device = models.ForeignKey("tokens.Device", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_rollups")
    device_ref = models.CharField(max_length=128, blank=True, verbose_name="device id")
    device_pk = models.BigIntegerField(null=True, blank=True)
    org_pk = models.BigIntegerField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    unpriced_requests = models.PositiveIntegerField(default=0)
    estimated_requests = models.PositiveIntegerField(default=0, help_text="Priced at an assumed or fallback rate.")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_5m_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_1h_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    web_search_requests = models.PositiveBigIntegerField(default=0)
    web_fetch_requests = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=COST_DECIMAL_PLACES, default=0, verbose_name="cost (USD)")
    latency_p50_ms = models.FloatField(default=0)
    latency_p95_ms = models.FloatField(default=0)
    latency_p99_ms = models.FloatField(default=0)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-bucket_start", "device_ref", "model"]
        constraints = [
            models.UniqueConstraint(fields=["period", "bucket_start", "device_ref", "model"], name="usage_rollup_unique_bucket")
        ]
        indexes = [
            models.Index(fields=["period", "bucket_start"], name="usage_rollup_period_start"),
            # GET /admin/usage for one device reads its complete days from here (usage.rollup_reports).
            models.Index(fields=["device_ref", "period", "bucket_start"], name="usage_rollup_device_start"),
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.bucket_start:%Y-%m-%d %H:%M} {self.device_ref or '-'} {self.model or '-'}"


class BudgetScope(models.TextChoices):
    DEVICE = "device", "Device"
    ORG = "org", "Organization"


class BudgetAlert(models.Model):
    """A spend cap's threshold crossed in one period. The unique constraint is the once-only guard:
    the settle that crosses it and the rollup task's sweep may both try to record it, from any
    number of processes, and exactly one insert wins (`usage.budget_alerts`)."""

    uuid = models.UUIDField(unique=True, editable=False, help_text="The webhook's event id: receivers deduplicate on it.")
    scope = models.CharField(max_length=8, choices=BudgetScope.choices)
    subject_pk = models.BigIntegerField(help_text="The device's or organization's primary key.")
    subject = models.CharField(max_length=200, help_text="Device id or organization name, kept after either is deleted.")
    device = models.ForeignKey("tokens.Device", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    organization = models.ForeignKey(
        "tokens.Organization",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The organization, or the device's: its webhook and recipients are told too.",
    )
    period = models.CharField(max_length=8)
    period_start = models.DateTimeField()
    threshold_percent = models.PositiveSmallIntegerField()
    cap = models.DecimalField(max_digits=12, decimal_places=2)
    spent = models.DecimalField(max_digits=18, decimal_places=9, help_text="Spent in the period when the threshold was crossed.")
    occurred_at = models.DateTimeField(db_index=True)
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When its webhooks and email were queued; the rollup task queues any left behind."
    )

    class Meta:
        ordering = ["-occurred_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "subject_pk", "period", "period_start", "threshold_percent"],
                name="usage_budget_alert_once_per_period",
            )
        ]
        indexes = [models.Index(fields=["period", "period_start"])]

    def __str__(self) -> str:
        return f"{self.subject} {self.threshold_percent}% {self.period}"


class WebhookTarget(models.TextChoices):
    SETTING = "setting", "Setting"
    ORGANIZATION = "organization", "Organization"


class WebhookDelivery(models.Model):
    """One attempt to post an alert to one webhook: kept for operators, never the secret or more than
    a few hundred bytes of the receiver's answer."""

    alert = models.ForeignKey(BudgetAlert, on_delete=models.CASCADE, related_name="deliveries")
    target = models.CharField(max_length=16, choices=WebhookTarget.choices)
    url = models.CharField(max_length=500)
    attempt = models.PositiveSmallIntegerField()
    delivered = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    response_excerpt = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField()
    attempted_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-attempted_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.alert} → {self.get_target_display()} #{self.attempt}"


class RolledUpBucket(models.Model):
    """When a bucket was last rebuilt. A bucket rebuilt after it ended holds every record stored by
    then, so reports may read its rollups instead of its records (`usage.rollup_reports`); an empty
    bucket has no UsageRollup rows, so only this row tells it apart from one never rolled up."""

    period = models.CharField(max_length=8, choices=RollupPeriod.choices)
    bucket_start = models.DateTimeField()
    rolled_at = models.DateTimeField()
    daily_usage = models.BooleanField(
        default=False,
        help_text="Its DailyUsage rows were rebuilt with it (day buckets rebuilt before that table existed have none).",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["period", "bucket_start"], name="usage_rolled_up_bucket_unique")]

    def __str__(self) -> str:
        return f"{self.period} {self.bucket_start:%Y-%m-%d %H:%M} rolled up at {self.rolled_at:%Y-%m-%d %H:%M}"


class DailyDimension(models.TextChoices):
    MODEL = "model", "Model"
    DEVICE = "device", "Device"
    PERSON = "person", "Person"


class DailyUsage(models.Model):
    """One UTC day's usage of one model, one device or one person, summed over everything else;
    rebuilt from the day's raw records with its day bucket (`usage.daily_usage`).

    The dashboard's 30-day view reads these: 30 days of a busy fleet are ~150,000 (device, model)
    day rollups to sum on every view, but only 30 x (models + devices + people) rows here, and the
    day rollups have no person at all. `key` is the model id, the device id, or the person's
    primary key in decimal ("" for records without a person)."""

    day = models.DateTimeField()
    dimension = models.CharField(max_length=8, choices=DailyDimension.choices)
    key = models.CharField(max_length=200, blank=True)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    unpriced_requests = models.PositiveIntegerField(default=0)
    estimated_requests = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_5m_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_1h_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    web_search_requests = models.PositiveBigIntegerField(default=0)
    web_fetch_requests = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=COST_DECIMAL_PLACES, default=0, verbose_name="cost (USD)")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dimension", "day", "key"], name="usage_daily_usage_unique")]
        indexes = [
            # The dashboard sums every sum of its top ten devices and people over 30 days from here.
            models.Index(fields=["dimension", "key", "day"], name="usage_daily_usage_key_day"),
        ]
        verbose_name_plural = "daily usage"

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} {self.dimension} {self.key or '-'}"
