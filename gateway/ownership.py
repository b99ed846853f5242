"""Which device owns which message batch and file, and the 404 for everyone else.

Every device reaches the upstream with the same master keys, so the upstream sees one organization
and would show any device every batch and file. The gateway records the creator of each resource it
sees created (`OwnedResource`, in the database: it outlives restarts and every instance reads the
same rows) and answers a device that names a resource it does not own exactly as if it did not
exist: 404 `not_found_error`, with nothing sent upstream. A resource without a row (created before
this table existed, or around the gateway) belongs to no device.

The check runs only on the routes that name a resource (the route table's owned-resource
entries, `owned_path_for`), never on /v1/messages, and a positive answer is kept in process for OWNERSHIP_CACHE_SECONDS: a device
polling its batch costs one query per interval. Only "owned" is cached: a resource created on
another instance is found at once, and one deleted elsewhere is at worst forwarded and refused by
the upstream itself.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError
from django.utils import timezone

from gateway.models import OwnedResource, OwnedResourceKind
from gateway.routes import ResourceKind, Route, RoutePolicy
from proxyproject.lib.errors import NotFound
from tokens.identity import DeviceIdentity

OWNERSHIP_CACHE_SECONDS = 30.0
_CACHE_LIMIT = 10_000

_KIND_OF_ROUTE = {ResourceKind.BATCH: OwnedResourceKind.MESSAGE_BATCH.value, ResourceKind.FILE: OwnedResourceKind.FILE.value}
# For routes outside the table (forwarded only when an operator allows it): a collection, or one
# resource with anything under it (`/v1/files/{id}/anything`) names the resource all the same and
# is checked like the rest.
_OWNED_PATHS = (
    (re.compile(r"/v1/messages/batches(?:/(?P<id>[^/]+)(?P<rest>/.*)?)?/?"), OwnedResourceKind.MESSAGE_BATCH),
    (re.compile(r"/v1/files(?:/(?P<id>[^/]+)(?P<rest>/.*)?)?/?"), OwnedResourceKind.FILE),
)


class ResourceNotFound(NotFound):
    """Not the caller's: worded as the upstream words a missing resource, so the two cannot be told apart."""

    error_code = "resource_not_found"


@dataclass(frozen=True, slots=True)
class OwnedPath:
    """A /v1 path under an owned kind: the collection (resource_id None) or one resource."""

    kind: str
    resource_id: str | None
    rest: str  # what follows the id: "", "/results", "/cancel", "/content"


def owned_path_for(route: Route, path: str) -> OwnedPath | None:
    """What a request names of the owned kinds: from the route table's entry, or for a route
    outside the table, from its path; None for anything else."""
    spec = route.spec
    if spec.resource_kind is not None:
        rest = spec.pattern.partition("{id}")[2] if route.resource_id is not None else ""
        return OwnedPath(_KIND_OF_ROUTE[spec.resource_kind], route.resource_id, rest)
    if spec.policy is RoutePolicy.UNKNOWN_FORWARDED:
        return owned_resource_path(path)
    return None


def owned_resource_path(path: str) -> OwnedPath | None:
    """The owned kind and id a path outside the route table names, or None."""
    for pattern, kind in _OWNED_PATHS:
        match = pattern.fullmatch(path)
        if match is not None:
            return OwnedPath(kind.value, match.group("id"), match.group("rest") or "")
    return None


def not_found_for(kind: str, resource_id: str) -> ResourceNotFound:
    if kind == OwnedResourceKind.FILE:
        return ResourceNotFound(f"File not found: {resource_id}")
    return ResourceNotFound(f"{kind} {resource_id} not found")


class _OwnedCache:
    """(device, kind, id) pairs known to be owned, each until its deadline."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, str, str], float] = {}

    def known(self, key: tuple[int, str, str]) -> bool:
        deadline = self.entries.get(key)
        return deadline is not None and deadline > time.monotonic()

    def remember(self, key: tuple[int, str, str]) -> None:
        if len(self.entries) >= _CACHE_LIMIT:
            self.entries.clear()
        self.entries[key] = time.monotonic() + OWNERSHIP_CACHE_SECONDS

    def forget(self, kind: str, resource_id: str) -> None:
        for key in [key for key in self.entries if key[1] == kind and key[2] == resource_id]:
            del self.entries[key]


owned_cache = _OwnedCache()


def _owns(device_pk: int, kind: str, resource_id: str) -> bool:
    return OwnedResource.objects.filter(device_id=device_pk, kind=kind, resource_id=resource_id).exists()


async def check_resource_access(identity: DeviceIdentity, kind: str, resource_id: str) -> None:
    """Raises ResourceNotFound (404) unless the device created this resource through the gateway."""
    key = (identity.device_pk, kind, resource_id)
    if owned_cache.known(key):
        return
    if not await sync_to_async(_owns)(identity.device_pk, kind, resource_id):
        raise not_found_for(kind, resource_id)
    owned_cache.remember(key)


def _record(
    device_pk: int,
    org_id: int | None,
    kind: str,
    resource_id: str,
    reservation: dict[str, Any] | None,
    created_at: dt.datetime | None,
) -> None:
    try:
        OwnedResource.objects.create(
            device_id=device_pk,
            organization_id=org_id,
            kind=kind,
            resource_id=resource_id,
            reservation=reservation,
            created_at=created_at or timezone.now(),
        )
    except IntegrityError:
        # The upstream never reuses an id; a second row for one would be a second owner.
        pass


async def record_resource_owner(
    identity: DeviceIdentity,
    kind: str,
    resource_id: str,
    *,
    reservation: dict[str, Any] | None = None,
    created_at: dt.datetime | None = None,
) -> None:
    """The device created this resource: from now on it is the device's alone. `created_at` is the
    upstream's own creation time when its answer names one (a batch is priced at it)."""
    await sync_to_async(_record)(identity.device_pk, identity.org_id, kind, resource_id, reservation, created_at)
    owned_cache.remember((identity.device_pk, kind, resource_id))


def _created_at(kind: str, resource_id: str) -> dt.datetime | None:
    rows = OwnedResource.objects.filter(kind=kind, resource_id=resource_id)
    return rows.values_list("created_at", flat=True).first()


async def resource_created_at(kind: str, resource_id: str) -> dt.datetime | None:
    """When an owned resource was created (one query; asked only when a batch's results are fetched)."""
    return await sync_to_async(_created_at)(kind, resource_id)


def _forget(kind: str, resource_ids: list[str]) -> None:
    OwnedResource.objects.filter(kind=kind, resource_id__in=resource_ids).delete()


async def forget_resources(kind: str, resource_ids: list[str]) -> None:
    """The resources are gone upstream (deleted, or answered 404): their rows go too."""
    if not resource_ids:
        return
    await sync_to_async(_forget)(kind, resource_ids)
    for resource_id in resource_ids:
        owned_cache.forget(kind, resource_id)
