"""The request flow of every /v1/* request, in the order of ARCHITECTURE.md:

    canonical path, route and host (before any other work) ▶ authenticate ▶ read the body (size limit; model/stream/max_tokens) ▶ policy (model, rate, spend)
    ▶ circuit breaker ▶ upstream (one retry on another key if the connection failed before any
    response) ▶ relay the answer ▶ bookkeeping (breaker outcome, spend, tokens per minute, usage
    event, the seed's log lines)

A usage event is submitted for every request that got past authentication, whatever happened next,
and for one refused by a failure of the gateway's own (5xx) before the device was known.
While the upstream is working, a second task listens for the client leaving: the upstream exchange
is then cancelled at once (which closes its connection) and the usage seen so far still recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable
from decimal import Decimal

import httpx
from django.conf import settings

from gateway import relay
from gateway.body import ClientDisconnected, RequestSummary, check_body_readable, check_declared_length, read_body, summarize_body
from gateway.breaker import Admission, get_circuit_breaker, is_failure_status
from gateway.channel import ClientChannel, Receive, Scope, Send
from gateway.headers import header_value, upstream_request_headers
from gateway.hosts import check_host_allowed
from gateway.key_check import KEY_REFUSED_STATUSES
from gateway.keypool import HeldKey, choose_upstream_key, confirm_upstream_key_refused, report_upstream_result
from gateway.metrics import observe_request
from gateway.model_alias import apply_model_alias
from gateway.owned_exchange import (
    after_owned_response,
    answer_owned_list,
    batch_results_priced_at,
    check_owned_access,
    creates_resource,
    is_list,
    record_created,
    send_created,
)
from gateway.ownership import OwnedPath, owned_path_for
from gateway.policy import PolicyGrant, enforce_policy, settle_tokens_per_minute
from gateway.relay import RelayOutcome
from gateway.routes import Route, resolve_route
from gateway.upstream import build_upstream_request, gateway_error_for, retryable_before_response, send_upstream
from gateway.usage_tally import UsageTally, estimate_cut_stream_output
from proxyproject.lib.client_address import client_ip_from_scope
from proxyproject.lib.errors import (
    CircuitOpen,
    GatewayError,
    GatewayShuttingDown,
    NoUpstreamKey,
    UpstreamAuthFailed,
    UpstreamTimeout,
    UpstreamUnreachable,
    new_request_id,
)
from proxyproject.lib.logging import log_event
from tokens.authentication import authenticate_wrapper_token, extract_bearer_token
from tokens.identity import DeviceIdentity
from usage.accounting import account_usage
from usage.counts import cache_write_tokens
from usage.events import UsageEvent

logger = logging.getLogger("gateway.proxy")
CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")
SESSION_HEADER = b"x-claude-code-session-id"


def stage_log_level() -> int:
    """The seed's four lines per request: "Request completed" always at INFO; "Incoming request",
    "Proxying request to Anthropic" and "Usage tracked" at INFO when LOG_REQUEST_STAGES is on (the
    default in development), else at DEBUG: the seed asks for no verbose logs in production, and
    four JSON lines per request cost 9% of a worker's CPU."""
    return logging.INFO if settings.LOG_REQUEST_STAGES else logging.DEBUG


CLIENT_CLOSED_REQUEST = 499  # status recorded when the client left before any response


class ProxiedRequest:
    """One /v1 request's state from arrival to bookkeeping."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.receive = receive
        self.client = ClientChannel(send)
        self.request_id = new_request_id()
        self.started = time.perf_counter()
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.raw_path: str = (scope.get("raw_path") or self.path.encode()).decode("latin-1")
        self.query: bytes = scope.get("query_string", b"")
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.server: tuple[str, int] | None = scope.get("server")
        self.route: Route | None = None
        self.client_ip = client_ip_from_scope(scope)
        self.tally = UsageTally()
        self.event: UsageEvent | None = None
        self.grant: PolicyGrant | None = None
        self.admission: Admission | None = None
        self.upstream_ok: bool | None = None  # the breaker's view of the outcome, once known
        self.status = 0
        self.error_code: str | None = None  # the gateway's refusal, or the upstream error relayed
        self.client_gone = False
        self.upstream_latency_ms: float | None = None
        self.held_key = HeldKey()  # counted in flight on its key until bookkeeping
        self.cost: Decimal | None = None
        self.owned: OwnedPath | None = None  # set when the path names batches or files
        self.batch_created_at: dt.datetime | None = None  # a batch's results are priced at its creation

    async def run(self) -> None:
        log_event(logger, "Incoming request", stage_log_level(), requestId=self.request_id, method=self.method, path=self.path)
        try:
            self.route = route = resolve_route(self.method, self.raw_path)
            check_host_allowed(self.headers, self.server)
            identity = await authenticate_wrapper_token(self._credential())
            self.event = self._new_event(identity)
            check_declared_length(header_value(self.headers, b"content-length"), settings.MAX_REQUEST_BODY_BYTES)
            check_body_readable(route, header_value(self.headers, b"content-encoding"))
            body = await read_body(self.receive, settings.MAX_REQUEST_BODY_BYTES)
            aliased = apply_model_alias(identity.policy, body, summarize_body(route, body))
            body, summary = aliased.body, aliased.summary
            self.event.model, self.event.requested_model = summary.model, aliased.requested_model
            self.owned = owned_path_for(route, self.path)
            if self.owned is not None:
                await check_owned_access(self.owned, identity)
                self.batch_created_at = await batch_results_priced_at(self.method, self.owned)
            self.grant = await enforce_policy(identity, summary, path=self.path, body=body, request_id=self.request_id)
            body = self.grant.forwarded_body or body
            self.admission = await get_circuit_breaker().admit(str(identity.device_pk))
            if not self.admission.allowed:
                raise CircuitOpen(retry_after=self.admission.retry_after)
            await self._forward_until_done_or_gone(body, summary, identity)
        except GatewayError as error:
            await self._refuse(error)
        except ClientDisconnected:
            self.client_gone = True
        except asyncio.CancelledError:
            if self.client_gone:
                raise
            # The server cancels what is still running once its shutdown grace period is over.
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            await self._end_for_shutdown()
        except Exception:  # a bug must still answer in the envelope, never crash the worker
            logger.exception("Unexpected error in the proxy", extra={"event_fields": {"requestId": self.request_id}})
            await self._refuse(GatewayError())
        finally:
            await self._bookkeep()

    def _credential(self) -> str:
        found = {name.decode(): value.decode("latin-1") for name, value in self.headers if name in CREDENTIAL_HEADERS}
        return extract_bearer_token(found) or ""

    def _new_event(self, identity: DeviceIdentity | None) -> UsageEvent:
        session = header_value(self.headers, SESSION_HEADER)
        return UsageEvent(
            request_id=self.request_id,
            occurred_at=dt.datetime.now(dt.UTC),
            endpoint=self.path,
            method=self.method,
            device_id=identity.device_id if identity else None,
            device_pk=identity.device_pk if identity else None,
            org_id=identity.org_id if identity else None,
            person_id=identity.person_id if identity else None,
            session_id=session.decode("latin-1")[:200] if session else None,
        )

    async def _forward_until_done_or_gone(self, body: bytes, summary: RequestSummary, identity: DeviceIdentity) -> None:
        """The exchange runs in this task; a watcher task cancels it if the client leaves first.
        (Not two tasks raced with asyncio.wait: a task and a wait per request cost 2% of a worker.)"""
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(self._cancel_when_client_leaves(task))
        try:
            await self._forward(body, summary, identity)
        except asyncio.CancelledError:
            # Ours (the client left): handled here. The server's too (shutdown): passed on.
            if not (self.client_gone and task.uncancel() == 0):
                raise
        finally:
            watcher.cancel()

    async def _cancel_when_client_leaves(self, task: asyncio.Task[None]) -> None:
        """After the body, the only message left to receive is the client going away; once the
        response is complete, that is just the end of the exchange."""
        while (await self.receive())["type"] != "http.disconnect":
            continue
        if not self.client.finished:
            self.client_gone = True
            task.cancel()

    async def _forward(self, body: bytes, summary: RequestSummary, identity: DeviceIdentity) -> None:
        owned = self.owned
        if owned is not None and is_list(self.method, owned):
            self.status = await answer_owned_list(self, owned, identity)
            self.upstream_ok = not is_failure_status(self.status)
            return
        response = await self._open_upstream(body, summary, identity)
        try:
            outcome = await self._relay(response, owned, identity)
        finally:
            await response.aclose()
        self._record_relay_outcome(outcome)
        if owned is not None:
            await after_owned_response(owned, method=self.method, status=self.status, batch_results=outcome.batch_results)

    async def _relay(self, response: httpx.Response, owned: OwnedPath | None, identity: DeviceIdentity) -> RelayOutcome:
        """What is known before the relay starts is recorded before it: a relay cut by the client
        leaving (a cancellation) returns no outcome, yet its record must say it streamed and its
        status must reach the breaker."""
        event = self.event
        assert event is not None
        self.status = response.status_code
        self.upstream_ok = not is_failure_status(self.status)
        try:
            if owned is not None and creates_resource(self.method, owned, self.status):
                return await self._relay_created(response, owned, identity)
            event.streamed = relay.relays_as_stream(response)
            return await relay.relay_response(self, response)
        except (UpstreamUnreachable, UpstreamTimeout):
            self.upstream_ok = False  # the upstream broke off before anything reached the client
            raise

    async def _relay_created(self, response: httpx.Response, owned: OwnedPath, identity: DeviceIdentity) -> RelayOutcome:
        """A reservation handed to a created batch leaves the grant before the client can leave,
        so the bookkeeping never releases what the batch holds."""
        created = await record_created(self, owned, identity, response)
        if created.reservation_handed_over and self.grant is not None:
            self.grant = dataclasses.replace(self.grant, reservation=None)
        await send_created(self, response, created)
        return RelayOutcome()

    def _record_relay_outcome(self, outcome: RelayOutcome) -> None:
        if outcome.upstream_failed:
            self.upstream_ok = False
            if self.event is not None:
                self.event.error_type = outcome.upstream_error_code

    async def _open_upstream(self, body: bytes, summary: RequestSummary, identity: DeviceIdentity) -> httpx.Response:
        """Send upstream; a connection that failed before any response, or a key the upstream
        refused, is tried once more on another key. Nothing has reached the client yet, so the
        retry is invisible to it."""
        tried: list[str] = []
        key_refused = False
        while True:
            try:
                credential = await choose_upstream_key(exclude=tried)
            except NoUpstreamKey as exc:
                if key_refused:
                    raise UpstreamAuthFailed() from exc
                raise
            await self.held_key.hold(credential)
            tried.append(credential.name)
            log_event(
                logger,
                "Proxying request to Anthropic",
                stage_log_level(),
                requestId=self.request_id,
                deviceId=identity.device_id,
                model=summary.model,
                stream=summary.stream,
                upstreamKey=credential.name,
                attempt=len(tried),
            )
            request = build_upstream_request(
                self.method, self.raw_path, self.query, upstream_request_headers(self.headers, credential), body
            )
            sent_at = time.perf_counter()
            try:
                response = await send_upstream(request)
                self.upstream_latency_ms = (time.perf_counter() - sent_at) * 1000
            except httpx.TransportError as exc:
                report_upstream_result(credential, exception=exc)
                if len(tried) == 1 and retryable_before_response(exc):
                    continue
                self.upstream_ok = False
                raise gateway_error_for(exc) from exc
            report_upstream_result(credential, status=response.status_code, retry_after=response.headers.get("retry-after"))
            if self.event is not None:
                self.event.upstream_key_name = credential.name
                self.event.upstream_request_id = response.headers.get("request-id")
            if response.status_code not in KEY_REFUSED_STATUSES:
                return response
            key_refused = await confirm_upstream_key_refused(credential, response.status_code)
            if not key_refused and response.status_code != 401:
                return response  # a 403 about the request (a model or beta it may not use): the client's to see
            await discard(response)
            if not (key_refused and len(tried) == 1):
                raise UpstreamAuthFailed()

    async def _refuse(self, error: GatewayError) -> None:
        self.status = error.status
        self.error_code = error.error_code
        if self.event is None and error.status >= 500:
            # A failure of ours before the device is known (its database away, say) is still a request
            # the operator must see: recorded without a device. Refused credentials (4xx) are not.
            self.event = self._new_event(None)
        if self.event is not None:
            self.event.error_type = error.error_code
        if not self.client.started:
            await self.client.send_error(error, self.request_id, self.grant.rate_limit_headers if self.grant else ())

    async def _end_for_shutdown(self) -> None:
        """End the exchange the way the API ends one it cannot finish, instead of letting the server
        cut it mid-event: a stream gets a retryable `event: error`, a request not yet answered the
        same error as JSON. A passthrough body already under way is left unfinished (a truncated
        body must not look complete). Recorded as interrupted, with the tokens seen so far."""
        error = GatewayShuttingDown()
        self.error_code = error.error_code
        if self.event is not None:
            self.event.error_type = error.error_code
        log_event(logger, "Request ended by shutdown", logging.WARNING, requestId=self.request_id, started=self.client.started)
        if not self.client.started:
            self.status = error.status
            await self.client.send_error(error, self.request_id)
        elif not self.client.finished and self.event is not None and self.event.streamed:
            await self.client.write(relay.error_event(error, self.request_id))
            await self.client.finish()

    async def _bookkeep(self) -> None:
        """After the response: nothing here may fail the request or delay what the client got, and
        no step's failure (Redis gone mid-stream, say) may skip another: the usage record above all."""
        finished = time.perf_counter()
        latency_ms = (finished - self.started) * 1000
        ttfb_ms = (self.client.first_byte_at - self.started) * 1000 if self.client.first_byte_at is not None else None
        if self.client_gone and not self.client.started:
            self.status = CLIENT_CLOSED_REQUEST
        await self._survive("upstream key", self.held_key.release())
        await self._survive("circuit breaker", self._record_breaker_outcome())
        if self.event is not None:
            await self._survive("usage and spend", self._account_usage(latency_ms, ttfb_ms))
            if self.grant is not None:
                await self._survive("tokens per minute", settle_tokens_per_minute(self.grant, self.event))
        await self._survive("metrics", self._observe(latency_ms, ttfb_ms))
        log_event(
            logger,
            "Request completed",
            requestId=self.request_id,
            status=self.status,
            errorCode=self.error_code or (self.event.error_type if self.event is not None else None),
            latencyMs=round(latency_ms, 2),
            ttfbMs=round(ttfb_ms, 2) if ttfb_ms is not None else None,
            clientDisconnected=self.client_gone,
            clientIp=self.client_ip,
        )

    async def _survive(self, step: str, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:
            logger.exception("Bookkeeping failed", extra={"event_fields": {"requestId": self.request_id, "step": step}})

    async def _observe(self, latency_ms: float, ttfb_ms: float | None) -> None:
        observe_request(self.event or self._unauthenticated_event(latency_ms, ttfb_ms), self.cost, self.upstream_latency_ms)

    def _unauthenticated_event(self, latency_ms: float, ttfb_ms: float | None) -> UsageEvent:
        """Refused before we knew the device: not a usage record, but still a request to count."""
        return UsageEvent(
            request_id=self.request_id,
            occurred_at=dt.datetime.now(dt.UTC),
            endpoint=self.path,
            method=self.method,
            status=self.status,
            latency_ms=latency_ms,
            ttfb_ms=ttfb_ms,
            error_type="authentication_error" if self.status == 401 else None,
        )

    async def _record_breaker_outcome(self) -> None:
        if self.admission is not None and self.admission.allowed and self.upstream_ok is not None and self.event is not None:
            await get_circuit_breaker().record(self.admission, device=str(self.event.device_pk), success=self.upstream_ok)

    async def _account_usage(self, latency_ms: float, ttfb_ms: float | None) -> None:
        """Complete the usage event with what the response showed; `usage` records, prices and
        settles it. (A created batch's spend reservation is the batch's by now: the grant no longer
        holds it.)"""
        event = self.event
        assert event is not None
        event.status = self.status
        event.latency_ms = round(latency_ms, 3)
        event.ttfb_ms = round(ttfb_ms, 3) if ttfb_ms is not None else None
        event.client_disconnected = self.client_gone
        self.tally.apply_to(event)
        if event.streamed:
            estimate_cut_stream_output(self.tally, event)
        if self.tally.error_type and not event.error_type:
            event.error_type = self.tally.error_type
        reservation = self.grant.reservation if self.grant is not None else None
        self.cost = await account_usage(event, usage_reported=self.tally.seen, reservation=reservation)
        log_event(
            logger,
            "Usage tracked",
            stage_log_level(),
            requestId=self.request_id,
            deviceId=event.device_id,
            model=event.model,
            inputTokens=event.input_tokens,
            outputTokens=event.output_tokens,
            cacheReadTokens=event.cache_read_tokens,
            cacheWriteTokens=cache_write_tokens(event),
            streamed=event.streamed,
            clientDisconnected=self.client_gone,
        )


async def discard(response: httpx.Response) -> None:
    """Read a small error answer to its end, which gives its connection back to the pool."""
    try:
        await response.aread()
    except httpx.HTTPError:
        pass
    finally:
        await response.aclose()


async def proxy_request(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point of /v1/*."""
    await ProxiedRequest(scope, receive, send).run()
