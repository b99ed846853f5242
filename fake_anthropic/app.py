"""The fake's HTTP surface: one aiohttp handler that records, authenticates, routes and misbehaves.

Every request passes through `FakeApi.handle`: it is logged (credentials masked), its key checked
(`x-api-key` first, else `Authorization: Bearer`), its faults read, and its endpoint called. Every
error leaves through `_error_response`, with the same `request-id`, organization and rate-limit
headers as a success, so a gateway can be tested stripping them on both paths.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .batches import BatchStore
from .compression import EventEncoder, GzipEventEncoder, IdentityEventEncoder, accepts_gzip, gzip_bytes
from .errors import FakeApiError, error_body, invalid_request, not_found
from .faults import (
    DEFAULT_STREAM_SHAPE,
    FAULT_HEADER,
    NO_FAULTS,
    STREAM_SHAPE_HEADER,
    Faults,
    StreamShape,
    faults_in_text,
    parse_faults,
    parse_stream_shape,
)
from .files import FileStore
from .ids import new_id
from .messages import Reply, check_messages_request, last_user_text, message_object, plan_reply, stream_events
from .model_catalog import MODELS_JSON, find_model
from .pagination import paginate
from .ratelimits import RateLimitWindow
from .request_log import RecordedRequest, RequestLog, last_four, masked_headers
from .streaming import abort_connection, send_event_stream
from .usage import (
    PromptCache,
    apply_usage_override,
    build_usage,
    count_prompt_tokens,
    parse_usage_override,
    split_prompt_tokens,
)

USAGE_OVERRIDE_HEADER = "x-fake-usage"
MAX_BODY_BYTES = 32 * 1024 * 1024  # the Messages API's request limit
BATCH_RESULTS_CONTENT_TYPE = "application/binary"


class DropConnection(Exception):
    """Raised to close the socket without any response (`drop-before-response`)."""


@dataclass(frozen=True, slots=True)
class Exchange:
    request: web.Request
    request_id: str
    body: bytes
    gzip: bool
    path_id: str | None  # the `{id}` of routes that name one


Endpoint = Callable[["Exchange", Faults], Awaitable[web.StreamResponse]]


def presented_credential(headers: Mapping[str, str]) -> str | None:
    api_key = headers.get("x-api-key")
    if api_key is not None:
        return api_key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def parse_json_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request(
            "There was an error parsing the body of your request. Please check that it is valid JSON."
        ) from None


class FakeApi:
    """State and endpoints of one fake Anthropic API; all methods run on its event loop."""

    def __init__(
        self,
        *,
        api_keys: Iterable[str],
        organization_id: str | None = None,
        max_logged_requests: int = 10_000,
        batch_processing_seconds: float = 0.0,
    ) -> None:
        self.api_keys = frozenset(api_keys)
        # Keys the real API knows but refuses everything (a disabled organization, a workspace key
        # without access): 403 permission_error on every endpoint, GET /v1/models included.
        self.forbidden_api_keys: frozenset[str] = frozenset()
        self.organization_id = organization_id or str(uuid.uuid4())
        self.base_url = ""  # known once the socket is bound; batches' results_url needs it
        self.request_log = RequestLog(max_logged_requests)
        self.rate_limits = RateLimitWindow()
        self.prompt_cache = PromptCache()
        self.batches = BatchStore(prompt_cache=self.prompt_cache, processing_seconds=batch_processing_seconds)
        self.files = FileStore()
        self._routes: dict[tuple[str, str], Endpoint] = {
            ("POST", "/v1/messages"): self.create_message,
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
            ("GET", "/v1/models"): self.list_models,
            ("POST", "/v1/messages/batches"): self.create_batch,
            ("GET", "/v1/messages/batches"): self.list_batches,
            ("POST", "/v1/files"): self.upload_file,
            ("GET", "/v1/files"): self.list_files,
        }
        self._id_routes: list[tuple[str, re.Pattern[str], Endpoint]] = [
            ("GET", re.compile(r"/v1/models/([^/]+)"), self.retrieve_model),
            ("GET", re.compile(r"/v1/messages/batches/([^/]+)"), self.retrieve_batch),
            ("GET", re.compile(r"/v1/messages/batches/([^/]+)/results"), self.batch_results),
            ("POST", re.compile(r"/v1/messages/batches/([^/]+)/cancel"), self.cancel_batch),
            ("DELETE", re.compile(r"/v1/messages/batches/([^/]+)"), self.delete_batch),
            ("GET", re.compile(r"/v1/files/([^/]+)"), self.retrieve_file),
            ("GET", re.compile(r"/v1/files/([^/]+)/content"), self.download_file),
            ("DELETE", re.compile(r"/v1/files/([^/]+)"), self.delete_file),
        ]
        # These read faults from the prompt too, so they apply faults themselves once parsed.
        self._prompt_endpoints = {self.create_message, self.count_tokens}

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = new_id("req_011C", 20)
        headers = request.headers
        credential = presented_credential(headers)
        too_large = False
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body, too_large = b"", True
        self._record(request, request_id, credential, body)
        route = self._resolve(request.method, request.path)
        path_id = route[1] if route is not None else None
        exchange = Exchange(request, request_id, body, accepts_gzip(headers.get("accept-encoding", "")), path_id)
        try:
            if too_large:
                raise FakeApiError(413)
            if request.method == "HEAD" and request.path == "/":  # Claude Code's probe: no credential
                return web.Response(headers=self._response_headers(request_id))
            if credential is None:
                raise FakeApiError(401, "x-api-key header is required")
            if credential not in self.api_keys:
                raise FakeApiError(401)
            if credential in self.forbidden_api_keys:
                raise FakeApiError(403)
            fault_header = headers.get(FAULT_HEADER)
            faults = parse_faults(fault_header) if fault_header else NO_FAULTS
            if route is None:
                raise not_found()
            endpoint = route[0]
            if endpoint not in self._prompt_endpoints:
                await self._apply_faults(faults)
            return await endpoint(exchange, faults)
        except FakeApiError as error:
            return self._error_response(exchange, error)
        except DropConnection:
            abort_connection(request)
            return web.Response()

    def _record(self, request: web.Request, request_id: str, credential: str | None, body: bytes) -> None:
        self.request_log.append(
            RecordedRequest(
                method=request.method,
                path=request.rel_url.raw_path,
                query_string=request.rel_url.raw_query_string,
                headers=masked_headers(request.headers),
                api_key_used=last_four(credential) if credential is not None else None,
                body=body,
                received_at=time.time(),
                request_id=request_id,
            )
        )
        self.rate_limits.count_request()

    def _resolve(self, method: str, path: str) -> tuple[Endpoint, str | None] | None:
        """The endpoint for this method and path, with the `{id}` the path names, if any."""
        endpoint = self._routes.get((method, path))
        if endpoint is not None:
            return endpoint, None
        for route_method, pattern, id_endpoint in self._id_routes:
            if route_method == method and (match := pattern.fullmatch(path)):
                return id_endpoint, match.group(1)
        return None

    async def _apply_faults(self, faults: Faults, first_byte_delay: float = 0.0) -> None:
        delay = max(faults.first_byte_delay, first_byte_delay)
        if delay:
            await asyncio.sleep(delay)
        if faults.drop_before_response:
            raise DropConnection
        if faults.error is not None:
            raise faults.error

    def _response_headers(self, request_id: str) -> dict[str, str]:
        headers = self.rate_limits.headers()
        headers["request-id"] = request_id
        headers["anthropic-organization-id"] = self.organization_id
        return headers

    def _body_response(
        self,
        exchange: Exchange,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "application/json",
        extra_headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        headers = self._response_headers(exchange.request_id)
        if extra_headers:
            headers.update(extra_headers)
        headers["content-type"] = content_type
        if exchange.gzip:
            body = gzip_bytes(body)
            headers["content-encoding"] = "gzip"
        return web.Response(status=status, body=body, headers=headers)

    def _json_response(self, exchange: Exchange, payload: Any) -> web.Response:
        return self._body_response(exchange, orjson.dumps(payload))

    def _error_response(self, exchange: Exchange, error: FakeApiError) -> web.Response:
        return self._body_response(
            exchange, error_body(error, exchange.request_id), status=error.status, extra_headers=error.headers
        )

    async def create_message(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        body = parse_json_body(exchange.body)
        check_messages_request(body)
        faults = faults_in_text(last_user_text(body), faults)
        headers = exchange.request.headers
        streaming = body.get("stream") is True
        shape_header = headers.get(STREAM_SHAPE_HEADER)
        shape = parse_stream_shape(shape_header) if streaming and shape_header else DEFAULT_STREAM_SHAPE
        override_header = headers.get(USAGE_OVERRIDE_HEADER)
        override = parse_usage_override(override_header) if override_header else None
        await self._apply_faults(faults, shape.first_byte_delay)
        reply = plan_reply(body, text_deltas=shape.text_deltas)
        prompt = split_prompt_tokens(body, self.prompt_cache)
        self.rate_limits.count_tokens(prompt.total, reply.output_tokens)
        usage = build_usage(prompt, reply.output_tokens)
        if override is not None:
            usage = apply_usage_override(usage, override)
        if not streaming:
            return self._json_response(exchange, message_object(reply, usage))
        return await self._stream_reply(exchange, reply, usage, faults, shape)

    async def _stream_reply(
        self, exchange: Exchange, reply: Reply, usage: dict[str, Any], faults: Faults, shape: StreamShape
    ) -> web.StreamResponse:
        headers = self._response_headers(exchange.request_id)
        headers["content-type"] = "text/event-stream; charset=utf-8"
        headers["cache-control"] = "no-cache"
        encoder: EventEncoder = IdentityEventEncoder()
        if exchange.gzip:
            headers["content-encoding"] = "gzip"
            encoder = GzipEventEncoder()
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(exchange.request)
        await send_event_stream(
            exchange.request,
            response,
            stream_events(reply, usage),
            faults=faults,
            event_interval=max(faults.event_interval, shape.event_interval),
            encoder=encoder,
        )
        return response

    async def count_tokens(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        body = parse_json_body(exchange.body)
        check_messages_request(body, require_max_tokens=False)
        await self._apply_faults(faults_in_text(last_user_text(body), faults))
        return self._json_response(exchange, {"input_tokens": count_prompt_tokens(body)})

    async def list_models(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        return self._json_response(exchange, paginate(MODELS_JSON, exchange.request.query))

    async def retrieve_model(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        model = find_model(exchange.path_id or "")
        if model is None:
            raise not_found(f"model: {exchange.path_id}")
        return self._json_response(exchange, model.as_json())

    async def create_batch(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        override_header = exchange.request.headers.get(USAGE_OVERRIDE_HEADER)
        override = parse_usage_override(override_header) if override_header else None
        batch = self.batches.create(parse_json_body(exchange.body), override)
        return self._json_response(exchange, batch.as_json(self.base_url))

    async def list_batches(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        batches = [batch.as_json(self.base_url) for batch in self.batches.newest_first()]
        return self._json_response(exchange, paginate(batches, exchange.request.query))

    async def retrieve_batch(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        return self._json_response(exchange, self.batches.get(exchange.path_id or "").as_json(self.base_url))

    async def cancel_batch(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        return self._json_response(exchange, self.batches.cancel(exchange.path_id or "").as_json(self.base_url))

    async def delete_batch(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        return self._json_response(exchange, self.batches.delete(exchange.path_id or ""))

    async def batch_results(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        jsonl = self.batches.results_jsonl(exchange.path_id or "")
        return self._body_response(exchange, jsonl, content_type=BATCH_RESULTS_CONTENT_TYPE)

    async def upload_file(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        content_type = exchange.request.headers.get("content-type", "")
        return self._json_response(exchange, self.files.upload(content_type, exchange.body).as_json())

    async def list_files(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        files = [stored.as_json() for stored in self.files.newest_first()]
        return self._json_response(exchange, paginate(files, exchange.request.query))

    async def retrieve_file(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        return self._json_response(exchange, self.files.get(exchange.path_id or "").as_json())

    async def download_file(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        stored = self.files.get(exchange.path_id or "")
        return self._body_response(exchange, self.files.content(stored.id), content_type=stored.mime_type)

    async def delete_file(self, exchange: Exchange, faults: Faults) -> web.StreamResponse:
        return self._json_response(exchange, self.files.delete(exchange.path_id or ""))
