"""Operators' pages for people and the group → organization mappings, beside the device pages
(tokens.admin). Blocking, unblocking and revoking go through `tokens.revocation` with
`actor=request.user`, as everywhere else."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from tokens.admin import IN_FORCE_FIELDSET, POLICY_FIELDSET, CountsDevices, render_policy_sources
from tokens.models import GroupOrganization, Person
from tokens.revocation import block_person, policy_changed, revoke_person_tokens, unblock_person


def _people(count: int) -> str:
    return f"{count} person" if count == 1 else f"{count} people"


@admin.register(Person)
class PersonAdmin(admin.ModelAdmin[Person]):
    list_display = ("email", "display_name", "organization", "device_count", "blocked", "active", "last_sign_in_at")
    list_filter = ("blocked", "active", "organization")
    list_select_related = ("organization",)
    search_fields = ("email", "display_name", "=subject")
    autocomplete_fields = ("organization",)
    identity_fields = ("issuer", "subject", "email", "display_name", "groups")
    state_fields = ("blocked", "active", "devices_link", "last_sign_in_at", "created_at", "updated_at")
    readonly_fields = (*identity_fields, *state_fields, "effective_policy")
    fieldsets = (
        ("From the identity provider (refreshed at each sign-in)", {"fields": identity_fields}),
        (None, {"fields": ("organization",)}),
        POLICY_FIELDSET,
        IN_FORCE_FIELDSET,
        ("State (change with the actions on the people list)", {"fields": state_fields}),
    )
    actions = ["block", "unblock", "revoke_tokens"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a person comes from a sign-in

    def get_queryset(self, request: HttpRequest) -> QuerySet[Person]:
        return super().get_queryset(request).annotate(device_total=Count("devices"))

    @admin.display(description="Devices", ordering="device_total")
    def device_count(self, obj: Person) -> int:
        return cast(CountsDevices, obj).device_total

    @admin.display(description="For their devices (unless a device sets its own)")
    def effective_policy(self, obj: Person) -> str:
        return render_policy_sources(None, obj.organization, obj)

    @admin.display(description="Devices")
    def devices_link(self, obj: Person) -> str:
        url = reverse("admin:tokens_device_changelist") + "?" + urlencode({"person__id__exact": obj.pk})
        return format_html('<a href="{}">Their devices</a>', url)

    def save_model(self, request: HttpRequest, obj: Person, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        policy_changed(person=obj)

    @admin.action(description="Block selected people: every device's tokens revoked, no refresh or sign-in until unblocked")
    def block(self, request: HttpRequest, queryset: QuerySet[Person]) -> None:
        people = list(queryset)
        devices = sum(block_person(person=person, actor=request.user).devices for person in people)
        self.message_user(request, f"{_people(len(people))} blocked; {devices} devices cut off.", messages.SUCCESS)

    @admin.action(description="Unblock selected people (they sign in again)")
    def unblock(self, request: HttpRequest, queryset: QuerySet[Person]) -> None:
        people = list(queryset.filter(blocked=True))
        for person in people:
            unblock_person(person=person, actor=request.user)
        self.message_user(request, f"{_people(len(people))} unblocked.", messages.SUCCESS)

    @admin.action(description="Revoke every token of the selected people's devices (they sign in again)")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Person]) -> None:
        total = sum(revoke_person_tokens(person=person, actor=request.user).revoked_tokens for person in queryset)
        self.message_user(request, f"{total} tokens revoked.", messages.SUCCESS)


@admin.register(GroupOrganization)
class GroupOrganizationAdmin(admin.ModelAdmin[GroupOrganization]):
    """Applied at each person's next sign-in: a mapping changed here moves nobody until then."""

    list_display = ("group", "organization", "priority")
    list_editable = ("priority",)
    search_fields = ("group", "organization__name")
    autocomplete_fields = ("organization",)
