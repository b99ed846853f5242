"""The live feed: each stored batch of usage records goes to a channels group that the admin's
websocket consumers join. Best effort: a feed nobody watches, or a channel layer that is down,
never holds up or fails the writer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from channels.layers import get_channel_layer

from proxyproject.lib.logging import log_event

LIVE_GROUP = "usage-live"
LIVE_MESSAGE_TYPE = "usage.records"
MAX_ROWS_PER_MESSAGE = 200
logger = logging.getLogger("usage.live")


def live_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One stored record (its column values) as the feed shows it."""
    cost = row["cost"]
    return {
        "request_id": row["request_id"],
        "occurred_at": row["occurred_at"].isoformat(),
        "device": row["device_ref"],
        "model": row["model"],
        "endpoint": row["endpoint"],
        "status": row["status"],
        "error_type": row["error_type"],
        "streamed": row["streamed"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cache_read_tokens": row["cache_read_tokens"],
        "cache_write_tokens": row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"],
        "cost": None if cost is None else format(cost, "f"),
        "latency_ms": round(row["latency_ms"], 1),
    }


async def broadcast_records(rows: list[dict[str, Any]]) -> None:
    layer = get_channel_layer()
    if layer is None or not rows:
        return
    try:
        await layer.group_send(LIVE_GROUP, {"type": LIVE_MESSAGE_TYPE, "records": rows[-MAX_ROWS_PER_MESSAGE:]})
    except Exception as exc:  # the feed is a view; losing a frame of it must not fail a write
        log_event(logger, "Live usage feed send failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
