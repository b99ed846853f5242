"""GET /admin/circuit-breaker and POST /admin/circuit-breaker/reset (operator credential),
GET /admin/resources (the batches and files devices created, in the operator's scope), and
GET /metrics (Prometheus).

The /v1/* proxy itself is not a ninja route: it is mounted in front of Django (gateway/asgi.py).
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router, Schema
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import platform_metrics  # noqa: F401  (registers the scrape-time gauges)
from gateway.breaker import BreakerSnapshot, get_circuit_breaker
from gateway.metrics import render_metrics
from gateway.models import OwnedResourceKind
from gateway.operator_resources import (
    DEFAULT_OPERATOR_LIMIT,
    ResourceQuery,
    fetch_operator_resource,
    find_operator_resource,
    list_operator_resources,
)
from gateway.owned_lists import UpstreamItemRefused
from proxyproject.lib.backends import shared_state_backend
from tokens.operators import authenticate_operator, authenticate_operator_change, authenticate_scoped_operator

router = Router(tags=["gateway"])


def _timestamp(epoch_seconds: float) -> str | None:
    if not epoch_seconds:
        return None
    moment = dt.datetime.fromtimestamp(epoch_seconds, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def breaker_body(snapshot: BreakerSnapshot) -> dict[str, Any]:
    config = get_circuit_breaker().config
    return {
        "state": snapshot.state.value,
        "consecutive_failures": snapshot.failures,
        "half_open_successes": snapshot.successes,
        "opened_at": _timestamp(snapshot.opened_at),
        "last_change_at": _timestamp(snapshot.changed_at),
        "retry_after_seconds": round(snapshot.retry_after(time.time(), config), 3),
        "times_opened": snapshot.opens,
        "failure_threshold": config.failure_threshold,
        "reset_timeout_seconds": config.reset_timeout,
        "success_threshold": config.success_threshold,
        "min_devices": config.min_devices,
        "failing_devices": len(snapshot.devices),
        "shared": shared_state_backend() == "redis",
    }


def _json(body: dict[str, Any]) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), content_type="application/json")
    response["cache-control"] = "no-store"
    return response


async def current_breaker_body() -> dict[str, Any]:
    """What the admin dashboard shows of the breaker (registered with `usage.dashboard`)."""
    return breaker_body(await get_circuit_breaker().snapshot())


@router.get("/admin/circuit-breaker", auth=None, summary="Circuit breaker state, counts and last change")
async def circuit_breaker_state(request: HttpRequest) -> HttpResponse:
    await authenticate_operator(request)
    return _json(await current_breaker_body())


@router.post("/admin/circuit-breaker/reset", auth=None, summary="Close the circuit breaker now")
async def reset_circuit_breaker(request: HttpRequest) -> HttpResponse:
    actor = await authenticate_operator_change(request)
    return _json(breaker_body(await get_circuit_breaker().reset(actor=actor)))


async def authenticate_scrape(request: HttpRequest) -> str:
    """A scraper may present METRICS_TOKEN; anyone else needs an operator credential."""
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    if settings.METRICS_TOKEN and scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), settings.METRICS_TOKEN):
        return "metrics-token"
    return await authenticate_operator(request)


@router.get("/metrics", auth=None, summary="Prometheus metrics (METRICS_TOKEN, operator API key or staff session)")
async def metrics(request: HttpRequest) -> HttpResponse:
    await authenticate_scrape(request)
    body = await sync_to_async(render_metrics, thread_sensitive=True)()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


class ResourceListQuery(Schema):
    kind: OwnedResourceKind | None = Field(None, description="message_batch or file; both when absent.")
    device: str | None = Field(None, description="Only this device's resources.")
    limit: int = Field(DEFAULT_OPERATOR_LIMIT, description="1 to 1000.")
    after_id: str | None = Field(None, description="The page after this resource (newest first).")


@router.get("/admin/resources", auth=None, summary="Batches and files created through the gateway, in the operator's scope")
async def operator_resources(request: HttpRequest, query: Query[ResourceListQuery]) -> HttpResponse:
    operator = await authenticate_scoped_operator(request)
    wanted = ResourceQuery(kind=query.kind, device=query.device, limit=query.limit, after_id=query.after_id)
    return _json(await sync_to_async(list_operator_resources)(operator, wanted))


@router.get("/admin/resources/{kind}/{resource_id}", auth=None, summary="One batch or file: its owner and its upstream state")
async def operator_resource(request: HttpRequest, kind: OwnedResourceKind, resource_id: str) -> HttpResponse:
    operator = await authenticate_scoped_operator(request)
    described = await sync_to_async(find_operator_resource)(operator, kind, resource_id)
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in request.headers.items()]
    try:
        return _json(await fetch_operator_resource(described, headers))
    except UpstreamItemRefused as refused:
        return HttpResponse(refused.body, status=refused.status, content_type="application/json")
