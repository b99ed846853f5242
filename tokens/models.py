"""Who a device is and what credentials it holds: organizations, devices, issued tokens, signing keys,
operator API keys and the audit trail. Rules live in the service modules, not here."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower

from tokens.budget_alert_fields import validate_alert_emails, validate_alert_thresholds, validate_webhook_url
from tokens.description import validate_description
from tokens.identifiers import validate_identifier
from tokens.model_aliases import validate_model_aliases


class PolicyFields(models.Model):
    """Per-device, per-person or per-organization overrides; an empty field inherits
    (device → person → organization → settings)."""

    allowed_models = models.TextField(
        blank=True,
        help_text="Model id patterns, one per line or comma-separated (claude-sonnet-*). Empty: inherit. * allows all.",
    )
    model_aliases = models.TextField(
        blank=True,
        validators=[validate_model_aliases],
        help_text="Requested model = served model, one per line (claude-opus-* = claude-sonnet-4-5). "
        "Applied before the allowed models, which the served model must pass. A device's rules come before its organization's.",
    )
    requests_per_window = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per window. Empty: inherit.")
    window_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Rate-limit window in milliseconds. Empty: inherit.")
    tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Input+output tokens per minute; 0 = no limit. Empty: inherit."
    )
    daily_spend_cap_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True, help_text="Empty: inherit.")
    monthly_spend_cap_usd = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="Empty: inherit."
    )
    weekly_spend_cap_usd = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="Monday to Sunday, UTC. Empty: inherit."
    )
    spend_cap_enforcement = models.CharField(
        max_length=8,
        blank=True,
        choices=[
            ("clamp", "Clamp: serve what fits, lowering max_tokens"),
            ("strict", "Strict: refuse unless the whole bound fits"),
            ("soft", "Soft: never refuse, alert only"),
        ],
        help_text="How the spend caps bite. Empty: inherit (organization, then SPEND_CAP_ENFORCEMENT).",
    )
    budget_alert_thresholds = models.CharField(
        max_length=64,
        blank=True,
        validators=[validate_alert_thresholds],
        help_text="Percentages of each spend cap at which an alert is sent, once per period (50, 80, 100). "
        "Empty: inherit (organization, then BUDGET_ALERT_THRESHOLDS).",
    )

    class Meta:
        abstract = True


class Organization(PolicyFields):
    name = models.CharField(max_length=200, unique=True)
    tokens_revoked_before = models.DateTimeField(
        null=True, blank=True, help_text="Tokens of this organization's devices issued before this time are refused."
    )
    budget_webhook_url = models.URLField(
        max_length=500,
        blank=True,
        validators=[validate_webhook_url],
        help_text="Budget alerts of this organization and its devices are also posted here, signed with its secret.",
    )
    budget_webhook_secret_encrypted = models.TextField(blank=True, editable=False)
    budget_alert_emails = models.TextField(
        blank=True,
        validators=[validate_alert_emails],
        help_text="Addresses (comma- or line-separated) told of this organization's and its devices' budget alerts.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Person(PolicyFields):
    """Someone who signed in with the company's identity provider (tokens.sign_in). Known by the
    provider's issuer and subject, which never change; the email and name are refreshed at each
    sign-in. `blocked` is an operator's decision; `active` is what the provider last said."""

    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    email = models.CharField(max_length=254, blank=True, db_index=True, help_text="The person claim (OIDC_PERSON_CLAIM).")
    display_name = models.CharField(max_length=200, blank=True)
    organization = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="people",
        help_text="From the provider's groups at each sign-in (group mappings), else left as set here.",
    )
    groups = models.JSONField(default=list, blank=True, editable=False, help_text="As the provider last listed them.")
    active = models.BooleanField(default=True, help_text="False once the provider refused to renew the person's session.")
    blocked = models.BooleanField(default=False, db_index=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["email"]
        verbose_name_plural = "people"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="tokens_person_issuer_subject")]

    def __str__(self) -> str:
        return self.email or self.subject


class GroupOrganization(models.Model):
    """A provider group whose members' devices belong to an organization. A person in several mapped
    groups gets the mapping with the lowest priority number."""

    group = models.CharField(max_length=255, unique=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="group_mappings")
    priority = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["priority", "group"]
        verbose_name = "group → organization mapping"

    def __str__(self) -> str:
        return f"{self.group} → {self.organization}"


class DeviceStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PENDING = "pending", "Pending approval"
    BLOCKED = "blocked", "Blocked"


class Device(PolicyFields):
    """Device ids are case-insensitive: `RT-DEV-1` and `rt-dev-1` are one device (see tokens.enrollment)."""

    device_id = models.CharField(max_length=128, unique=True, validators=[validate_identifier])
    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="devices")
    person = models.ForeignKey(
        Person,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="devices",
        help_text="Set when a person signed in on this device; from then on only a sign-in enrolls it again.",
    )
    # The provider's refresh token from that sign-in (Fernet), renewed at each device refresh so a
    # person the provider disabled loses access then (tokens.provider_sessions). Empty: none was issued.
    provider_refresh_token = models.TextField(blank=True, editable=False)
    user_label = models.CharField(max_length=200, blank=True, validators=[validate_identifier])
    app_version = models.CharField(max_length=64, blank=True, validators=[validate_identifier])
    # What the device says it is, at each bootstrap (tokens.description): for telling devices apart.
    device_name = models.CharField(max_length=100, blank=True, validators=[validate_description])
    app_name = models.CharField(max_length=64, blank=True, validators=[validate_description])
    os = models.CharField("OS", max_length=64, blank=True, validators=[validate_description])
    status = models.CharField(max_length=16, choices=DeviceStatus.choices, default=DeviceStatus.ACTIVE, db_index=True)
    secret_hash = models.CharField(
        max_length=128, blank=True, editable=False, help_text="Empty: the next bootstrap sets a new device secret."
    )
    tokens_revoked_before = models.DateTimeField(
        null=True, blank=True, help_text="Tokens of this device issued before this time are refused."
    )
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                Lower("device_id"),
                name="tokens_device_id_case_insensitive",
                violation_error_message="A device with this device id (ignoring case) already exists.",
            )
        ]

    def __str__(self) -> str:
        return self.device_id


DEVICE_FLOW = "device"
PKCE_FLOW = "pkce"


class SignInFlow(models.TextChoices):
    DEVICE = DEVICE_FLOW, "Device authorization grant (RFC 8628)"
    PKCE = PKCE_FLOW, "Authorization code with PKCE, loopback redirect"


class SignIn(models.Model):
    """A sign-in between /auth/oidc/start and its last /auth/oidc/poll. The client holds the handle;
    only its hash is stored. Secrets the gateway must keep until then (the provider's device code,
    the PKCE verifier, the device secret the client presented) are encrypted."""

    handle_sha256 = models.CharField(max_length=64, unique=True)
    flow = models.CharField(max_length=8, choices=SignInFlow.choices)
    device_id = models.CharField(max_length=128)
    app_version = models.CharField(max_length=64, blank=True)
    description = models.JSONField(default=dict, blank=True)
    encrypted_device_secret = models.TextField(blank=True)
    encrypted_device_code = models.TextField(blank=True)
    encrypted_code_verifier = models.TextField(blank=True)
    redirect_uri = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=64, blank=True)
    nonce = models.CharField(max_length=64)
    interval = models.PositiveIntegerField(default=5)
    next_poll_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.flow} sign-in for {self.device_id}"


class TokenKind(models.TextChoices):
    ACCESS = "access", "Access (wrapper)"
    REFRESH = "refresh", "Refresh"


class IssuedToken(models.Model):
    """One row per JWT issued. The wrapper and the refresh token issued together are one grant:
    exchanging either spends both, and revoking either revokes both. Every grant descended from one
    bootstrap shares a family, so a reused member can take down the whole line."""

    jti = models.CharField(max_length=64, unique=True)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="tokens")
    kind = models.CharField(max_length=16, choices=TokenKind.choices)
    family = models.CharField(max_length=64, db_index=True)
    grant = models.CharField(max_length=64, db_index=True, help_text="Shared by the wrapper and refresh token issued together.")
    kid = models.CharField(max_length=64)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True, help_text="When its grant was exchanged (single use).")
    revoked_at = models.DateTimeField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)

    class Meta:
        ordering = ["-issued_at"]
        indexes = [models.Index(fields=["device", "kind", "revoked_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.jti}"


class SigningKeyState(models.TextChoices):
    ACTIVE = "active", "Active (signs and verifies)"
    VERIFY_ONLY = "verify_only", "Verify only"
    RETIRED = "retired", "Retired"


class SigningKey(models.Model):
    kid = models.CharField(max_length=64, unique=True)
    encrypted_secret = models.TextField(editable=False)
    state = models.CharField(max_length=16, choices=SigningKeyState.choices, db_index=True)
    created_at = models.DateTimeField()
    verify_until = models.DateTimeField(
        null=True, blank=True, help_text="Set when the key stops signing: the expiry of the last token it can have signed."
    )
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.kid


class OperatorApiKey(models.Model):
    """A bearer key for operator endpoints (/admin/usage, /admin/circuit-breaker, /metrics).

    A key with an organization sees only that organization's usage and resources and is refused on
    the platform-wide endpoints; deleting the organization deletes its keys, so a scoped key can
    never become a platform-wide one."""

    name = models.CharField(max_length=100)
    organization = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="operator_keys",
        help_text="Empty: a platform operator. Set: this organization's usage and resources only.",
    )
    prefix = models.CharField(max_length=16, editable=False, help_text="The key's first characters, to recognise it.")
    secret_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "operator API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditKind(models.TextChoices):
    BOOTSTRAP = "bootstrap", "Bootstrap"
    REFRESH = "refresh", "Refresh"
    REUSE_DETECTED = "reuse_detected", "Refresh token reuse detected"
    TOKEN_REVOKED = "token_revoked", "Token revoked"
    DEVICE_REVOKED = "device_revoked", "Device tokens revoked"
    ORG_REVOKED = "org_revoked", "Organization tokens revoked"
    DEVICE_APPROVED = "device_approved", "Device approved"
    DEVICE_BLOCKED = "device_blocked", "Device blocked"
    DEVICE_UNBLOCKED = "device_unblocked", "Device unblocked"
    DEVICE_SECRET_RESET = "device_secret_reset", "Device secret reset"
    ENROLLMENT_REFUSED = "enrollment_refused", "Enrollment refused"
    SIGNING_KEY_ROTATED = "signing_key_rotated", "Signing key rotated"
    SIGNING_KEY_RETIRED = "signing_key_retired", "Signing key retired"
    PERSON_SIGNED_IN = "person_signed_in", "Person signed in"
    SIGN_IN_REFUSED = "sign_in_refused", "Sign-in refused"
    PERSON_BLOCKED = "person_blocked", "Person blocked"
    PERSON_UNBLOCKED = "person_unblocked", "Person unblocked"
    PERSON_REVOKED = "person_revoked", "Person's tokens revoked"
    PROVIDER_SESSION_ENDED = "provider_session_ended", "Provider session ended"


class AuditEvent(models.Model):
    """Append-only; `device_ref` keeps the device id readable after the device row is deleted."""

    occurred_at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=32, choices=AuditKind.choices, db_index=True)
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events")
    device_ref = models.CharField(max_length=128, blank=True, db_index=True)
    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    person = models.ForeignKey(Person, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events")
    jti = models.CharField(max_length=64, blank=True, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    actor = models.CharField(max_length=150, blank=True, help_text="Operator who acted, or empty for the device itself.")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.device_ref} {self.occurred_at:%Y-%m-%d %H:%M:%S}"
