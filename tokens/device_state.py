"""What the hot path needs to know about a device (status, revocations, effective policy), without a
database query per request.

Three layers, each bounded in staleness:
1. this process's memory, for REVOCATION_CACHE_SECONDS;
2. with Redis, a snapshot per device shared by every process, validated by generation counters:
   every change to a device bumps its counter, every change to any organization bumps a global one,
   and a snapshot only counts when both match. A snapshot built from a database read that raced a
   change is never stored (the store is conditional on the counters read before the query), so a
   revocation cannot be overwritten by a stale copy;
3. the database, read when neither has a valid copy (without Redis: once per device per
   REVOCATION_CACHE_SECONDS per process).
So a revocation made anywhere is refused by every process within REVOCATION_CACHE_SECONDS plus one
round trip.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.utils import timezone

from proxyproject.lib.database import read_database
from proxyproject.lib.logging import log_event
from proxyproject.lib.process_state import register_process_state
from proxyproject.lib.redis import REDIS_ERRORS, get_async_redis, get_sync_redis, redis_key, slot_tag
from tokens.identity import DevicePolicy
from tokens.models import Device, DeviceStatus, IssuedToken, TokenKind
from tokens.policy import policy_from_json, policy_to_json, resolve_policy

logger = logging.getLogger("tokens.device_state")

# Snapshots are invalidated explicitly; the TTL only bounds how long a change can go unnoticed when
# its invalidation could not reach Redis, or was made outside the services (a shell, raw SQL).
SNAPSHOT_TTL_SECONDS = 120
GENERATION_TTL_SECONDS = 2 * 24 * 3600


@dataclass(frozen=True, slots=True)
class DeviceState:
    device_pk: int
    device_id: str
    org_id: int | None
    status: str
    revoked_before: float | None
    revoked_jtis: frozenset[str]
    policy: DevicePolicy
    person_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "device_pk": self.device_pk,
            "device_id": self.device_id,
            "org_id": self.org_id,
            "status": self.status,
            "revoked_before": self.revoked_before,
            "revoked_jtis": sorted(self.revoked_jtis),
            "policy": policy_to_json(self.policy),
            "person_id": self.person_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceState:
        return cls(
            device_pk=data["device_pk"],
            device_id=data["device_id"],
            org_id=data["org_id"],
            status=data["status"],
            revoked_before=data["revoked_before"],
            revoked_jtis=frozenset(data["revoked_jtis"]),
            policy=policy_from_json(data["policy"]),
            person_id=data.get("person_id"),
        )

    @property
    def active(self) -> bool:
        return self.status == DeviceStatus.ACTIVE


def _latest_timestamp(*values: dt.datetime | None) -> float | None:
    present = [value.timestamp() for value in values if value is not None]
    return max(present) if present else None


def load_device_state(device_id: str) -> DeviceState | None:
    """From the database: the device with its organization and person, and its revoked, unexpired
    access tokens."""
    device = Device.objects.select_related("organization", "person").filter(device_id=device_id).first()
    if device is None:
        return None
    organization = device.organization
    revoked_jtis = IssuedToken.objects.filter(
        device=device, kind=TokenKind.ACCESS, revoked_at__isnull=False, expires_at__gt=timezone.now()
    ).values_list("jti", flat=True)
    return DeviceState(
        device_pk=device.pk,
        device_id=device.device_id,
        org_id=device.organization_id,
        status=device.status,
        revoked_before=_latest_timestamp(
            device.tokens_revoked_before, organization.tokens_revoked_before if organization else None
        ),
        revoked_jtis=frozenset(revoked_jtis),
        policy=resolve_policy(device, organization, device.person),
        person_id=device.person_id,
    )


def _snapshot_key(device_id: str) -> str:
    return redis_key("tokens", slot_tag("device", device_id), "snapshot")


def _generation_key(device_id: str) -> str:
    """In the snapshot's slot: the conditional store reads it in the same script."""
    return redis_key("tokens", slot_tag("device", device_id), "gen")


def _org_generation_key() -> str:
    return redis_key("tokens", "orgs-gen")


# KEYS: snapshot, device generation. ARGV: snapshot, device gen, ttl. The organizations' generation
# lives in another slot, so the script cannot read it: a snapshot stored after an organization changed
# carries the generation it was built under and is refused when read, which is all the check bought.
_STORE_IF_CURRENT = """
local device_gen = redis.call('GET', KEYS[2]) or '0'
if device_gen == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""


class DeviceStateCache:
    """This process's copies: device_id -> (state, or None for "no such device"; when fetched).
    `clock` is injectable so tests can move time across REVOCATION_CACHE_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[DeviceState | None, float]] = {}

    def get(self, device_id: str) -> tuple[bool, DeviceState | None]:
        entry = self.entries.get(device_id)
        if entry is None or self.clock() - entry[1] >= settings.REVOCATION_CACHE_SECONDS:
            return False, None
        return True, entry[0]

    def put(self, device_id: str, state: DeviceState | None) -> None:
        self.entries[device_id] = (state, self.clock())


device_state_cache = DeviceStateCache()
_inflight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[DeviceState | None]]] = (
    weakref.WeakKeyDictionary()
)


async def _fetch_shared(device_id: str) -> DeviceState | None:
    client = get_async_redis()
    if client is None:
        return await read_database(load_device_state, device_id)
    try:
        # One round trip on a single Redis; on a cluster the pipeline asks the two slots' nodes at once.
        # The snapshot is read before its generation, so a change between the two reads makes them
        # disagree (a database read) rather than let a stale snapshot pass.
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(_snapshot_key(device_id))
            pipe.get(_generation_key(device_id))
            pipe.get(_org_generation_key())
            raw, device_gen, orgs_gen = await pipe.execute()
    except REDIS_ERRORS as exc:
        # Availability over sharing: the database is the authority, so answer from it.
        log_event(
            logger, "Device state: Redis unavailable, reading the database", logging.WARNING, device_id=device_id, error=str(exc)
        )
        return await read_database(load_device_state, device_id)
    device_gen = (device_gen or b"0").decode()
    orgs_gen = (orgs_gen or b"0").decode()
    if raw is not None:
        snapshot = orjson.loads(raw)
        if snapshot["gen"] == device_gen and snapshot["orgs_gen"] == orgs_gen:
            return None if snapshot["state"] is None else DeviceState.from_json(snapshot["state"])
    state = await read_database(load_device_state, device_id)
    payload = orjson.dumps({"gen": device_gen, "orgs_gen": orgs_gen, "state": state.as_json() if state else None})
    try:
        await client.eval(
            _STORE_IF_CURRENT, 2, _snapshot_key(device_id), _generation_key(device_id), payload, device_gen, SNAPSHOT_TTL_SECONDS
        )
    except REDIS_ERRORS as exc:
        log_event(logger, "Device state: snapshot not shared", logging.WARNING, device_id=device_id, error=str(exc))
    return state


async def get_device_state(device_id: str) -> DeviceState | None:
    """The device's current state, or None when no such device exists. Concurrent callers for one
    device share one fetch, so a cache expiry under load costs one round trip, not one per request."""
    hit, state = device_state_cache.get(device_id)
    if hit:
        return state
    loop = asyncio.get_running_loop()
    pending = _inflight.setdefault(loop, {})
    future = pending.get(device_id)
    if future is not None:
        return await asyncio.shield(future)
    future = loop.create_future()
    pending[device_id] = future
    try:
        state = await _fetch_shared(device_id)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()
        raise
    else:
        future.set_result(state)
        device_state_cache.put(device_id, state)
        return state
    finally:
        pending.pop(device_id, None)


def invalidate_devices(device_ids: list[str]) -> None:
    """Call after the change is committed: every process re-reads these devices within
    REVOCATION_CACHE_SECONDS, this one at once."""
    for device_id in device_ids:
        device_state_cache.entries.pop(device_id, None)
    client = get_sync_redis()
    if client is None or not device_ids:
        return
    try:
        with client.pipeline(transaction=False) as pipe:
            for device_id in device_ids:
                pipe.incr(_generation_key(device_id))
                pipe.expire(_generation_key(device_id), GENERATION_TTL_SECONDS)
            pipe.execute()
    except REDIS_ERRORS as exc:
        # The change is committed; shared snapshots now age out within SNAPSHOT_TTL_SECONDS instead.
        log_event(logger, "Device state: invalidation not shared", logging.ERROR, devices=len(device_ids), error=str(exc))


def forget_device_states() -> None:
    """Drop this process's copies only (test isolation, where the database is rolled back under it)."""
    device_state_cache.entries.clear()


register_process_state("device states", forget_device_states)


def invalidate_all_devices() -> None:
    """After an organization changes: organizations are few and change rarely, so one global
    counter is simpler than tracking which devices belong to which organization in Redis."""
    device_state_cache.entries.clear()
    client = get_sync_redis()
    if client is None:
        return
    try:
        client.incr(_org_generation_key())
    except REDIS_ERRORS as exc:
        log_event(logger, "Device state: invalidation not shared", logging.ERROR, devices="all", error=str(exc))
