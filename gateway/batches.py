"""Batch objects name an absolute `results_url` on the upstream's host, which the SDK fetches as
is: rewritten to the gateway's own base URL, or clients would go around the gateway (with a
credential the upstream refuses, or worse, one it accepts)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings

RESULTS_URL = "results_url"


def gateway_url_for(upstream_url: str) -> str:
    """The same `/v1/...` path and query on PROXY_BASE_URL."""
    parts = urlsplit(upstream_url)
    start = parts.path.find("/v1/")
    path = parts.path[start:] if start >= 0 else parts.path
    return settings.PROXY_BASE_URL + path + (f"?{parts.query}" if parts.query else "")


def _rewrite_batch(obj: Any) -> bool:
    if isinstance(obj, dict) and isinstance(obj.get(RESULTS_URL), str):
        rewritten = gateway_url_for(obj[RESULTS_URL])
        if rewritten != obj[RESULTS_URL]:
            obj[RESULTS_URL] = rewritten
            return True
    return False


def rewrite_results_urls(body: bytes) -> bytes:
    """`body` with every batch's results_url on the gateway (a batch, or a page of them); any other
    body, including one that is not JSON, comes back untouched."""
    if RESULTS_URL.encode() not in body:
        return body
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    changed = _rewrite_batch(parsed)
    if isinstance(parsed, dict) and isinstance(parsed.get("data"), list):
        for item in parsed["data"]:
            changed = _rewrite_batch(item) or changed
    return orjson.dumps(parsed) if changed else body
