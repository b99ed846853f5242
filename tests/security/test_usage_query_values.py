"""GET /admin/usage and the usage list's date filter take values from whoever holds a credential (a
device token included). Values at the edge of the calendar or past a 64-bit id made the report
overflow (a 500 with a traceback in the log, on every repeat); each is now a 400 naming the field,
or finds nothing, and the list goes back to its unfiltered page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.usage.test_api import client, fleet, get_usage, isolated_token_state  # noqa: F401  (the usage API's fixtures)
from tokens.operators import create_operator_api_key

pytestmark = pytest.mark.usefixtures("live_prices")


@pytest.mark.parametrize(
    ("name", "value"),
    [("until", "0001-01-01T00:00:00"), ("since", "0001-01-01T00:00:00+05:00"), ("until", "9999-12-31T23:59:59-05:00")],
)
def test_a_device_naming_a_moment_at_the_calendar_s_edge_gets_a_400_not_a_server_error(client, fleet, name, value):  # noqa: F811
    response = get_usage(client, fleet["tokens"]["laptop-ada"], **{name: value})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == f"{name}: must be from 1970-01-01 to before 9000-01-01 (UTC)."


def test_an_organization_id_past_64_bits_gets_a_400_not_a_server_error(client, fleet):  # noqa: F811
    _, secret = create_operator_api_key(name="platform", created_by=None)
    response = get_usage(client, secret, org="99999999999999999999")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("org: Input should be less than or equal to 9223372036854775807")


def test_a_person_named_by_a_superscript_digit_finds_nobody_instead_of_a_server_error(client, fleet):  # noqa: F811
    _, secret = create_operator_api_key(name="platform", created_by=None)
    response = get_usage(client, secret, person="²")
    assert response.status_code == 200
    assert (response.json()["totals"]["requests"], response.json()["filters"]["person"]) == (0, "²")


def test_the_usage_list_filtered_to_the_calendar_s_last_day_goes_back_to_the_list(db):
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("filters", password="filters-password-123"))
    response = staff.get("/admin/usage/usagerecord/?occurred_at__to=9999-12-31")
    assert (response.status_code, response.headers["location"]) == (302, "/admin/usage/usagerecord/?e=1")
