"""Prometheus metrics: what every worker counts per request, and what is read at scrape time.

Per-request samples go to prometheus_client's multiprocess files (settings.METRICS_DIR), so a scrape
answered by any worker of an instance reports the whole instance. Platform state that lives in shared
stores (active tokens, refreshes in the last hour, breaker state, usage backlog) is read when scraped,
so it is the same whichever instance answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from proxyproject.lib.printable import escape_unprintable
from usage.counts import TOKEN_KINDS
from usage.events import UsageEvent

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

REQUESTS = Counter(
    "gateway_requests_total", "Proxied requests by endpoint, method, status and model.", ["endpoint", "method", "status", "model"]
)
ERRORS = Counter(
    "gateway_request_errors_total",
    "Requests that ended in an error, by endpoint, status and error type.",
    ["endpoint", "status", "error_type"],
)
LATENCY = Histogram(
    "gateway_request_duration_seconds", "Whole request time as the client sees it.", ["endpoint"], buckets=LATENCY_BUCKETS
)
TTFB = Histogram(
    "gateway_time_to_first_byte_seconds",
    "Time from request arrival to the first response byte.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_LATENCY = Histogram(
    "gateway_upstream_duration_seconds",
    "Time from sending upstream to the upstream's response headers.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter("gateway_tokens_total", "Tokens by model and kind.", ["model", "kind"])
SPEND = Counter("gateway_spend_usd_total", "Spend in USD by model (priced requests only).", ["model"])
UNPRICED = Counter("gateway_unpriced_requests_total", "Requests whose model has no price.", ["model"])
BREAKER_TRANSITIONS = Counter("gateway_circuit_breaker_transitions_total", "Circuit breaker state changes.", ["to_state"])
TOKEN_EVENTS = Counter("gateway_token_events_total", "Token issuance events: bootstrap, refresh, reuse, revoke.", ["kind"])

OTHER = "other"
LABEL_VALUES_LIMIT = 256
LABEL_MAX_LENGTH = 100

_ID_AFTER = {"models", "batches", "files", "skills", "agents", "sessions", "versions", "environments"}
_SAFE_SEGMENT = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class BoundedLabel:
    """Label values that clients choose (the model they name, the path they call): the first
    `limit` distinct ones per process are kept, later ones count as "other", so no client can grow
    the metrics without bound; each is kept printable (a NUL or a newline becomes a visible escape)
    and at most `max_length` characters. Usage records keep the real values."""

    def __init__(self, limit: int = LABEL_VALUES_LIMIT, max_length: int = LABEL_MAX_LENGTH) -> None:
        self.limit = limit
        self.max_length = max_length
        self.seen: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        value = value[: self.max_length]
        label = self.seen.get(value)
        if label is not None:
            return label
        if len(self.seen) >= self.limit:
            return OTHER
        label = self.seen[value] = escape_unprintable(value)[: self.max_length]
        return label


_bounded_endpoint = BoundedLabel()
_bounded_model = BoundedLabel()
_bounded_method = BoundedLabel(limit=32, max_length=10)
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def _child(metric: Counter | Histogram, *labels: str) -> Any:
    """The labelled child, kept: prometheus_client validates the labels and takes a lock on every
    `labels()` call, a third of the cost of counting a request."""
    key = (id(metric), labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


@functools.lru_cache(maxsize=1024)
def endpoint_label(path: str) -> str:
    """A bounded label for a /v1 path: resource ids become `{id}` so label cardinality stays small."""
    parts = [part for part in path.split("/") if part]
    out: list[str] = []
    for index, part in enumerate(parts):
        if index > 0 and parts[index - 1] in _ID_AFTER and part not in ("count_tokens", "batches"):
            out.append("{id}")
        elif _SAFE_SEGMENT.match(part):
            out.append(part)
        else:
            out.append("{id}")
        if len(out) >= 6:
            break
    return "/" + "/".join(out)


def observe_request(event: UsageEvent, cost: Decimal | None, upstream_latency_ms: float | None = None) -> None:
    endpoint = _bounded_endpoint(endpoint_label(event.endpoint))
    model = _bounded_model(event.model or "")
    status = str(event.status)
    _child(REQUESTS, endpoint, _bounded_method(event.method), status, model).inc()
    if event.error_type or event.status >= 400:
        _child(ERRORS, endpoint, status, event.error_type or "http_error").inc()
    _child(LATENCY, endpoint).observe(event.latency_ms / 1000.0)
    if event.ttfb_ms is not None:
        _child(TTFB, endpoint).observe(event.ttfb_ms / 1000.0)
    if upstream_latency_ms is not None:
        _child(UPSTREAM_LATENCY, endpoint).observe(upstream_latency_ms / 1000.0)
    for kind, name in TOKEN_KINDS:
        if count := getattr(event, name):
            _child(TOKENS, model, kind).inc(count)
    if cost is not None:
        _child(SPEND, model).inc(float(cost))
    elif model and (event.input_tokens or event.output_tokens):
        _child(UNPRICED, model).inc()


def count_breaker_transition(to_state: str) -> None:
    BREAKER_TRANSITIONS.labels(to_state).inc()


def count_token_event(kind: str) -> None:
    TOKEN_EVENTS.labels(kind).inc()


StateReader = Callable[[], Iterable[GaugeMetricFamily]]
_state_readers: list[StateReader] = []


def register_state_reader(reader: StateReader) -> StateReader:
    """Apps register functions that read shared platform state at scrape time."""
    _state_readers.append(reader)
    return reader


class _PlatformStateCollector:
    def collect(self) -> Iterable[GaugeMetricFamily]:
        for reader in _state_readers:
            yield from reader()


def render_metrics() -> bytes:
    """The Prometheus text exposition of every worker's samples plus the platform state."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(_PlatformStateCollector())
    return generate_latest(registry)
