"""A device spreading a burst over two gateway processes that each hold a lease on its request limit
(`proxyproject.lib.ratelimit.leases`) gets no more than its limit: every request a lease admits was
counted in Redis first. Real gateway processes, real Redis (CI's second pass)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from proxyproject.lib.ratelimit import LeasingRateLimiter, LimitCheck, RedisRateLimiter
from tests.support import MESSAGE_BODY, enroll

pytestmark = pytest.mark.redis

LIMIT = 256  # a share of 4 requests per lease
# Six hours: a burst that crosses a window boundary may be admitted the previous bucket's decayed
# weight, which in a minute's window is a request for every 0.23 s past it (the sliding window's
# rule, leases or not); in six hours' it takes 84 s past the boundary to free one request.
WINDOW_MS = 6 * 3600 * 1000


def test_a_burst_over_two_leasing_gateways_is_admitted_up_to_the_limit_and_no_further(two_gateways):
    fake, first, second = two_gateways
    token = enroll(first, requests_per_window=LIMIT, window_ms=WINDOW_MS)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json", "anthropic-version": "2023-06-01"}

    def send(server_url: str) -> int:
        with httpx.Client(base_url=server_url, timeout=30) as client:
            return client.post("/v1/messages", content=MESSAGE_BODY, headers=headers).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(send, [first.url, second.url] * 200))
    admitted = statuses.count(200)
    assert set(statuses) == {200, 429}
    assert LIMIT - 2 * 4 <= admitted <= LIMIT
    assert len([seen for seen in fake.requests if seen.path == "/v1/messages"]) == admitted


async def test_a_flood_of_new_keys_pays_one_sweep_per_lease_time_not_one_per_key(redis_required, monkeypatch):
    """Enrollment limits are keyed by client address, before any credential: an address range can
    bring a new key per request. Past KEPT_LEASES keys each one used to scan every lease."""
    monkeypatch.setattr("proxyproject.lib.ratelimit.leases.KEPT_LEASES", 8)
    now = [1_200_000.0]
    limiter = LeasingRateLimiter(RedisRateLimiter(clock=lambda: now[0]), clock=lambda: now[0], lease_ms=200)
    scanned = []
    monkeypatch.setattr(limiter, "_leases", CountingDict(scanned))
    for _ in range(100):
        await limiter.hit([LimitCheck(f"test:flood:{uuid.uuid4().hex}", 1_000, 60_000)])
    assert len(scanned) == 1
    now[0] += 0.25
    await limiter.hit([LimitCheck(f"test:flood:{uuid.uuid4().hex}", 1_000, 60_000)])
    assert len(scanned) == 2
    assert len(limiter._leases) == 1  # every lapsed lease dropped by that sweep


class CountingDict(dict):
    """Notes each full scan of the leases."""

    def __init__(self, scans: list[int]) -> None:
        super().__init__()
        self.scans = scans

    def items(self):
        self.scans.append(len(self))
        return super().items()
