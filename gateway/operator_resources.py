"""The batches and files devices created through the gateway, as operators see them.

Devices see only their own resources on /v1 (`gateway.ownership`); an operator sees those of the
organization its key is scoped to, or every device's with a platform key or staff session. The
list comes from the ownership table (who created what, when, whether a batch's spend is still
reserved); one resource's current state comes from the upstream, fetched with the master key only
after the ownership row shows it is in the operator's scope. Outside the scope a resource is a 404
worded as for a device, so a scoped key cannot tell another organization's resource from none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from gateway.models import OwnedResource, OwnedResourceKind
from gateway.owned_lists import MAX_LIMIT, UpstreamItemFetcher
from gateway.ownership import not_found_for
from proxyproject.lib.errors import InvalidRequest
from tokens.operators import Operator

DEFAULT_OPERATOR_LIMIT = 100
_DEFAULT_API_VERSION = (b"anthropic-version", b"2023-06-01")


@dataclass(frozen=True, slots=True)
class ResourceQuery:
    kind: str | None = None
    device: str | None = None
    limit: int = DEFAULT_OPERATOR_LIMIT
    after_id: str | None = None


def _in_scope(operator: Operator) -> QuerySet[OwnedResource]:
    rows = OwnedResource.objects.select_related("device")
    return rows if operator.org_id is None else rows.filter(organization_id=operator.org_id)


def _describe(row: OwnedResource) -> dict[str, Any]:
    return {
        "id": row.resource_id,
        "kind": row.kind,
        "device": row.device.device_id,
        "organization": row.organization_id,
        "created_at": row.created_at,
        "spend_reserved": row.reservation is not None and row.settled_at is None,
        "settled_at": row.settled_at,
    }


def list_operator_resources(operator: Operator, query: ResourceQuery) -> dict[str, Any]:
    """Newest first, in the API's list shape; `after_id` must be a resource in the operator's scope."""
    if query.kind is not None and query.kind not in OwnedResourceKind.values:
        raise InvalidRequest(f"kind: one of {', '.join(OwnedResourceKind.values)}")
    if not 1 <= query.limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit: Input should be an integer between 1 and {MAX_LIMIT}")
    rows = _in_scope(operator)
    if query.kind is not None:
        rows = rows.filter(kind=query.kind)
    if query.device is not None:
        rows = rows.filter(device__device_id__iexact=query.device)
    if query.after_id is not None:
        cursor = rows.filter(resource_id=query.after_id).values_list("pk", flat=True).first()
        if cursor is None:
            raise InvalidRequest(f"after_id: no item with id {query.after_id!r}")
        rows = rows.filter(pk__lt=cursor)
    found = list(rows.order_by("-pk")[: query.limit + 1])
    page = [_describe(row) for row in found[: query.limit]]
    return {
        "data": page,
        "has_more": len(found) > query.limit,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


def find_operator_resource(operator: Operator, kind: str, resource_id: str) -> dict[str, Any]:
    """The ownership row of a resource in scope; ResourceNotFound (404) for anything else."""
    row = _in_scope(operator).filter(kind=kind, resource_id=resource_id).first()
    if row is None:
        raise not_found_for(kind, resource_id)
    return _describe(row)


def upstream_headers_for(operator_headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Only the operator's `anthropic-*` headers (version, beta flags) go upstream, never its
    credential or cookies; a missing version gets the default."""
    headers = [(name, value) for name, value in operator_headers if name.lower().startswith(b"anthropic-")]
    if not any(name.lower() == b"anthropic-version" for name, _ in headers):
        headers.append(_DEFAULT_API_VERSION)
    return headers


async def fetch_operator_resource(described: dict[str, Any], operator_headers: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The resource's current state upstream beside its ownership; `upstream` is None once the
    upstream no longer has it. Raises UpstreamItemRefused for any other upstream answer."""
    fetcher = UpstreamItemFetcher(upstream_headers_for(operator_headers))
    return {**described, "upstream": await fetcher.fetch(described["kind"], described["id"])}
