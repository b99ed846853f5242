"""Operators' view of the upstream key pool: add, rotate, retire, reactivate and reweigh keys.

Every change goes through `gateway.upstream_keys` with `actor=request.user`, exactly as the
commands and Celery do, so the same checks, audit lines and pool reloads follow. Secrets are typed
into password fields that never echo them back, and are only ever shown as their last four
characters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from gateway.keypool_shared import shared_in_flight_counts
from gateway.models import MAX_WEIGHT, OwnedResource, UpstreamKey, UpstreamKeyState
from gateway.upstream_keys import (
    UpstreamKeyError,
    add_upstream_key,
    probe_upstream_key,
    reactivate_upstream_key,
    retire_upstream_key,
    rotate_upstream_key,
    set_upstream_key_weight,
    upstream_keys_due_for_rotation,
)
from proxyproject.lib.admin import CappedCountPaginator, ReadOnlyAdmin

_SECRET_HELP = "Pasted, never shown again: the admin keeps only its last four characters in view."


class AddUpstreamKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Shown in logs and usage records, e.g. prod-2026-01.")
    secret = forms.CharField(widget=forms.PasswordInput(render_value=False), strip=True, help_text=_SECRET_HELP)
    weight = forms.IntegerField(
        min_value=1, max_value=MAX_WEIGHT, initial=1, help_text="Share of new requests relative to the other active keys."
    )


class RotateUpstreamKeyForm(forms.Form):
    secret = forms.CharField(
        label="New secret", widget=forms.PasswordInput(render_value=False), strip=True, help_text=_SECRET_HELP
    )
    new_name = forms.CharField(max_length=100, required=False, help_text="Empty: the old name with today's date.")


@admin.register(UpstreamKey)
class UpstreamKeyAdmin(admin.ModelAdmin[UpstreamKey]):
    class Media:
        css = {"all": ("console/console.css",)}  # .console-alert: no inline styles under the CSP

    list_display = (
        "name",
        "fingerprint",
        "state",
        "weight",
        "flag",
        "age",
        "in_flight",
        "last_used_at",
        "request_count",
        "failures",
        "draining_since",
        "retired_at",
    )
    list_filter = ("state", ("flagged_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "=secret_last4")
    fields = (
        "name",
        "fingerprint",
        "state",
        "weight",
        "flag",
        "from_environment",
        "created_at",
        "created_by",
        "replaced_by",
        "draining_since",
        "retired_at",
        "last_used_at",
        "request_count",
        "rejected_count",
        "rate_limited_count",
        "server_error_count",
        "connection_failure_count",
    )
    readonly_fields = tuple(name for name in fields if name != "weight")
    actions = ["test_keys", "rotate", "retire", "reactivate"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # retire instead: the row keeps the digest that stops the secret coming back

    @admin.display(description="Key")
    def fingerprint(self, obj: UpstreamKey) -> str:
        return obj.masked_secret

    @admin.display(description="Flagged")
    def flag(self, obj: UpstreamKey) -> str:
        if obj.flagged_at is None:
            return "-"
        when = obj.flagged_at.strftime("%Y-%m-%d %H:%M")
        return format_html('<strong class="console-alert">{}</strong> ({})', obj.flagged_reason, when)

    @admin.display(description="Age (days)", ordering="created_at")
    def age(self, obj: UpstreamKey) -> str:
        days = (timezone.now() - obj.created_at).days
        if obj.state == UpstreamKeyState.ACTIVE and days >= settings.UPSTREAM_KEY_ROTATION_DAYS:
            return format_html('<strong class="console-alert">{} (rotate)</strong>', days)
        return str(days)

    @admin.display(description="In flight")
    def in_flight(self, obj: UpstreamKey) -> str:
        if obj.state == UpstreamKeyState.RETIRED:
            return "-"
        counts = shared_in_flight_counts([obj.pk])
        return "?" if counts is None else str(counts[obj.pk])

    @admin.display(description="401/403 · 429 · 5xx · conn")
    def failures(self, obj: UpstreamKey) -> str:
        return f"{obj.rejected_count} · {obj.rate_limited_count} · {obj.server_error_count} · {obj.connection_failure_count}"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "GET":
            self._warn(request)
        return super().changelist_view(request, extra_context)

    def _warn(self, request: HttpRequest) -> None:
        for key in upstream_keys_due_for_rotation():
            days = settings.UPSTREAM_KEY_ROTATION_DAYS
            self.message_user(request, f"Key {key.name!r} is older than {days} days: rotate it.", messages.WARNING)
        for key in UpstreamKey.objects.filter(flagged_at__isnull=False).exclude(state=UpstreamKeyState.RETIRED):
            self.message_user(
                request,
                f"Key {key.name!r} is out of rotation: {key.flagged_reason}. Rotate it, or reactivate it once it works again.",
                messages.ERROR,
            )

    def save_model(self, request: HttpRequest, obj: UpstreamKey, form: forms.ModelForm[UpstreamKey], change: bool) -> None:
        """Only the weight is editable here; it changes through the service so the pool reloads."""
        if "weight" in form.changed_data:
            set_upstream_key_weight(name=obj.name, weight=obj.weight, actor=request.user)

    # --- add and rotate: forms of their own, since a secret is typed -------------------------
    def get_urls(self) -> list[URLPattern]:
        return [
            path("<int:key_id>/rotate/", self.admin_site.admin_view(self.rotate_view), name="gateway_upstreamkey_rotate"),
            *super().get_urls(),
        ]

    def _form_page(
        self, request: HttpRequest, form: forms.Form, *, title: str, explanation: str, submit_label: str
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "title": title,
            "explanation": explanation,
            "submit_label": submit_label,
        }
        return TemplateResponse(request, "admin/gateway/upstreamkey/secret_form.html", context)

    def _changelist(self) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:gateway_upstreamkey_changelist"))

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = AddUpstreamKeyForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                key = add_upstream_key(actor=request.user, verify=True, **form.cleaned_data)
            except UpstreamKeyError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"Upstream key {key.name!r} ({key.masked_secret}) added and active.", messages.SUCCESS)
                return self._changelist()
        return self._form_page(
            request,
            form,
            title="Add upstream key",
            submit_label="Add key",
            explanation=(
                "The upstream is asked first whether the key works (GET /v1/models); then it joins the pool at once: "
                "every gateway process uses it within seconds."
            ),
        )

    def rotate_view(self, request: HttpRequest, key_id: int) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        key = get_object_or_404(UpstreamKey, pk=key_id)
        form = RotateUpstreamKeyForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                rotation = rotate_upstream_key(
                    name=key.name,
                    secret=form.cleaned_data["secret"],
                    new_name=form.cleaned_data["new_name"] or None,
                    actor=request.user,
                    verify=True,
                )
            except UpstreamKeyError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    f"Key {rotation.new.name!r} ({rotation.new.masked_secret}) is active; {key.name!r} is draining and "
                    "is retired once no request is in flight on it.",
                    messages.SUCCESS,
                )
                return self._changelist()
        return self._form_page(
            request,
            form,
            title=f"Rotate {key.name} ({key.masked_secret})",
            submit_label="Rotate",
            explanation=f"The new key takes every new request; requests in flight finish on {key.name}, which then retires.",
        )

    # --- actions ------------------------------------------------------------------------------
    @admin.action(description="Rotate the selected key (asks for the new secret)", permissions=["change"])
    def rotate(self, request: HttpRequest, queryset: QuerySet[UpstreamKey]) -> HttpResponseRedirect | None:
        keys = list(queryset[:2])
        if len(keys) != 1:
            self.message_user(request, "Select exactly one key to rotate.", messages.ERROR)
            return None
        return HttpResponseRedirect(reverse("admin:gateway_upstreamkey_rotate", args=[keys[0].pk]))

    def _each(self, request: HttpRequest, queryset: QuerySet[UpstreamKey], act: Callable[..., object], done: str) -> None:
        for key in queryset:
            try:
                act(name=key.name, actor=request.user)
            except UpstreamKeyError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{key.name}: {done}.", messages.SUCCESS)

    @admin.action(description="Test key: ask the upstream whether the selected keys work", permissions=["change"])
    def test_keys(self, request: HttpRequest, queryset: QuerySet[UpstreamKey]) -> None:
        for key in queryset:
            try:
                check = probe_upstream_key(name=key.name, actor=request.user)
            except UpstreamKeyError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            level = messages.SUCCESS if check.works else messages.ERROR
            flagged = "" if check.works or check.verdict != "refused" else " It is flagged out of rotation."
            self.message_user(request, f"{key.name}: {check.detail}.{flagged}", level)

    @admin.action(description="Retire the selected keys now (requests in flight finish)", permissions=["change"])
    def retire(self, request: HttpRequest, queryset: QuerySet[UpstreamKey]) -> None:
        self._each(request, queryset, retire_upstream_key, "retired")

    @admin.action(description="Reactivate the selected keys (stop draining, clear the flag)", permissions=["change"])
    def reactivate(self, request: HttpRequest, queryset: QuerySet[UpstreamKey]) -> None:
        self._each(request, queryset, reactivate_upstream_key, "back in rotation")


@admin.register(OwnedResource)
class OwnedResourceAdmin(ReadOnlyAdmin[OwnedResource]):
    """Which device (and organization) owns each batch and file: read-only, rows come from the proxy.

    Operator API keys do not reach /v1, so this is where an operator sees an organization's
    resources (filter by organization)."""

    paginator = CappedCountPaginator
    list_display = ("resource_id", "kind", "device", "organization", "created_at", "settled_at")
    list_filter = ("kind", "organization")
    list_select_related = ("device", "organization")
    search_fields = ("resource_id", "device__device_id")
    raw_id_fields = ("device", "organization")
