"""When to renew, and the gateway's times moved onto a skewed local clock."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from proxyclient import ClockSkewError, TokenGrant, UnexpectedResponse
from proxyclient.grant import grant_from_response
from proxyclient.wire import check_server_date, clock_offset

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
BODY = {
    "wrapper_token": "w.t.v",
    "refresh_token": "r.t.v",
    "proxy_base_url": "http://gw.example.com/",
    "expires_at": "2027-01-16T08:00:00.000Z",
    "refresh_expires_at": "2027-02-14T08:00:00.000Z",
}


def dated(server_time: float) -> httpx.Response:
    return httpx.Response(200, headers={"date": format_datetime(datetime.fromtimestamp(server_time, UTC), usegmt=True)})


def test_a_day_long_token_is_refreshed_when_an_hour_remains():
    grant = grant_from_response(BODY, received_at=NOW, clock_offset=0.0)
    assert (grant.expires_at, grant.lifetime, grant.proxy_base_url) == (NOW + 86400, 86400, "http://gw.example.com")
    assert grant.refresh_due_in(NOW, margin=3600) == 82800
    assert grant.refresh_due_in(NOW + 82800, margin=3600) == 0
    assert grant.refresh_token_usable(NOW + 29 * 86400) is True
    assert grant.refresh_token_usable(NOW + 30 * 86400) is False


def test_a_short_lived_token_is_refreshed_at_half_its_life():
    grant = TokenGrant("w", "r", "http://gw", expires_at=NOW + 4, refresh_expires_at=None, received_at=NOW)
    assert grant.refresh_lead(margin=3600) == 2
    assert grant.refresh_due_in(NOW + 1, margin=3600) == 1


def test_gateway_times_are_moved_onto_a_clock_that_runs_two_hours_ahead():
    local_now = NOW + 7200
    offset = clock_offset(dated(NOW), now=local_now)
    grant = grant_from_response(BODY, received_at=local_now, clock_offset=offset)
    assert offset == -7199.5
    assert grant.seconds_left(local_now) == 86400 - 0.5
    assert grant.refresh_expires_at == NOW + 30 * 86400 + 7199.5


def test_clocks_within_the_date_headers_resolution_are_not_corrected():
    assert clock_offset(dated(NOW), now=NOW + 0.9) == 0.0
    assert clock_offset(httpx.Response(200), now=NOW) is None


def test_skew_beyond_tolerance_is_an_error_saying_which_way():
    with pytest.raises(ClockSkewError) as behind:
        check_server_date(dated(NOW), now=NOW - 400, tolerance=300)
    assert behind.value.message == (
        "This computer's clock is 7 min behind the gateway's (local 2027-01-15T07:53:20Z, gateway 2027-01-15T08:00:00Z)."
    )
    check_server_date(dated(NOW), now=NOW - 200, tolerance=300)


def test_cached_grants_round_trip_and_foreign_shapes_are_refused():
    grant = grant_from_response(BODY, received_at=NOW, clock_offset=None)
    assert TokenGrant.from_dict(grant.to_dict()) == grant
    with pytest.raises(ValueError):
        TokenGrant.from_dict({"wrapper_token": "w"})


def test_a_token_response_without_tokens_is_unexpected():
    with pytest.raises(UnexpectedResponse) as garbled:
        grant_from_response({**BODY, "wrapper_token": ""}, received_at=NOW, clock_offset=None)
    assert garbled.value.message == "The gateway's token response has empty or non-string tokens."
