"""The API's cursor pagination for list endpoints: `limit`, `after_id`, `before_id`.

Pages answer `{"data", "has_more", "first_id", "last_id"}`; items come newest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import invalid_request

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def page_limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid_request(f"limit: Input should be an integer between 1 and {MAX_LIMIT}")
    return int(raw)


def paginate(items: Sequence[Mapping[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of `items` (each with an `id`), the window placed by the cursor in `query`."""
    limit = page_limit(query)
    ids = [item["id"] for item in items]
    after_id, before_id = query.get("after_id"), query.get("before_id")
    if after_id is not None and before_id is not None:
        raise invalid_request("Cannot specify both after_id and before_id")
    if after_id is not None:
        if after_id not in ids:
            raise invalid_request(f"after_id: no item with id {after_id!r}")
        start = ids.index(after_id) + 1
        window, has_more = items[start : start + limit], start + limit < len(items)
    elif before_id is not None:
        if before_id not in ids:
            raise invalid_request(f"before_id: no item with id {before_id!r}")
        end = ids.index(before_id)
        window, has_more = items[max(0, end - limit) : end], end - limit > 0
    else:
        window, has_more = items[:limit], limit < len(items)
    return {
        "data": list(window),
        "has_more": has_more,
        "first_id": window[0]["id"] if window else None,
        "last_id": window[-1]["id"] if window else None,
    }
