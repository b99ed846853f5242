"""The proxy's steps for batches and files, the resources a device owns (`gateway.ownership`).

Called from `gateway.proxy` at three points of a /v1 request whose route names a batch
or a file (`owned_path_for`): before anything is forwarded (a resource that is not the caller's is refused), instead
of forwarding (a list is answered from the caller's own resources), and once the upstream answered
(a created resource is recorded before the client learns its id; a deleted one forgotten; a
batch's spend released on cancel or settled from its results).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import orjson

from gateway.batch_spend import batch_cost, release_batch_spend, reservation_to_json, settle_batch_spend
from gateway.batch_usage import BatchResultsReader
from gateway.batches import rewrite_results_urls
from gateway.headers import client_response_headers
from gateway.models import OwnedResourceKind
from gateway.owned_lists import UpstreamItemFetcher, UpstreamItemRefused, list_owned, parse_page_request
from gateway.ownership import (
    OwnedPath,
    check_resource_access,
    forget_resources,
    record_resource_owner,
    resource_created_at,
)
from gateway.upstream import gateway_error_for
from proxyproject.lib.logging import log_event
from tokens.identity import DeviceIdentity

if TYPE_CHECKING:
    from gateway.proxy import ProxiedRequest

logger = logging.getLogger("gateway.owned_exchange")
_JSON = [(b"content-type", b"application/json")]


def is_list(method: str, owned: OwnedPath) -> bool:
    return method == "GET" and owned.resource_id is None


async def check_owned_access(owned: OwnedPath, identity: DeviceIdentity) -> None:
    """Before forwarding: a request naming a resource the caller does not own is a 404."""
    if owned.resource_id is not None:
        await check_resource_access(identity, owned.kind, owned.resource_id)


async def answer_owned_list(proxied: ProxiedRequest, owned: OwnedPath, identity: DeviceIdentity) -> int:
    """GET of a collection: the caller's own resources, each fetched from the upstream by id.
    Returns the status the client got."""
    page = parse_page_request(proxied.query)
    grant_headers = proxied.grant.rate_limit_headers if proxied.grant else ()
    try:
        listed = await list_owned(identity, owned.kind, page, UpstreamItemFetcher(proxied.headers))
    except UpstreamItemRefused as refused:
        headers = client_response_headers(
            refused.headers, rate_limit_headers=grant_headers, gateway_request_id=proxied.request_id, content_length=None
        )
        await proxied.client.send_whole(refused.status, headers, refused.body)
        return refused.status
    body = orjson.dumps(listed)
    if owned.kind == OwnedResourceKind.MESSAGE_BATCH:
        body = rewrite_results_urls(body)
    headers = client_response_headers(
        _JSON, rate_limit_headers=grant_headers, gateway_request_id=proxied.request_id, content_length=None
    )
    await proxied.client.send_whole(200, headers, body)
    return 200


def created_id_and_time(body: bytes) -> tuple[str | None, dt.datetime | None]:
    """The created resource's id, and its `created_at` (RFC 3339) when the answer names one."""
    try:
        created = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(created, dict):
        return None, None
    resource_id = created.get("id")
    return (resource_id if isinstance(resource_id, str) and resource_id else None), _moment(created.get("created_at"))


def _moment(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


async def batch_results_priced_at(method: str, owned: OwnedPath) -> dt.datetime | None:
    """A batch's results are priced at the rates in force when the batch was created."""
    if method != "GET" or owned.kind != OwnedResourceKind.MESSAGE_BATCH or owned.resource_id is None:
        return None
    if owned.rest.rstrip("/") != "/results":
        return None
    return await resource_created_at(owned.kind, owned.resource_id)


def creates_resource(method: str, owned: OwnedPath, status: int) -> bool:
    return method == "POST" and owned.resource_id is None and status == 200


@dataclass(frozen=True, slots=True)
class CreatedResource:
    body: bytes  # the upstream's answer, as the client is to get it
    reservation_handed_over: bool  # a batch holds the request's spend reservation from now on


async def record_created(
    proxied: ProxiedRequest, owned: OwnedPath, identity: DeviceIdentity, response: httpx.Response
) -> CreatedResource:
    """A create the upstream accepted: the caller is recorded as owner (with a batch's spend
    reservation, which from now on belongs to the batch) before the answer carries the id out
    (`send_created`)."""
    try:
        body = await response.aread()
    except httpx.TransportError as exc:
        raise gateway_error_for(exc) from exc
    reservation = proxied.grant.reservation if proxied.grant is not None else None
    handed_over = False
    resource_id, created_at = created_id_and_time(body)
    if resource_id is None:
        log_event(
            logger,
            "Created resource has no id; it belongs to no device",
            logging.WARNING,
            requestId=proxied.request_id,
            kind=owned.kind,
        )
    else:
        stored = reservation_to_json(reservation) if reservation is not None else None
        await record_resource_owner(identity, owned.kind, resource_id, reservation=stored, created_at=created_at)
        handed_over = reservation is not None
    if owned.kind == OwnedResourceKind.MESSAGE_BATCH:
        body = rewrite_results_urls(body)
    return CreatedResource(body, handed_over)


async def send_created(proxied: ProxiedRequest, response: httpx.Response, created: CreatedResource) -> None:
    grant = proxied.grant
    headers = client_response_headers(
        response.headers.raw,
        rate_limit_headers=grant.rate_limit_headers if grant else (),
        gateway_request_id=proxied.request_id,
        content_length=None,
    )
    await proxied.client.send_whole(200, headers, created.body)


async def after_owned_response(owned: OwnedPath, *, method: str, status: int, batch_results: BatchResultsReader | None) -> None:
    """What a successful action on one resource changes on our side."""
    if owned.resource_id is None or status != 200:
        return
    if method == "DELETE" and owned.rest in ("", "/"):
        await forget_resources(owned.kind, [owned.resource_id])
    elif owned.kind != OwnedResourceKind.MESSAGE_BATCH:
        return
    elif method == "POST" and owned.rest == "/cancel":
        await release_batch_spend(owned.resource_id)
    elif batch_results is not None and batch_results.complete:
        await settle_batch_spend(owned.resource_id, batch_cost(batch_results.events))
