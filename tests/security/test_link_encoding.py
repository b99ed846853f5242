"""Links built from data: a device id chosen by a client must not add query parameters, cut the
query short or change its own value in the links of the admin. The device page's "usage records"
link must list exactly that device's records, whatever characters its id holds."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.usage.cast import usage_event
from tokens.models import Device
from usage.writer import drain_usage_queue, submit_usage

TRICKY_IDS = ["attacker&device_ref=victim", "plus+sign", "hash#fragment", "percent%41", "a b&c=d+e#f%g"]


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create(username="ops", is_staff=True, is_superuser=True))
    return client


def link(page: str, text: str) -> str:
    (href,) = re.findall(rf'<a href="([^"]*)">{re.escape(text)}</a>', page)
    return html.unescape(href)


@pytest.mark.parametrize("device_id", TRICKY_IDS)
def test_device_id_cannot_inject_into_the_usage_records_link(db, operator, device_id):
    device = Device.objects.create(device_id=device_id)
    submit_usage(usage_event(request_id="req_own", device_id=device_id, device_pk=device.pk))
    submit_usage(usage_event(request_id="req_victim", device_id="victim"))
    drain_usage_queue()

    page = operator.get(f"/admin/tokens/device/{device.pk}/change/").content.decode()
    records = operator.get(link(page, "usage records"))
    assert records.status_code == 200
    assert {record.request_id for record in records.context["cl"].result_list} == {"req_own"}
