"""Sending an SSE reply over aiohttp, healthy or broken on purpose.

`error-mid-stream` ends a 200 stream with `event: error` after some deltas, as the API does when
it fails after starting. `drop-mid-stream` aborts the TCP connection after some events, so the
chunked body never gets its terminating chunk: the client sees a truncated read, not a clean end.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .compression import EventEncoder
from .errors import error_envelope
from .faults import Faults
from .messages import EventStream, sse_event

MID_STREAM_ERROR_EVENT = sse_event("error", error_envelope("overloaded_error", "Overloaded"))


def abort_connection(request: web.BaseRequest) -> None:
    """Close the socket at once, without the rest of the response; the client sees a dead peer."""
    if request.transport is not None:
        request.transport.abort()


async def send_event_stream(
    request: web.BaseRequest,
    response: web.StreamResponse,
    stream: EventStream,
    *,
    faults: Faults,
    event_interval: float,
    encoder: EventEncoder,
) -> None:
    """Write the events of an already prepared response; a client that leaves just ends it."""
    events = stream.events[: stream.midpoint] if faults.breaks_stream else stream.events
    if faults.error_mid_stream:
        events = [*events, MID_STREAM_ERROR_EVENT]
    try:
        if event_interval:
            for position, event in enumerate(events):
                if position:
                    await asyncio.sleep(event_interval)
                await response.write(encoder.encode(event))
        else:
            await response.write(b"".join(encoder.encode(event) for event in events))
        if faults.drop_mid_stream:
            abort_connection(request)
            return
        tail = encoder.finish()
        if tail:
            await response.write(tail)
        await response.write_eof()
    except ConnectionResetError:
        return
