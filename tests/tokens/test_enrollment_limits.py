"""Abuse limits on /bootstrap and /refresh per client IP."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from proxyproject.lib.errors import EnrollmentRateLimited
from proxyproject.lib.ratelimit import LocalRateLimiter
from tests.tokens.client import error_of
from tokens.enrollment_limits import enforce_enrollment_limit

pytestmark = pytest.mark.django_db


def _bootstrap_from(client, ip: str, device_id: str):
    return client.post("/bootstrap", data={"device_id": device_id}, content_type="application/json", REMOTE_ADDR=ip)


def test_bootstrap_over_the_limit_gets_429_with_retry_after(client, settings):
    settings.ENROLLMENT_RATE_LIMIT_MAX = 3
    settings.ENROLLMENT_RATE_LIMIT_WINDOW = 60_000
    statuses = [_bootstrap_from(client, "203.0.113.7", f"dev-{n}").status_code for n in range(3)]
    limited = _bootstrap_from(client, "203.0.113.7", "dev-3")

    assert statuses == [200, 200, 200]
    assert error_of(limited) == (429, "rate_limit_error", "enrollment_rate_limited")
    assert 1 <= int(limited["retry-after"]) <= 60
    # Another address has its own budget.
    assert _bootstrap_from(client, "203.0.113.8", "dev-4").status_code == 200


def test_refresh_has_its_own_budget_per_ip(client, settings):
    settings.ENROLLMENT_RATE_LIMIT_MAX = 2
    responses = [
        client.post("/refresh", data={"refresh_token": "x"}, content_type="application/json", REMOTE_ADDR="198.51.100.9")
        for _ in range(3)
    ]
    assert [response.status_code for response in responses] == [401, 401, 429]
    assert error_of(responses[2])[2] == "enrollment_rate_limited"


def test_the_window_reopens_as_time_passes(settings):
    settings.ENROLLMENT_RATE_LIMIT_MAX = 2
    settings.ENROLLMENT_RATE_LIMIT_WINDOW = 10_000
    now = [100.0]
    limiter = LocalRateLimiter(clock=lambda: now[0])
    enforce = async_to_sync(enforce_enrollment_limit)

    enforce("bootstrap", "192.0.2.1", limiter)
    enforce("bootstrap", "192.0.2.1", limiter)
    with pytest.raises(EnrollmentRateLimited) as limited:
        enforce("bootstrap", "192.0.2.1", limiter)
    assert limited.value.response_headers()["retry-after"] == "10"

    now[0] += 20.0
    enforce("bootstrap", "192.0.2.1", limiter)
