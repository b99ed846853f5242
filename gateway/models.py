"""The upstream (Anthropic) master keys the gateway forwards requests with.

Rows change only through `gateway.upstream_keys` (commands, admin actions and Celery call it), which
also tells every gateway process to reload its in-memory pool. The hot path never reads this table
per request: see `gateway.keypool`.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

MAX_WEIGHT = 1000


class UpstreamKeyState(models.TextChoices):
    ACTIVE = "active", "Active"
    DRAINING = "draining", "Draining (in-flight requests finish, no new ones)"
    RETIRED = "retired", "Retired"


class UpstreamKey(models.Model):
    name = models.CharField(max_length=100, unique=True)
    encrypted_secret = models.TextField(
        editable=False, help_text="Fernet token (proxyproject.lib.encryption); emptied when retired."
    )
    secret_sha256 = models.CharField(
        max_length=64,
        unique=True,
        editable=False,
        help_text="Recognises a secret seen before (kept after retirement), so a retired key never comes back.",
    )
    secret_last4 = models.CharField(max_length=4, editable=False)
    state = models.CharField(max_length=16, choices=UpstreamKeyState.choices, default=UpstreamKeyState.ACTIVE, db_index=True)
    weight = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_WEIGHT)],
        help_text="Share of new requests relative to the other active keys.",
    )
    from_environment = models.BooleanField(default=False, editable=False, help_text="Seeded from ANTHROPIC_API_KEY.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=150, blank=True, editable=False)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaced", editable=False
    )
    draining_since = models.DateTimeField(null=True, blank=True, editable=False)
    retired_at = models.DateTimeField(null=True, blank=True, editable=False)
    flagged_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Set when the upstream rejected the key (401/403): out of rotation."
    )
    flagged_reason = models.CharField(max_length=200, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    request_count = models.PositiveBigIntegerField(default=0, editable=False)
    rejected_count = models.PositiveBigIntegerField(default=0, editable=False, help_text="Upstream 401/403 answers.")
    rate_limited_count = models.PositiveBigIntegerField(default=0, editable=False, help_text="Upstream 429 answers.")
    server_error_count = models.PositiveBigIntegerField(default=0, editable=False, help_text="Upstream 5xx answers.")
    connection_failure_count = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["state", "-created_at"]
        verbose_name = "upstream key"

    def __str__(self) -> str:
        return f"{self.name} (…{self.secret_last4})"

    @property
    def masked_secret(self) -> str:
        return f"…{self.secret_last4}"

    @property
    def usable(self) -> bool:
        """Can carry new requests: active and not rejected by the upstream."""
        return self.state == UpstreamKeyState.ACTIVE and self.flagged_at is None


class OwnedResourceKind(models.TextChoices):
    MESSAGE_BATCH = "message_batch", "Message batch"
    FILE = "file", "File"


class OwnedResource(models.Model):
    """An upstream resource created through the gateway, and the device that created it.

    Every device shares one upstream organization, so the upstream cannot tell them apart: this
    table is what makes a batch or a file one device's own (`gateway.ownership`). Resources with no
    row (created before this table, or around the gateway) belong to no device. A batch also keeps
    its spend reservation here until its results settle it (`gateway.batch_spend`).
    """

    kind = models.CharField(max_length=32, choices=OwnedResourceKind.choices)
    resource_id = models.CharField(max_length=200)
    device = models.ForeignKey("tokens.Device", on_delete=models.CASCADE, related_name="+")
    organization = models.ForeignKey("tokens.Organization", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    reservation = models.JSONField(null=True, blank=True, help_text="The batch's spend reservation, until it is settled.")
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "resource_id"], name="owned_resource_unique_id")]
        indexes = [models.Index(fields=["device", "kind", "-id"], name="owned_resource_device_list")]

    def __str__(self) -> str:
        return f"{self.kind} {self.resource_id}"
