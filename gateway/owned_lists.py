"""GET /v1/messages/batches and GET /v1/files, answered with the caller's own resources only.

The page is decided from the ownership table, never from the upstream's list: the upstream lists
every device's resources, and filtering its pages would cost a scan of the whole organization's
history for a device that owns few, with cursors that are not the device's. Here the device's rows
are taken newest first (creation order, as the API lists them) from the cursor on, and each is
fetched from the upstream by id (at most FETCH_CONCURRENCY at once) so its state is current.

Pagination follows the API: `limit` (1 to 1000, default 20), `after_id` (older than that item) or
`before_id` (newer than it, the `limit` nearest), `has_more` (another item lies beyond the page in
the direction read), `first_id`/`last_id`. A cursor must be one of the caller's own resources, else
400 as the API answers an unknown cursor. A resource the upstream answers 404 for (expired, deleted
around the gateway) loses its row and the page is filled from the next rows, so pages stay full and
`has_more` stays true to what a next page would hold: one more item than the page is fetched to
know it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
from asgiref.sync import sync_to_async

from gateway.headers import upstream_request_headers
from gateway.keypool import choose_upstream_key, report_upstream_result
from gateway.models import OwnedResource, OwnedResourceKind
from gateway.ownership import forget_resources
from gateway.upstream import build_upstream_request, gateway_error_for, send_upstream
from proxyproject.lib.errors import InvalidRequest
from tokens.identity import DeviceIdentity

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
FETCH_CONCURRENCY = 8
_ITEM_PATHS = {OwnedResourceKind.MESSAGE_BATCH.value: "/v1/messages/batches/", OwnedResourceKind.FILE.value: "/v1/files/"}


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    after_id: str | None
    before_id: str | None


class UpstreamItemRefused(Exception):
    """The upstream answered an item fetch with neither the item nor 404: the list answers as it did."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(status)
        self.status, self.headers, self.body = status, headers, body


def parse_page_request(query: bytes) -> PageRequest:
    """Raises InvalidRequest (400) for a limit out of range or both cursors at once."""
    values = {name: found[-1] for name, found in parse_qs(query.decode("latin-1")).items()}
    raw_limit = values.get("limit")
    if raw_limit is None:
        limit = DEFAULT_LIMIT
    elif raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT:
        limit = int(raw_limit)
    else:
        raise InvalidRequest(f"limit: Input should be an integer between 1 and {MAX_LIMIT}")
    after_id, before_id = values.get("after_id"), values.get("before_id")
    if after_id is not None and before_id is not None:
        raise InvalidRequest("Cannot specify both after_id and before_id")
    return PageRequest(limit, after_id, before_id)


def _cursor_pk(device_pk: int, kind: str, resource_id: str) -> int | None:
    rows = OwnedResource.objects.filter(device_id=device_pk, kind=kind, resource_id=resource_id)
    return rows.values_list("pk", flat=True).first()


def _rows_from(device_pk: int, kind: str, from_pk: int | None, newer: bool, count: int) -> list[tuple[int, str]]:
    """The device's next `count` rows past `from_pk`: older ones newest first, or newer ones nearest first."""
    rows = OwnedResource.objects.filter(device_id=device_pk, kind=kind)
    if from_pk is not None:
        rows = rows.filter(pk__gt=from_pk) if newer else rows.filter(pk__lt=from_pk)
    rows = rows.order_by("pk" if newer else "-pk")
    return list(rows.values_list("pk", "resource_id")[:count])


class UpstreamItemFetcher:
    """GET one resource from the upstream with the client's own headers (anthropic-version, beta flags)."""

    def __init__(self, client_headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.client_headers = client_headers
        self.slots = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def fetch(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        """The item, or None when the upstream no longer has it."""
        async with self.slots:
            credential = await choose_upstream_key()
            path = _ITEM_PATHS[kind] + resource_id
            request = build_upstream_request("GET", path, b"", upstream_request_headers(self.client_headers, credential), b"")
            try:
                response = await send_upstream(request)
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                raise gateway_error_for(exc) from exc
            report_upstream_result(credential, status=response.status_code, retry_after=response.headers.get("retry-after"))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise UpstreamItemRefused(response.status_code, list(response.headers.raw), body)
        item: dict[str, Any] = orjson.loads(body)
        return item


async def list_owned(identity: DeviceIdentity, kind: str, page: PageRequest, fetcher: UpstreamItemFetcher) -> dict[str, Any]:
    """One page of the caller's resources of `kind`, in the API's list shape."""
    newer = page.before_id is not None
    cursor = page.before_id or page.after_id
    from_pk = None
    if cursor is not None:
        from_pk = await sync_to_async(_cursor_pk)(identity.device_pk, kind, cursor)
        if from_pk is None:
            raise InvalidRequest(f"{'before_id' if newer else 'after_id'}: no item with id {cursor!r}")
    found: list[dict[str, Any]] = []
    gone: list[str] = []
    try:
        while len(found) <= page.limit:
            rows = await sync_to_async(_rows_from)(identity.device_pk, kind, from_pk, newer, page.limit + 1 - len(found))
            if not rows:
                break
            items = await asyncio.gather(*(fetcher.fetch(kind, resource_id) for _, resource_id in rows))
            for (_, resource_id), item in zip(rows, items):
                if item is None:
                    gone.append(resource_id)
                else:
                    found.append(item)
            from_pk = rows[-1][0]
    finally:
        await forget_resources(kind, gone)
    window = found[: page.limit]
    if newer:
        window.reverse()
    return {
        "data": window,
        "has_more": len(found) > page.limit,
        "first_id": window[0]["id"] if window else None,
        "last_id": window[-1]["id"] if window else None,
    }
