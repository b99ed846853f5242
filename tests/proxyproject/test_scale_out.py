"""Two gateway instances on one PostgreSQL and one Redis behave as one gateway: one rate limit, one
breaker, revocation seen everywhere within 5 s, and each request's usage stored exactly once."""

from __future__ import annotations

import re
import time

import httpx
import jwt
from django.contrib.auth import get_user_model

from tests.gateway.test_shared_state import post_message
from tests.support import enroll
from usage.models import UsageRecord


def device_of(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["sub"]


def wait_for(condition, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


def test_the_101st_request_is_refused_whichever_instance_gets_it_and_usage_lands_once(two_gateways):
    fake, first, second = two_gateways
    # The seed's 100 requests, over an hour rather than a minute: the sliding window weighs the
    # previous bucket by the time left in it, so a run that straddles a bucket boundary would be let
    # a request or two more; with an hour-long window that is a thousand times less likely.
    token = enroll(first, requests_per_window=100, window_ms=3_600_000)
    answers = [post_message(first if i % 2 else second, token) for i in range(101)]
    assert [a.status_code for a in answers] == [200] * 100 + [429]
    assert answers[-1].json()["error"]["details"]["error_code"] == "device_rate_limited"
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert len(fake.requests) == 100
    request_ids = [a.headers["request-id"] for a in answers]
    assert len(set(request_ids)) == 101
    stored = UsageRecord.objects.filter(device_ref=device_of(token))
    assert wait_for(lambda: stored.count() >= 101, 15), "not every request's usage reached the database"
    # Proxied answers carry the upstream's request-id (kept with the record); refusals carry ours.
    seen_by_client = [upstream_id or own_id for own_id, upstream_id in stored.values_list("request_id", "upstream_request_id")]
    assert sorted(seen_by_client) == sorted(request_ids)
    assert sorted(stored.values_list("status", flat=True)) == [200] * 100 + [429]


def admin_session(server) -> httpx.Client:
    """A logged-in operator's browser session on one instance."""
    get_user_model().objects.create_superuser("scale-operator", password="scale-operator-password-1")
    client = httpx.Client(base_url=server.url, timeout=10)
    page = client.get("/admin/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    done = client.post(
        "/admin/login/?next=/admin/",
        data={
            "csrfmiddlewaretoken": csrf,
            "username": "scale-operator",
            "password": "scale-operator-password-1",
            "next": "/admin/",
        },
    )
    assert done.status_code == 302 and done.headers["location"] == "/admin/", done.text[:500]
    return client


def test_a_breaker_opened_and_a_revocation_made_through_one_instance_hold_on_the_other(two_gateways):
    fake, first, second = two_gateways
    token, other = enroll(first), enroll(first)  # the upstream's breaker opens on failures of two devices
    assert [
        post_message(first, device_token, **{"x-fake-fault": "529"}).status_code for device_token in (token, other) * 2 + (token,)
    ] == [529] * 5
    refused = wait_for(lambda: (a := post_message(second, token)).status_code == 503 and a, 5)
    assert refused and refused.json()["error"]["details"]["error_code"] == "circuit_open"
    httpx.post(first.url + "/admin/circuit-breaker/reset", timeout=10)  # no credential: refused, stays open
    assert post_message(second, token).status_code == 503

    operator = admin_session(first)
    reset = operator.post(
        "/admin/circuit-breaker/reset", headers={"x-csrftoken": operator.cookies["csrftoken"], "referer": first.url + "/admin/"}
    )
    assert reset.status_code == 200 and reset.json()["state"] == "closed"
    # Each process trusts the breaker state it last saw for CIRCUIT_BREAKER_CACHE_SECONDS (1 s).
    assert wait_for(lambda: post_message(second, token).status_code == 200, 5)

    from tokens.models import Device

    device = Device.objects.get(device_id=device_of(token))
    changelist = operator.get("/admin/tokens/device/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', changelist.text).group(1)
    revoked_at = time.monotonic()
    done = operator.post(
        "/admin/tokens/device/",
        data={"csrfmiddlewaretoken": csrf, "action": "revoke_tokens", "_selected_action": [device.pk], "index": 0},
    )
    assert done.status_code == 302
    answer = wait_for(lambda: (a := post_message(second, token)).status_code == 401 and a, 5)
    assert answer, "the other instance still accepted a revoked token after 5 s"
    assert time.monotonic() - revoked_at < 5
    assert answer.json()["error"]["details"]["error_code"] == "token_revoked"
    assert answer.headers["x-should-retry"] == "false"
