"""One proxied request's usage as the gateway saw it: the contract between `gateway` (which fills it
in while relaying) and `usage` (which prices, stores and aggregates it)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(slots=True)
class UsageEvent:
    request_id: str
    occurred_at: dt.datetime
    endpoint: str
    method: str
    device_id: str | None = None
    device_pk: int | None = None
    org_id: int | None = None
    person_id: int | None = None
    model: str | None = None  # the model served
    requested_model: str | None = None  # set when a model alias replaced the one the client asked for
    upstream_request_id: str | None = None
    status: int = 0
    error_type: str | None = None
    streamed: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    service_tier: str | None = None
    speed: str | None = None
    inference_geo: str | None = None
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    upstream_key_name: str | None = None
    session_id: str | None = None
    client_disconnected: bool = False
    extra: dict[str, object] = field(default_factory=dict)
    # Checkpoints of this stream were queued (not a column): the writer then deletes its open-stream row.
    checkpointed: bool = False
    priced_at: dt.datetime | None = None
    """The moment whose prices apply when it is not `occurred_at`: a batch result's batch creation."""
