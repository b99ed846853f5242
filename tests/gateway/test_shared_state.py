"""Two gateway processes sharing Redis enforce one rate limit and one circuit breaker."""

from __future__ import annotations

import httpx

from tests.support import MESSAGE_BODY, enroll, poll_until


def post_message(server, token: str, **headers: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/messages",
        content=MESSAGE_BODY,
        timeout=10,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json", **headers},
    )


def test_requests_through_either_process_count_against_one_limit(two_gateways):
    fake, first, second = two_gateways
    token = enroll(first, requests_per_window=3, window_ms=3_600_000)  # no bucket boundary mid-test
    statuses = [post_message(server, token).status_code for server in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]
    assert len(fake.requests) == 3


def test_a_breaker_opened_through_one_process_refuses_on_the_other(two_gateways):
    fake, first, second = two_gateways
    token, other = enroll(first), enroll(first)  # the upstream's breaker opens on failures of two devices
    assert [
        post_message(first, device_token, **{"x-fake-fault": "500"}).status_code for device_token in (token, other) * 2 + (token,)
    ] == [500] * 5
    answer = poll_until(
        lambda: refused if (refused := post_message(second, token)).status_code != 200 else None,
        5,
        "the other process to refuse",
        interval=0.1,
    )
    assert answer.status_code == 503
    assert answer.json()["error"]["details"]["error_code"] == "circuit_open"
    upstream_calls = len(fake.requests)
    assert post_message(first, token).status_code == 503
    assert len(fake.requests) == upstream_calls
