"""What the client reports about the device at bootstrap is cleaned to what the gateway accepts,
so an odd host name never costs the user their token."""

from __future__ import annotations

import pytest

from proxyclient.description import DEVICE_NAME_MAX_CHARS, clean_description


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("ada-laptop", "ada-laptop"),
        ("  ada\tlaptop\n", "adalaptop"),
        ('<b>"ada"</b>', "bada/b"),
        ("=cmd|calc", "cmd|calc"),
        ("-+@name", "name"),
        ("RT\u202eDEV", "RTDEV"),
        ("Ada's MacBook", "Ada's MacBook"),
    ],
)
def test_description_is_cleaned_to_what_the_gateway_accepts(raw, cleaned):
    assert clean_description(raw, DEVICE_NAME_MAX_CHARS) == cleaned


def test_description_is_cut_to_its_length_cap():
    assert clean_description("x" * 500, DEVICE_NAME_MAX_CHARS) == "x" * DEVICE_NAME_MAX_CHARS
