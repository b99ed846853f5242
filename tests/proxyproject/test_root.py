"""The base URL answers the probe clients send at launch with a quiet 200."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_head_and_get_of_the_base_url_answer_200_without_a_log_line(caplog):
    client = Client()
    with caplog.at_level(logging.INFO):
        assert client.head("/").status_code == 200
        assert (client.get("/").status_code, client.get("/").content) == (200, b"")
    assert not [record for record in caplog.records if record.name.startswith("django")]


def test_other_methods_on_the_base_url_are_405():
    assert Client().post("/").status_code == 405
