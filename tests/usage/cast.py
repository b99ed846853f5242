"""Usage events for tests: one function with the defaults of an ordinary successful request."""
from __future__ import annotations

import datetime as dt
import secrets

from usage.events import UsageEvent

NOV_25 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def usage_event(**fields: object) -> UsageEvent:
    values: dict[str, object] = {
        "request_id": "req_gw_" + secrets.token_hex(8),
        "occurred_at": NOV_25,
        "endpoint": "/v1/messages",
        "method": "POST",
        "model": "claude-sonnet-4-5-20250929",
        "status": 200,
    }
    values.update(fields)
    return UsageEvent(**values)
