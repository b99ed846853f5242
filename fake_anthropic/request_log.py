"""What the fake received, for tests to assert on (which key, which headers, which body).

The log is written from the server's event-loop thread and read from the test's thread, hence the
lock. Credentials are masked so a log printed in a failing test never shows a whole key; the last
four characters stay visible so a test can still tell which key reached the upstream.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

CREDENTIAL_HEADERS = ("x-api-key", "authorization")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query_string: str  # exactly as received, without the "?"
    headers: dict[str, str]  # lower-cased names; credential values masked
    api_key_used: str | None  # last 4 characters of the credential presented, if any
    body: bytes
    received_at: float  # time.time()
    request_id: str  # the `request-id` the fake answered with


def last_four(secret: str) -> str:
    return secret[-4:]


def mask_credential(value: str) -> str:
    """`Bearer sk-ant-abc...wxyz` -> `Bearer ***wxyz`; `sk-ant-...wxyz` -> `***wxyz`."""
    scheme, _, secret = value.partition(" ")
    if secret and scheme.lower() == "bearer":
        return f"{scheme} ***{last_four(secret)}"
    return f"***{last_four(value)}"


def masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased names; a header sent several times (`anthropic-beta` may be) is joined with ", "."""
    recorded: dict[str, str] = {}
    for name, value in headers.items():
        name = name.lower()
        recorded[name] = f"{recorded[name]}, {value}" if name in recorded else value
    for name in CREDENTIAL_HEADERS:
        if name in recorded:
            recorded[name] = mask_credential(recorded[name])
    return recorded


class RequestLog:
    """The last `max_records` requests, oldest first."""

    def __init__(self, max_records: int = 10_000) -> None:
        self._records: deque[RecordedRequest] = deque(maxlen=max_records)
        self._lock = threading.Lock()

    def append(self, record: RecordedRequest) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
