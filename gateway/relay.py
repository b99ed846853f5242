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


def error_event(error: GatewayError, request_id: str) -> bytes:
    """The SSE event the API itself sends when a stream fails after it started."""
    return b"event: error\ndata: " + error_body(error, request_id) + b"\n\n"


def _is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


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


async def relay_response(proxied: ProxiedRequest, response: httpx.Response) -> None:
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        # Asked for identity; an upstream that compresses anyway is relayed as it came.
        await _relay_passthrough(proxied, response)
    elif _is_event_stream(response):
        await _relay_event_stream(proxied, response)
    elif (results := _results_reader(proxied, response)) is not None:
        await _relay_passthrough(proxied, response, results)
    elif _is_read_whole(proxied.path, response):
        await _relay_whole(proxied, response)
    else:
        await _relay_passthrough(proxied, response)


def _results_reader(proxied: ProxiedRequest, response: httpx.Response) -> BatchResultsReader | None:
    """Kept on the request too: once the body is read whole, its cost settles the batch's spend."""
    proxied.batch_results = batch_results_reader(
        method=proxied.method,
        path=proxied.path,
        status=response.status_code,
        request_event=proxied.event,
        batch_created_at=proxied.batch_created_at,
    )
    return proxied.batch_results


async def _relay_event_stream(proxied: ProxiedRequest, response: httpx.Response) -> None:
    sse = SseRelay(proxied.tally)
    checkpoints = None
    if proxied.event is not None:
        proxied.event.streamed = True
        checkpoints = StreamCheckpoints(proxied, sse)
    try:
        await _relay_events(proxied, response, sse, checkpoints)
    finally:
        if checkpoints is not None:
            checkpoints.close()


async def _relay_events(
    proxied: ProxiedRequest, response: httpx.Response, sse: SseRelay, checkpoints: StreamCheckpoints | None
) -> None:
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
        proxied.upstream_ok = False
        if proxied.event is not None:
            proxied.event.error_type = error.error_code
        await client.write(error_event(error, proxied.request_id))
        await client.finish()
        return
    await client.finish(sse.finish())


def _read_reply(proxied: ProxiedRequest, body: bytes) -> None:
    """Usage (or the error type) from a non-streaming Messages reply."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if proxied.status == 200:
        proxied.tally.observe_message(parsed)
    else:
        proxied.tally.observe_error(parsed)


async def _relay_whole(proxied: ProxiedRequest, response: httpx.Response) -> None:
    try:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    except httpx.TransportError as exc:
        proxied.upstream_ok = False
        raise gateway_error_for(exc) from exc
    if proxied.path == MESSAGES_PATH:
        _read_reply(proxied, body)
    else:
        body = rewrite_results_urls(body)
    await proxied.client.send_whole(response.status_code, _headers(proxied, response, None), body)


async def _relay_passthrough(
    proxied: ProxiedRequest, response: httpx.Response, results: BatchResultsReader | None = None
) -> None:
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
        proxied.upstream_ok = False
        if proxied.event is not None:
            proxied.event.error_type = gateway_error_for(exc, mid_stream=True).error_code
        return
    await client.finish()
    if results is not None:
        results.finish()
