"""Operators' view of devices, organizations, tokens, signing keys, operator keys and the audit trail.

Every state change goes through the services (`tokens.revocation`, `tokens.operators`) with
`actor=request.user`, so the admin writes the same audit rows and invalidates the same caches as
the commands do. Status is changed by actions only, never by editing the field. The spend columns on
the device pages are added by `usage.admin`, which owns spend.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from proxyproject.lib.admin import CappedCountPaginator, ReadOnlyAdmin
from tokens.budget_alert_fields import validate_webhook_url
from tokens.budget_webhooks import set_organization_webhook_secret
from tokens.device_state import invalidate_all_devices, invalidate_devices
from tokens.models import AuditEvent, Device, DeviceStatus, IssuedToken, OperatorApiKey, Organization, Person, SigningKey
from tokens.operators import issue_operator_api_key, revoke_operator_api_key
from tokens.policy_sources import effective_policy_sources
from tokens.revocation import (
    approve_device,
    block_device,
    policy_changed,
    reset_device_secret,
    revoke_device_tokens,
    revoke_organization_tokens,
    revoke_token,
    unblock_device,
)

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldOpts, _FieldsetSpec  # django-stubs: the types of fieldsets


class CountsDevices(Protocol):
    """An organization or person from its admin's queryset, which counts their devices."""

    device_total: int


class _RequestWithNewKey(Protocol):
    """The request that created an operator key carries its secret from save_model to response_add."""

    _operator_key_secret: str


POLICY_FIELDSET: tuple[str, _FieldOpts] = (
    "Policy (empty inherits: device → person → organization → settings)",
    {
        "fields": (
            "allowed_models",
            "model_aliases",
            ("requests_per_window", "window_ms"),
            "tokens_per_minute",
            ("daily_spend_cap_usd", "weekly_spend_cap_usd", "monthly_spend_cap_usd"),
            "spend_cap_enforcement",
            "budget_alert_thresholds",
        )
    },
)


def render_policy_sources(device: Device | None, organization: Organization | None, person: Person | None = None) -> str:
    rows = effective_policy_sources(device, organization, person)
    return format_html(
        '<table class="policy-sources"><thead><tr><th>Setting</th><th>In force</th><th>Set by</th></tr></thead><tbody>{}</tbody></table>',
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", ((r.label, r.value, r.source) for r in rows)),
    )


IN_FORCE_FIELDSET: tuple[str, _FieldOpts] = ("Policy in force (saved values)", {"fields": ("effective_policy",)})


MIN_WEBHOOK_SECRET_LENGTH = 16


def _usd_or_dash(amount: Decimal | None) -> str:
    return "-" if amount is None else f"${amount:.2f}"


class OrganizationForm(forms.ModelForm[Organization]):
    """The webhook secret is write-only: typed once, stored encrypted, never rendered back."""

    budget_webhook_url = forms.URLField(
        label="Webhook URL",
        required=False,
        max_length=500,
        assume_scheme="https",
        validators=[validate_webhook_url],
        help_text=Organization._meta.get_field("budget_webhook_url").help_text,
    )

    budget_webhook_secret = forms.CharField(
        label="Webhook secret",
        required=False,
        strip=True,
        min_length=MIN_WEBHOOK_SECRET_LENGTH,
        widget=forms.PasswordInput(render_value=False),
        help_text="Signs each alert (HMAC-SHA256). Write-only: leave empty to keep the one in force.",
    )
    clear_budget_webhook_secret = forms.BooleanField(label="Remove the webhook secret", required=False)

    class Meta:
        model = Organization
        fields = "__all__"
        widgets = {"budget_alert_emails": forms.Textarea(attrs={"rows": 2})}

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        has_secret = bool(self.instance.budget_webhook_secret_encrypted) and not cleaned.get("clear_budget_webhook_secret")
        if cleaned.get("budget_webhook_url") and not (cleaned.get("budget_webhook_secret") or has_secret):
            self.add_error("budget_webhook_secret", "A webhook URL needs a secret to sign its alerts with.")
        return cleaned


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin[Organization]):
    form = OrganizationForm
    list_display = (
        "name",
        "device_count",
        "requests_per_window",
        "daily_cap",
        "weekly_cap",
        "monthly_cap",
        "enforcement",
        "tokens_revoked_before",
    )
    search_fields = ("name",)
    state_fields = ("tokens_revoked_before", "created_at", "updated_at")
    readonly_fields = (*state_fields, "effective_policy", "webhook_secret_state")
    fieldsets = (
        (None, {"fields": ("name",)}),
        POLICY_FIELDSET,
        (
            "Budget alerts (for this organization's caps and its devices')",
            {
                "fields": (
                    "budget_webhook_url",
                    "webhook_secret_state",
                    "budget_webhook_secret",
                    "clear_budget_webhook_secret",
                    "budget_alert_emails",
                )
            },
        ),
        IN_FORCE_FIELDSET,
        ("State", {"fields": state_fields}),
    )
    actions = ["revoke_tokens"]

    @admin.display(description="Daily cap", ordering="daily_spend_cap_usd")
    def daily_cap(self, obj: Organization) -> str:
        return _usd_or_dash(obj.daily_spend_cap_usd)

    @admin.display(description="Weekly cap", ordering="weekly_spend_cap_usd")
    def weekly_cap(self, obj: Organization) -> str:
        return _usd_or_dash(obj.weekly_spend_cap_usd)

    @admin.display(description="Monthly cap", ordering="monthly_spend_cap_usd")
    def monthly_cap(self, obj: Organization) -> str:
        return _usd_or_dash(obj.monthly_spend_cap_usd)

    @admin.display(description="Enforcement", ordering="spend_cap_enforcement")
    def enforcement(self, obj: Organization) -> str:
        return obj.spend_cap_enforcement or "inherit"

    @admin.display(description="Webhook secret in force")
    def webhook_secret_state(self, obj: Organization) -> str:
        return "set (stored encrypted, never shown)" if obj.budget_webhook_secret_encrypted else "not set"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        return super().get_queryset(request).annotate(device_total=Count("devices"))

    @admin.display(description="For its devices (unless a device sets its own)")
    def effective_policy(self, obj: Organization) -> str:
        return render_policy_sources(None, obj if obj.pk else None)

    @admin.display(description="Devices", ordering="device_total")
    def device_count(self, obj: Organization) -> int:
        return cast(CountsDevices, obj).device_total

    def save_model(self, request: HttpRequest, obj: Organization, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("clear_budget_webhook_secret"):
            set_organization_webhook_secret(organization=obj, secret="")
        elif form.cleaned_data.get("budget_webhook_secret"):
            set_organization_webhook_secret(organization=obj, secret=form.cleaned_data["budget_webhook_secret"])
        policy_changed(organization=obj)

    def delete_model(self, request: HttpRequest, obj: Organization) -> None:
        super().delete_model(request, obj)
        transaction.on_commit(invalidate_all_devices)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        super().delete_queryset(request, queryset)
        transaction.on_commit(invalidate_all_devices)

    @admin.action(description="Revoke every token of the selected organizations' devices")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        for organization in queryset:
            result = revoke_organization_tokens(organization=organization, actor=request.user)
            message = f"{organization}: {result.revoked_tokens} tokens of {result.devices} devices revoked."
            self.message_user(request, message, messages.SUCCESS)


def _devices(count: int) -> str:
    return f"{count} device" if count == 1 else f"{count} devices"


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin[Device]):
    list_display: tuple[str, ...] = (
        "device_id",
        "device_name",
        "status",
        "person",
        "organization",
        "user_label",
        "app_name",
        "app_version",
        "os",
        "last_seen_at",
    )
    list_filter = ("status", "organization", "app_name", "app_version")
    list_select_related = ("organization", "person")
    search_fields = ("device_id", "device_name", "user_label", "app_name", "os", "organization__name", "person__email", "last_ip")
    autocomplete_fields = ("organization",)
    described_fields = ("device_name", "app_name", "os")  # the device's word: its next bootstrap overwrites them
    state_fields: tuple[str, ...] = (
        "status",
        "person",
        "secret_state",
        "tokens_revoked_before",
        "last_seen_at",
        "last_ip",
        "tokens_link",
        "created_at",
        "updated_at",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Device | None = None) -> tuple[str, ...]:
        return (*self.described_fields, *self.state_fields, "effective_policy")

    def get_fieldsets(self, request: HttpRequest, obj: Device | None = None) -> _FieldsetSpec:
        return [
            (None, {"fields": ("device_id", "organization", "user_label", "app_version")}),
            ("Reported by the device at bootstrap", {"fields": self.described_fields}),
            POLICY_FIELDSET,
            IN_FORCE_FIELDSET,
            ("State (change with the actions on the device list)", {"fields": self.state_fields}),
        ]

    actions = ["approve", "block", "unblock", "revoke_tokens", "reset_secret"]
    paginator = CappedCountPaginator
    show_full_result_count = False

    @admin.display(description="Each value and where it comes from")
    def effective_policy(self, obj: Device) -> str:
        return render_policy_sources(obj, obj.organization, obj.person)

    @admin.display(description="Device secret")
    def secret_state(self, obj: Device) -> str:
        return "set (only its hash is stored)" if obj.secret_hash else "not set: the next bootstrap sets a new one"

    @admin.display(description="Tokens")
    def tokens_link(self, obj: Device) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("admin:tokens_issuedtoken_changelist") + "?" + urlencode({"device__id__exact": obj.pk})
        return format_html('<a href="{}">Issued tokens</a>', url)

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        policy_changed(device=obj)

    def delete_model(self, request: HttpRequest, obj: Device) -> None:
        device_id = obj.device_id
        super().delete_model(request, obj)
        transaction.on_commit(lambda: invalidate_devices([device_id]))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        device_ids = list(queryset.values_list("device_id", flat=True))
        super().delete_queryset(request, queryset)
        transaction.on_commit(lambda: invalidate_devices(device_ids))

    @admin.action(description="Approve selected pending devices")
    def approve(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        devices = list(queryset.filter(status=DeviceStatus.PENDING))
        for device in devices:
            approve_device(device=device, actor=request.user)
        self.message_user(request, f"{_devices(len(devices))} approved.", messages.SUCCESS)

    @admin.action(description="Block selected devices: refused until unblocked (their tokens are revoked)")
    def block(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        devices = list(queryset)
        for device in devices:
            block_device(device=device, actor=request.user)
        self.message_user(request, f"{_devices(len(devices))} blocked.", messages.SUCCESS)

    @admin.action(description="Unblock selected blocked devices (they enroll again)")
    def unblock(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        devices = list(queryset.filter(status=DeviceStatus.BLOCKED))
        for device in devices:
            unblock_device(device=device, actor=request.user)
        self.message_user(request, f"{_devices(len(devices))} unblocked.", messages.SUCCESS)

    @admin.action(description="Revoke all tokens of selected devices (they may enroll again; block to stop them)")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        total = sum(revoke_device_tokens(device=device, actor=request.user).revoked_tokens for device in queryset)
        self.message_user(request, f"{total} tokens revoked.", messages.SUCCESS)

    @admin.action(description="Reset device secret (next bootstrap sets a new one)")
    def reset_secret(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        devices = list(queryset)
        for device in devices:
            reset_device_secret(device=device, actor=request.user)
        self.message_user(request, f"Secret reset for {len(devices)} devices.", messages.SUCCESS)


@admin.register(IssuedToken)
class IssuedTokenAdmin(ReadOnlyAdmin[IssuedToken]):
    list_display = ("jti", "kind", "device", "issued_at", "expires_at", "used_at", "revoked_at", "ip")
    list_filter = ("kind",)
    list_select_related = ("device",)
    search_fields = ("=jti", "=grant", "=family", "device__device_id")
    raw_id_fields = ("device",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    actions = ["revoke"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tokens.change_device")

    @admin.action(description="Revoke selected tokens (each with the other token of its grant)", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[IssuedToken]) -> None:
        jtis = list(queryset.values_list("jti", flat=True))
        for jti in jtis:
            revoke_token(jti=jti, actor=request.user)
        self.message_user(request, f"{len(jtis)} tokens revoked.", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin[AuditEvent]):
    list_display = ("occurred_at", "kind", "device_ref", "person", "organization", "jti", "ip", "actor")
    list_filter = ("kind",)
    list_select_related = ("organization", "person")
    search_fields = ("=device_ref", "=jti", "actor", "ip", "person__email")
    date_hierarchy = "occurred_at"
    paginator = CappedCountPaginator
    show_full_result_count = False


@admin.register(SigningKey)
class SigningKeyAdmin(ReadOnlyAdmin[SigningKey]):
    """Rotation is `manage.py rotate_signing_key` (and the schedule); secrets are never shown."""

    list_display = ("kid", "state", "created_at", "verify_until", "retired_at")
    list_filter = ("state",)
    fields = ("kid", "state", "created_at", "verify_until", "retired_at")


@admin.register(OperatorApiKey)
class OperatorApiKeyAdmin(admin.ModelAdmin[OperatorApiKey]):
    """The secret is shown once, on the page right after creation; only its SHA-256 is stored."""

    list_display = ("name", "prefix", "scope", "created_by", "created_at", "last_used_at", "revoked_at")
    list_filter = ("organization",)
    # The scope is fixed at creation: a key never widens to the platform after it was handed out.
    readonly_fields = ("organization", "prefix", "created_by", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    @admin.display(description="Scope", ordering="organization__name")
    def scope(self, obj: OperatorApiKey) -> str:
        return "Platform" if obj.organization is None else f"Organization: {obj.organization}"

    def get_fields(self, request: HttpRequest, obj: OperatorApiKey | None = None) -> tuple[str, ...]:
        return ("name", "organization") if obj is None else ("name", *self.readonly_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: OperatorApiKey | None = None) -> tuple[str, ...]:
        return () if obj is None else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: OperatorApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        obj.created_by = request.user if isinstance(request.user, User) else None
        cast(_RequestWithNewKey, request)._operator_key_secret = issue_operator_api_key(obj)

    def response_add(self, request: HttpRequest, obj: OperatorApiKey, post_url_continue: str | None = None) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": obj,
            "secret": cast(_RequestWithNewKey, request)._operator_key_secret,
            "title": "Operator API key created",
        }
        response = TemplateResponse(request, "admin/tokens/operatorapikey/created.html", context)
        response["cache-control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[OperatorApiKey]) -> None:
        keys = list(queryset)
        for key in keys:
            revoke_operator_api_key(key=key)
        self.message_user(request, f"{len(keys)} keys revoked.", messages.SUCCESS)
