"""The live feed: each stored batch of usage records goes to a channels group that the admin's
websocket consumers join. Best effort: a feed nobody watches, or a channel layer that is down,
never holds up or fails the writer."""
from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer

from proxyproject.logging import log_event
from usage.models import UsageRecord

LIVE_GROUP = "usage-live"
LIVE_MESSAGE_TYPE = "usage.records"
MAX_ROWS_PER_MESSAGE = 200
logger = logging.getLogger("usage.live")


def live_row(record: UsageRecord) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "occurred_at": record.occurred_at.isoformat(),
        "device": record.device_ref,
        "model": record.model,
        "endpoint": record.endpoint,
        "status": record.status,
        "error_type": record.error_type,
        "streamed": record.streamed,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_read_tokens": record.cache_read_tokens,
        "cache_write_tokens": record.cache_write_5m_tokens + record.cache_write_1h_tokens,
        "cost": None if record.cost is None else format(record.cost, "f"),
        "latency_ms": round(record.latency_ms, 1),
    }


async def broadcast_records(rows: list[dict[str, Any]]) -> None:
    layer = get_channel_layer()
    if layer is None or not rows:
        return
    try:
        await layer.group_send(LIVE_GROUP, {"type": LIVE_MESSAGE_TYPE, "records": rows[-MAX_ROWS_PER_MESSAGE:]})
    except Exception as exc:  # the feed is a view; losing a frame of it must not fail a write
        log_event(logger, "Live usage feed send failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
