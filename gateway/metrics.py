"""Prometheus metrics: what every worker counts per request, and what is read at scrape time.

Per-request samples go to prometheus_client's multiprocess files (settings.METRICS_DIR), gathered in
the process for up to a second first (`_Gathered`), so a scrape answered by any worker of an instance
reports the whole instance. Platform state that lives in shared
stores (active tokens, refreshes in the last hour, breaker state, usage backlog) is read when scraped,
so it is the same whichever instance answers.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import math
import re
import threading
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


class _Gathered:
    """This process's per-request counts not yet written to the multiprocess files.

    prometheus_client writes every increment there at once, each behind a lock, a pid check (a
    system call) and an mmap write: the ten or so of a request were 7% of a worker's CPU at one
    connection. Gathered here, a count of many requests costs one write per flush. A flush happens
    FLUSH_SECONDS after the first count since the last, and at once when this process renders a
    scrape; a scrape answered by another worker of the instance misses at most that span of this
    one's requests. Histograms are written through their child's `_sum` and `_buckets`
    (prometheus_client's own layout, pinned in requirements.txt; `test_metrics` compares the result
    with direct observations)."""

    FLUSH_SECONDS = 1.0
    BOUNDS = (*LATENCY_BUCKETS, math.inf)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[Any, float] = {}
        self.observations: dict[Any, list[float]] = {}  # histogram child: [sum, count per bucket, ...]
        self.flush_on: asyncio.AbstractEventLoop | None = None

    def add(self, counts: list[tuple[Any, float]], observations: list[tuple[Any, float]]) -> None:
        """One request's counts and observations, under one acquisition of the lock."""
        with self.lock:
            gathered_counts = self.counts
            for child, amount in counts:
                gathered_counts[child] = gathered_counts.get(child, 0.0) + amount
            for child, value in observations:
                gathered = self.observations.get(child)
                if gathered is None:
                    gathered = self.observations[child] = [0.0] * (len(self.BOUNDS) + 1)
                gathered[0] += value
                gathered[1 + bisect.bisect_left(self.BOUNDS, value)] += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # synchronous code (commands, tests): no loop to wait on
            self.flush()
            return
        if self.flush_on is not loop:  # none due, or due on a loop that has since closed
            self.flush_on = loop
            loop.call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        with self.lock:
            counts, self.counts = self.counts, {}
            observations, self.observations = self.observations, {}
            self.flush_on = None
        for child, amount in counts.items():
            child.inc(amount)
        for child, (total, *buckets) in observations.items():
            child._sum.inc(total)
            for bucket, observed in zip(child._buckets, buckets, strict=True):
                if observed:
                    bucket.inc(observed)


_gathered = _Gathered()


def observe_request(event: UsageEvent, cost: Decimal | None, upstream_latency_ms: float | None = None) -> None:
    endpoint = _bounded_endpoint(endpoint_label(event.endpoint))
    model = _bounded_model(event.model or "")
    status = str(event.status)
    counts: list[tuple[Any, float]] = [(_child(REQUESTS, endpoint, _bounded_method(event.method), status, model), 1.0)]
    if event.error_type or event.status >= 400:
        counts.append((_child(ERRORS, endpoint, status, event.error_type or "http_error"), 1.0))
    observations: list[tuple[Any, float]] = [(_child(LATENCY, endpoint), event.latency_ms / 1000.0)]
    if event.ttfb_ms is not None:
        observations.append((_child(TTFB, endpoint), event.ttfb_ms / 1000.0))
    if upstream_latency_ms is not None:
        observations.append((_child(UPSTREAM_LATENCY, endpoint), upstream_latency_ms / 1000.0))
    for kind, name in TOKEN_KINDS:
        if tokens := getattr(event, name):
            counts.append((_child(TOKENS, model, kind), tokens))
    if cost is not None:
        counts.append((_child(SPEND, model), float(cost)))
    elif model and (event.input_tokens or event.output_tokens):
        counts.append((_child(UNPRICED, model), 1.0))
    _gathered.add(counts, observations)


async def flush_gathered_metrics() -> None:
    """Lifespan shut-down: what this worker gathered, written before it exits."""
    _gathered.flush()


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
    _gathered.flush()
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(_PlatformStateCollector())
    return generate_latest(registry)
