"""Relaying the upstream's answer to the client, in one of three ways:

- an event stream: each complete event written as it arrives (see `gateway.sse`), usage read on
  the way; if the upstream breaks off, the stream ends with an `event: error` in Anthropic's
  envelope, never a silent truncation;
- a Messages reply or a batch object (JSON): read whole, because usage must be read from it or
  `results_url` rewritten, then sent with its exact length. Such bodies are small, and nothing has
  reached the client if the upstream breaks off, so the client gets a clean 502;
- anything else (model lists, files, batch results, beta resources): passed through chunk by chunk;
  a batch's results are read on the way (`gateway.batch_usage`) to record their usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import orjson

from gateway.batch_usage import BatchResultsReader, batch_results_reader
from gateway.batches import rewrite_results_urls
from gateway.body import BATCHES_PATH, MESSAGES_PATH
from gateway.headers import client_response_headers
from gateway.sse import SseRelay
from gateway.stream_checkpoints import StreamCheckpoints
from gateway.upstream import gateway_error_for
from proxyproject.lib.errors import GatewayError, error_body

if TYPE_CHECKING:
    from gateway.proxy import ProxiedRequest


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    """How relaying an answer ended, for the proxy's bookkeeping: the relay reads the request and
    feeds its usage tally, but decides nothing on it. Whether the answer streams is known before the
    relay starts (`relays_as_stream`), since a relay cut by the client leaving returns nothing."""

    upstream_error_code: str | None = None  # the upstream broke off after the client got the first bytes
    batch_results: BatchResultsReader | None = None  # a batch's results, read on the way

    @property
    def upstream_failed(self) -> bool:
        return self.upstream_error_code is not None


def error_event(error: GatewayError, request_id: str) -> bytes:
    """The SSE event the API itself sends when a stream fails after it started."""
    return b"event: error\ndata: " + error_body(error, request_id) + b"\n\n"


def _is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")


def _is_read_whole(path: str, response: httpx.Response) -> bool:
    if path != MESSAGES_PATH and not path.startswith(BATCHES_PATH):
        return False
    return "json" in response.headers.get("content-type", "")


def _headers(proxied: ProxiedRequest, response: httpx.Response, content_length: int | None) -> list[tuple[bytes, bytes]]:
    grant = proxied.grant
    return client_response_headers(
        response.headers.raw,
        rate_limit_headers=grant.rate_limit_headers if grant else (),
        gateway_request_id=proxied.request_id,
        content_length=content_length,
    )


def _is_identity(response: httpx.Response) -> bool:
    # Asked for identity; an upstream that compresses anyway is relayed as it came.
    encoding: str = response.headers.get("content-encoding", "identity")
    return encoding.lower() == "identity"


def relays_as_stream(response: httpx.Response) -> bool:
    """Whether `relay_response` relays this answer event by event."""
    return _is_identity(response) and _is_event_stream(response)


async def relay_response(proxied: ProxiedRequest, response: httpx.Response) -> RelayOutcome:
    """Raises the gateway's error when the upstream breaks off before anything reached the client."""
    if not _is_identity(response):
        return await _relay_passthrough(proxied, response)
    if _is_event_stream(response):
        return await _relay_event_stream(proxied, response)
    if (results := _results_reader(proxied, response)) is not None:
        return await _relay_passthrough(proxied, response, results)
    if _is_read_whole(proxied.path, response):
        return await _relay_whole(proxied, response)
    return await _relay_passthrough(proxied, response)


def _results_reader(proxied: ProxiedRequest, response: httpx.Response) -> BatchResultsReader | None:
    return batch_results_reader(
        method=proxied.method,
        path=proxied.path,
        status=response.status_code,
        request_event=proxied.event,
        batch_created_at=proxied.batch_created_at,
    )


async def _relay_event_stream(proxied: ProxiedRequest, response: httpx.Response) -> RelayOutcome:
    sse = SseRelay(proxied.tally)
    checkpoints = StreamCheckpoints(proxied, sse) if proxied.event is not None else None
    try:
        return await _relay_events(proxied, response, sse, checkpoints)
    finally:
        if checkpoints is not None:
            checkpoints.close()


async def _relay_events(
    proxied: ProxiedRequest, response: httpx.Response, sse: SseRelay, checkpoints: StreamCheckpoints | None
) -> RelayOutcome:
    """Each block of complete events is checkpointed (when due) before the client gets it."""
    client = proxied.client
    await client.start(response.status_code, _headers(proxied, response, None))
    try:
        async for chunk in response.aiter_raw():
            complete = sse.feed(chunk)
            if complete:
                if checkpoints is not None:
                    checkpoints.after_events()
                await client.write(complete)
    except httpx.TransportError as exc:
        error = gateway_error_for(exc, mid_stream=True)
        await client.write(error_event(error, proxied.request_id))
        await client.finish()
        return RelayOutcome(upstream_error_code=error.error_code)
    await client.finish(sse.finish())
    return RelayOutcome()


def _read_reply(proxied: ProxiedRequest, status: int, body: bytes) -> None:
    """Usage (or the error type) from a non-streaming Messages reply."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if status == 200:
        proxied.tally.observe_message(parsed)
    else:
        proxied.tally.observe_error(parsed)


async def _relay_whole(proxied: ProxiedRequest, response: httpx.Response) -> RelayOutcome:
    try:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    except httpx.TransportError as exc:
        raise gateway_error_for(exc) from exc
    if proxied.path == MESSAGES_PATH:
        _read_reply(proxied, response.status_code, body)
    else:
        body = rewrite_results_urls(body)
    await proxied.client.send_whole(response.status_code, _headers(proxied, response, None), body)
    return RelayOutcome()


async def _relay_passthrough(
    proxied: ProxiedRequest, response: httpx.Response, results: BatchResultsReader | None = None
) -> RelayOutcome:
    declared = response.headers.get("content-length")
    client = proxied.client
    await client.start(
        response.status_code, _headers(proxied, response, int(declared) if declared and declared.isdigit() else None)
    )
    try:
        async for chunk in response.aiter_raw():
            await client.write(chunk)
            if results is not None:
                results.feed(chunk)
    except httpx.TransportError as exc:
        # Headers are gone already: ending without the final chunk is how HTTP says "truncated".
        return RelayOutcome(upstream_error_code=gateway_error_for(exc, mid_stream=True).error_code, batch_results=results)
    await client.finish()
    if results is not None:
        results.finish()
    return RelayOutcome(batch_results=results)
