"""Fault injection and stream pacing, asked for per request.

A fault comes from the `x-fake-fault` header or from `FAKE_FAULT:<spec>` in the last user message
(the only channel when the request goes through a client that cannot add headers, like Claude
Code). Several specs may be joined with commas: `slow-first-byte=200,529`.

    <status>               an error response in the API's envelope: 400 401 402 403 404 413 500 504 529
    429 / 429=<seconds>    rate_limit_error with `retry-after` (default 1)
    error-mid-stream       200 stream, some deltas, then `event: error` (overloaded_error)
    drop-mid-stream        200 stream, some events, then the TCP connection is aborted
    drop-before-response   the connection is closed before any byte of a response
    slow-first-byte=<ms>   wait before the status line
    slow-stream=<ms>       wait between SSE events

Stream-only faults (`error-mid-stream`, `drop-mid-stream`, `slow-stream`) do nothing to a
non-streaming request: Claude Code answers a failed stream by repeating the same body without
`stream`, and that fallback must be able to succeed.

`x-fake-stream: events=<n>,interval_ms=<ms>,first_byte_ms=<ms>` shapes a healthy stream for
benchmarks: n text deltas, a pause between events, a pause before the first byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .errors import ERROR_TYPES, FakeApiError, invalid_request

FAULT_HEADER = "x-fake-fault"
STREAM_SHAPE_HEADER = "x-fake-stream"
MAGIC_WORD = "FAKE_FAULT:"
MAGIC_WORD_PATTERN = re.compile(r"FAKE_FAULT:(\S+)")
DEFAULT_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Faults:
    error: FakeApiError | None = None  # answer with this instead of a result
    drop_before_response: bool = False
    error_mid_stream: bool = False
    drop_mid_stream: bool = False
    first_byte_delay: float = 0.0  # seconds
    event_interval: float = 0.0  # seconds between SSE events

    @property
    def breaks_stream(self) -> bool:
        return self.error_mid_stream or self.drop_mid_stream


NO_FAULTS = Faults()


@dataclass(frozen=True, slots=True)
class StreamShape:
    text_deltas: int | None = None  # None: as many as the reply has words
    event_interval: float = 0.0
    first_byte_delay: float = 0.0


DEFAULT_STREAM_SHAPE = StreamShape()


def _milliseconds(spec: str, value: str) -> float:
    try:
        milliseconds = int(value)
    except ValueError:
        raise invalid_request(f"{spec}: expected milliseconds, got {value!r}") from None
    if milliseconds < 0:
        raise invalid_request(f"{spec}: expected milliseconds >= 0, got {milliseconds}")
    return milliseconds / 1000


def status_fault(status: int, retry_after: int | None) -> FakeApiError:
    if status not in ERROR_TYPES:
        raise invalid_request(f"fault {status}: not an API error status ({sorted(ERROR_TYPES)})")
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return FakeApiError(status, headers=headers)


def parse_faults(spec_list: str, faults: Faults = NO_FAULTS) -> Faults:
    """Add the comma-separated specs to `faults`; an unknown spec is a 400 so typos surface."""
    for raw_spec in spec_list.split(","):
        spec = raw_spec.strip()
        if not spec:
            continue
        name, _, value = spec.partition("=")
        if name.isdigit():
            status = int(name)
            retry_after = None
            if status == 429:
                if value and not value.isdigit():
                    raise invalid_request(f"{FAULT_HEADER}: 429=<seconds>, got {spec!r}")
                retry_after = int(value) if value else DEFAULT_RETRY_AFTER_SECONDS
            faults = replace(faults, error=status_fault(status, retry_after))
        elif name == "error-mid-stream":
            faults = replace(faults, error_mid_stream=True)
        elif name == "drop-mid-stream":
            faults = replace(faults, drop_mid_stream=True)
        elif name == "drop-before-response":
            faults = replace(faults, drop_before_response=True)
        elif name == "slow-first-byte":
            faults = replace(faults, first_byte_delay=_milliseconds(name, value))
        elif name == "slow-stream":
            faults = replace(faults, event_interval=_milliseconds(name, value))
        else:
            raise invalid_request(f"{FAULT_HEADER}: unknown fault {spec!r}")
    return faults


def faults_in_text(text: str, faults: Faults) -> Faults:
    if MAGIC_WORD not in text:  # the cheap test first: almost no prompt has it
        return faults
    for spec_list in MAGIC_WORD_PATTERN.findall(text):
        faults = parse_faults(spec_list, faults)
    return faults


def parse_stream_shape(header_value: str) -> StreamShape:
    shape = DEFAULT_STREAM_SHAPE
    for item in header_value.split(","):
        key, _, value = item.strip().partition("=")
        if key == "events":
            if not value.isdigit() or int(value) < 1:
                raise invalid_request(f"{STREAM_SHAPE_HEADER}: events must be a whole number >= 1")
            shape = replace(shape, text_deltas=int(value))
        elif key == "interval_ms":
            shape = replace(shape, event_interval=_milliseconds(key, value))
        elif key == "first_byte_ms":
            shape = replace(shape, first_byte_delay=_milliseconds(key, value))
        elif key:
            raise invalid_request(f"{STREAM_SHAPE_HEADER}: unknown setting {key!r}")
    return shape
