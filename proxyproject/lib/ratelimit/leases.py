"""Leases on a shared limit: a busy process takes several requests' room from Redis in one script and
admits from it locally, so most of its requests make no round trip on admission.

At one connection the rate-limit script was the request's only Redis round trip before the upstream,
a fifth to a third of what the gateway added to a request's latency. A lease changes no limit: every
request a lease admits was counted in Redis before it was admitted, so all processes together never
admit more than the limit. What it changes, and how far (RATE_LIMIT_LEASE_MS, 200 ms by default):

- Room is counted when it is leased, at most one lease time before it is used, and never in an
  earlier window bucket than the one it is used in (a lease ends with its bucket).
- Room a process leased and has not used is unavailable to the others until that process asks
  again, when it hands the rest back in the same script. A process that stops sending for a key
  leaves what it held counted until the window passes: at most 1/64 of the limit (`MAX_SHARE`).
- `remaining` is exact when a lease is taken and counts down locally after that; other processes'
  requests meanwhile show on the next lease.

Only decisions of one check costing one unit are leased (requests per window). A decision with a
tokens-per-minute check, a cost, or a limit under 128 (whose share would be one request) takes the
exact path, one script per decision. A lease starts at one request and doubles while the previous one
is used up in time, halving when one lapses with room left, so a process that sends now and then
leases one request at a time: exact behaviour, one script per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from proxyproject.lib.ratelimit.base import Clock, LimitCheck, LimitDecision, decide
from proxyproject.lib.ratelimit.redis import LeaseGrant, RedisRateLimiter

MAX_SHARE = 64
"""A lease holds at most 1/MAX_SHARE of its limit."""

KEPT_LEASES = 4096
"""Past this many keys, lapsed leases are dropped when a new key arrives, at most once per lease
time: a fleet's devices would otherwise each leave one behind in every process, and a flood of new
keys (addresses polling enrollment) would otherwise pay a sweep each. What a dropped lease held
stays counted."""


@dataclass(slots=True)
class _Lease:
    limit: int
    window_ms: int
    units: int = 0
    expires: float = 0.0
    bucket: int = 0
    room_after: int = 0
    reset_at: float = 0.0
    size: int = 1
    fetching: asyncio.Task[LimitDecision | None] | None = None

    def fits(self, check: LimitCheck) -> bool:
        return self.limit == check.limit and self.window_ms == check.window_ms

    def take(self) -> LimitDecision:
        self.units -= 1
        return LimitDecision(True, self.limit, self.room_after + self.units, self.reset_at, 0.0)


class LeasingRateLimiter:
    """The Redis limiter with leases in front (see the module's docstring); `add` goes straight through."""

    def __init__(self, shared: RedisRateLimiter, clock: Clock | None = None, lease_ms: int | None = None) -> None:
        self.shared = shared
        self._clock = clock or time.monotonic
        self._lease_ms = lease_ms
        self._leases: dict[str, _Lease] = {}
        self._swept_at = -math.inf

    def _lease_seconds(self) -> float:
        return (settings.RATE_LIMIT_LEASE_MS if self._lease_ms is None else self._lease_ms) / 1000.0

    async def hit(self, checks: Sequence[LimitCheck]) -> list[LimitDecision]:
        if len(checks) != 1 or checks[0].cost != 1 or checks[0].limit < 2 * MAX_SHARE or self._lease_seconds() <= 0:
            return await self.shared.hit(checks)
        return [await self._hit_leased(checks[0])]

    async def add(self, key: str, window_ms: int, amount: int) -> None:
        await self.shared.add(key, window_ms, amount)

    async def _hit_leased(self, check: LimitCheck) -> LimitDecision:
        loop = asyncio.get_running_loop()
        while True:
            lease = self._leases.get(check.key)
            if lease is None or not lease.fits(check):
                if lease is None and len(self._leases) >= KEPT_LEASES:
                    self._drop_lapsed()
                lease = self._leases[check.key] = _replacing(lease, check)
            if lease.units > 0 and self._clock() < lease.expires:
                return lease.take()
            fetching = lease.fetching
            if fetching is None or fetching.done() or fetching.get_loop() is not loop:
                fetching = lease.fetching = loop.create_task(self._renew(check, lease))
                fetching.add_done_callback(_retrieve_failure)
            refused = await asyncio.shield(fetching)
            if refused is not None:
                return refused

    async def _renew(self, check: LimitCheck, lease: _Lease) -> LimitDecision | None:
        """Take a new lease, handing back what the lapsed one left; the refusal when there is no room."""
        now = self._clock()
        leftover = lease.units if lease.units > 0 else 0
        if leftover:
            lease.size = max(1, lease.size // 2)
        elif lease.expires and now < lease.expires:
            lease.size = min(lease.size * 2, check.limit // MAX_SHARE)
        returned_bucket, lease.units, lease.expires = lease.bucket, 0, 0.0
        grant: LeaseGrant = await self.shared.lease(check, lease.size, returned_bucket, leftover)
        reset_at_ms = grant.window_start_ms + check.window_ms
        if grant.granted == 0:
            lease.size = 1
            return decide(check.limit, check.window_ms, 1, grant.estimate, grant.window_start_ms, grant.previous, grant.now_ms)
        lease.units = grant.granted
        lease.bucket = grant.bucket
        lease.room_after = max(0, math.floor(check.limit - grant.estimate - grant.granted))
        lease.reset_at = reset_at_ms / 1000.0
        lease.expires = self._clock() + min(self._lease_seconds(), (reset_at_ms - grant.now_ms) / 1000.0)
        return None

    def _drop_lapsed(self) -> None:
        now = self._clock()
        if now - self._swept_at < self._lease_seconds():
            return
        self._swept_at = now
        for key, lease in list(self._leases.items()):
            if now >= lease.expires and (lease.fetching is None or lease.fetching.done()):
                del self._leases[key]

    def forget(self) -> None:
        self._leases.clear()


def _replacing(lease: _Lease | None, check: LimitCheck) -> _Lease:
    """A lease for `check`'s limit; one of the same window that the limit changed under keeps its
    room, lapsed, so the next script hands it back."""
    if lease is None:
        return _Lease(check.limit, check.window_ms)
    if lease.window_ms != check.window_ms:
        return _Lease(check.limit, check.window_ms, size=lease.size)
    return _Lease(check.limit, check.window_ms, units=lease.units, bucket=lease.bucket, size=lease.size)


def _retrieve_failure(fetching: asyncio.Task[LimitDecision | None]) -> None:
    """A renewal whose waiters all left still has its failure looked at (asyncio would log it)."""
    if not fetching.cancelled():
        fetching.exception()
