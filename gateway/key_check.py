"""Does an upstream key work? One cheap call, `GET /v1/models?limit=1`, that costs no tokens and
that only the key can fail: no client header or body goes with it.

The gateway asks it when the upstream refuses a request with 401/403, because a refusal of one
request does not prove the key is bad: a device can make the upstream refuse its own request
(a `FAKE_FAULT:401` in a prompt to the bundled fake, a model or beta the organization may not
use). Only a refusal of this call takes a key out of rotation. The commands and the admin ask it
before a new key serves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import httpx
from django.conf import settings

from gateway.upstream import build_upstream_request, send_upstream, upstream_timeouts

CHECK_PATH = "/v1/models"
CHECK_QUERY = b"limit=1"
ANTHROPIC_VERSION = "2023-06-01"
KEY_REFUSED_STATUSES = frozenset({401, 403})


class KeyVerdict(enum.StrEnum):
    WORKS = "works"
    REFUSED = "refused"  # the upstream refused the key itself (401/403 on the check)
    UNKNOWN = "unknown"  # the check could not tell: upstream unreachable, 429, 5xx


@dataclass(frozen=True, slots=True)
class KeyCheck:
    verdict: KeyVerdict
    detail: str

    @property
    def works(self) -> bool:
        return self.verdict is KeyVerdict.WORKS


def _check_headers(secret: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-api-key", secret.encode("latin-1")), (b"anthropic-version", ANTHROPIC_VERSION.encode())]


def _verdict_for_status(status: int) -> KeyCheck:
    if 200 <= status < 300:
        return KeyCheck(KeyVerdict.WORKS, f"the upstream accepted the key (GET {CHECK_PATH}: {status})")
    if status in KEY_REFUSED_STATUSES:
        return KeyCheck(KeyVerdict.REFUSED, f"the upstream refused the key (GET {CHECK_PATH}: {status})")
    return KeyCheck(KeyVerdict.UNKNOWN, f"the upstream answered {status} to GET {CHECK_PATH}: the key could not be checked")


def _verdict_for_failure(exc: httpx.HTTPError) -> KeyCheck:
    return KeyCheck(KeyVerdict.UNKNOWN, f"the upstream at {settings.ANTHROPIC_BASE_URL} did not answer ({type(exc).__name__})")


def check_upstream_key(secret: str) -> KeyCheck:
    """For commands and the admin (synchronous code)."""
    url = f"{settings.ANTHROPIC_BASE_URL}{CHECK_PATH}?{CHECK_QUERY.decode()}"
    headers = [(name.decode(), value.decode("latin-1")) for name, value in _check_headers(secret)]
    try:
        with httpx.Client(timeout=upstream_timeouts(), trust_env=False, follow_redirects=False) as client:
            response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return _verdict_for_failure(exc)
    return _verdict_for_status(response.status_code)


async def acheck_upstream_key(secret: str) -> KeyCheck:
    """For the proxy: through the pooled upstream connections."""
    request = build_upstream_request("GET", CHECK_PATH, CHECK_QUERY, _check_headers(secret), b"")
    try:
        response = await send_upstream(request)
        await response.aread()
        await response.aclose()
    except httpx.HTTPError as exc:
        return _verdict_for_failure(exc)
    return _verdict_for_status(response.status_code)
