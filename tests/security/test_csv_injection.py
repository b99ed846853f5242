"""CSV injection (OWASP): text a client controls (model names, device ids, session ids) must never
reach a spreadsheet as a formula. Every cell starting with = + - @, TAB or CR is exported with a
leading quote; the export is the admin's own action, downloaded as an operator would."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.usage.cast import usage_event
from usage.models import UsageRecord
from usage.writer import drain_usage_queue, submit_usage

PAYLOADS = ['=HYPERLINK("http://evil")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1"]


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create(username="ops", is_staff=True, is_superuser=True))
    return client


def export(operator: Client, url: str, pks: list[int]) -> list[dict[str, str]]:
    response = operator.post(url, {"action": "export_csv", "_selected_action": pks})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode(), newline="")))


@pytest.mark.parametrize("payload", PAYLOADS, ids=["equals", "plus", "minus", "at", "tab", "carriage-return"])
def test_formula_in_a_model_name_is_exported_as_text(db, operator, payload):
    submit_usage(usage_event(request_id="req_formula", device_id=payload, model=payload, session_id=payload))
    drain_usage_queue()
    (row,) = export(operator, "/admin/usage/usagerecord/", [UsageRecord.objects.get(request_id="req_formula").pk])
    assert (row["model"], row["device_ref"], row["session_id"]) == ("'" + payload,) * 3


def test_plain_values_and_numbers_are_exported_unchanged(db, operator):
    submit_usage(usage_event(request_id="req_plain", device_id="laptop-ada", model="claude-haiku-4-5", input_tokens=12))
    drain_usage_queue()
    (row,) = export(operator, "/admin/usage/usagerecord/", [UsageRecord.objects.get(request_id="req_plain").pk])
    assert (row["model"], row["device_ref"], row["input_tokens"]) == ("claude-haiku-4-5", "laptop-ada", "12")
