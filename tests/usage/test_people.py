"""Per person: the policy in force (device → person → organization → settings), a spend cap shared
by the person's devices, usage grouped and filtered by person, and the dashboard's top people. The
devices sign their person in against the test provider, and act through the real authentication."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from proxyproject.lib.errors import SpendCapReached
from tests.tokens.sign_in_client import device_sign_in
from tests.usage.cast import usage_event
from tokens.authentication import authenticate_wrapper_token
from tokens.models import Device, Organization, Person
from tokens.operators import create_operator_api_key
from tokens.policy import resolve_policy
from tokens.revocation import policy_changed
from usage.spend import reserve_spend
from usage.writer import drain_usage_queue, submit_usage

pytestmark = pytest.mark.usefixtures("live_prices")
authenticate = async_to_sync(authenticate_wrapper_token)


@pytest.fixture(autouse=True)
def isolated(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000


@pytest.fixture
def alice(people_provider) -> tuple[Person, dict[str, dict]]:
    """Alice, signed in on her laptop and her desktop (her pk random: spend counters are keyed by pk)."""
    person = Person.objects.create(pk=random.randrange(10**6, 10**9), issuer=people_provider.issuer, subject="alice-0001")
    client = Client()
    bodies = {device_id: device_sign_in(client, people_provider, device_id).json() for device_id in ("laptop", "desktop")}
    return person, bodies


def test_person_policy_sits_between_the_device_and_the_organization(settings):
    settings.RATE_LIMIT_MAX = 100
    acme = Organization(name="Acme", requests_per_window=10, window_ms=30_000, tokens_per_minute=500)
    person = Person(email="alice@example.com", requests_per_window=20, window_ms=40_000)
    device = Device(device_id="laptop", requests_per_window=30)
    policy = resolve_policy(device, acme, person)
    assert (policy.requests_per_window, policy.window_ms, policy.tokens_per_minute) == (30, 40_000, 500)
    assert resolve_policy(Device(device_id="desktop"), acme, person).requests_per_window == 20
    assert resolve_policy(Device(device_id="kiosk"), None, None).requests_per_window == 100


def test_the_person_page_shows_where_each_value_comes_from(alice, client):
    person, _ = alice
    person.refresh_from_db()
    person.daily_spend_cap_usd = Decimal("4.00")
    person.save()
    client.force_login(get_user_model().objects.create_superuser("ops", password="ops-password-123"))
    page = client.get(f"/admin/tokens/person/{person.pk}/change/").content.decode()
    assert "<td>Daily spend cap (USD)</td><td>$4.00</td><td>person alice@example.com</td>" in page
    laptop = Device.objects.get(device_id="laptop")
    page = client.get(f"/admin/tokens/device/{laptop.pk}/change/").content.decode()
    assert "<td>Daily spend cap (USD)</td><td>$4.00</td><td>person alice@example.com</td>" in page


def test_blocking_a_person_in_the_admin_cuts_every_device(alice, client):
    person, bodies = alice
    client.force_login(get_user_model().objects.create_superuser("ops", password="ops-password-123"))
    client.post("/admin/tokens/person/", {"action": "block", "_selected_action": [person.pk]})
    refused = [
        Client().post("/refresh", data={"refresh_token": body["refresh_token"]}, content_type="application/json").status_code
        for body in bodies.values()
    ]
    assert refused == [403, 403]
    assert Person.objects.get(pk=person.pk).blocked


def test_a_person_cap_is_shared_by_all_their_devices(alice):
    person, bodies = alice
    Person.objects.filter(pk=person.pk).update(daily_spend_cap_usd=Decimal("1.00"))
    policy_changed(person=person)
    laptop, desktop = (authenticate(bodies[device_id]["wrapper_token"]) for device_id in ("laptop", "desktop"))
    assert (laptop.person_id, laptop.policy.person_daily_cap_usd) == (person.pk, Decimal("1.00"))
    asyncio.run(reserve_spend(laptop, Decimal("0.75"), "req-laptop"))
    with pytest.raises(SpendCapReached) as refused:
        asyncio.run(reserve_spend(desktop, Decimal("0.50"), "req-desktop"))
    assert (refused.value.details["scope"], refused.value.details["remaining"]) == ("person", "0.25")
    assert str(refused.value).startswith("Daily spend cap $1.00 for this person: $0.00 spent, $0.75 reserved")


def _usage_of_people(alice_person: Person) -> None:
    yesterday = timezone.now() - dt.timedelta(days=1)
    for device in Device.objects.filter(person=alice_person):
        submit_usage(
            usage_event(
                occurred_at=yesterday,
                device_id=device.device_id,
                device_pk=device.pk,
                person_id=alice_person.pk,
                input_tokens=1000,
                output_tokens=500,
            )
        )
    submit_usage(usage_event(occurred_at=yesterday, device_id="build-01", device_pk=None, input_tokens=1000, output_tokens=0))
    drain_usage_queue()


def test_usage_groups_by_person_and_filters_by_person(alice):
    person, _ = alice
    _usage_of_people(person)
    _, secret = create_operator_api_key(name="finance", created_by=None)
    headers = {"authorization": f"Bearer {secret}"}
    grouped = Client().get("/admin/usage", {"group_by": "person"}, headers=headers).json()
    assert [(group["key"], group["requests"], group["cost"]) for group in grouped["groups"]] == [
        ("alice@example.com", 2, "0.0210000000"),
        ("(no person)", 1, "0.0030000000"),
    ]
    filtered = Client().get("/admin/usage", {"person": "ALICE@example.com"}, headers=headers).json()
    assert (filtered["filters"]["person"], filtered["totals"]["requests"]) == ("ALICE@example.com", 2)


def test_a_device_token_cannot_filter_by_person(alice):
    _, bodies = alice
    headers = {"authorization": f"Bearer {bodies['laptop']['wrapper_token']}"}
    response = Client().get("/admin/usage", {"person": "bob@example.com"}, headers=headers)
    assert response.status_code == 403


def test_the_dashboard_lists_the_top_people(alice, client):
    person, _ = alice
    _usage_of_people(person)
    client.force_login(get_user_model().objects.create_superuser("ops", password="ops-password-123"))
    page = client.get("/admin/usage/usagerecord/dashboard/", {"period": "7d"}).content.decode()
    assert 'id="top-people"' in page and "alice@example.com" in page
