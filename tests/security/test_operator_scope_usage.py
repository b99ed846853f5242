"""An organization's operator key reads its organization's usage only: naming another
organization is refused, naming another organization's device finds nothing."""

from __future__ import annotations

import pytest

from tests.usage.test_api import client, fleet, get_usage, isolated_token_state  # noqa: F401  (the usage API's fixtures)
from tokens.models import Organization
from tokens.operators import create_operator_api_key

pytestmark = pytest.mark.usefixtures("live_prices")


def test_an_organization_key_reads_only_its_organization_s_usage(client, fleet):
    _, secret = create_operator_api_key(name="acme-finance", created_by=None, organization=fleet["org"])
    body = get_usage(client, secret).json()
    assert (body["scope"], body["filters"]["org"]) == ("organization", fleet["org"].pk)
    assert (body["totals"]["requests"], body["totals"]["unpriced_requests"], body["totals"]["cost"]) == (4, 0, "0.0258350000")


def test_an_organization_key_naming_another_organization_is_refused(client, fleet):
    other = Organization.objects.create(name="Globex")
    _, secret = create_operator_api_key(name="acme-finance", created_by=None, organization=fleet["org"])
    response = get_usage(client, secret, org=other.pk)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_an_organization_key_naming_a_device_outside_it_counts_nothing(client, fleet):
    _, secret = create_operator_api_key(name="acme-finance", created_by=None, organization=fleet["org"])
    assert get_usage(client, secret, device="kiosk-cy").json()["totals"]["requests"] == 0
