"""A device's policy, enforced before any byte goes upstream: model, rate, spend, in that order.

Cheapest first: the model check needs no I/O; requests-per-window and tokens-per-minute are one
atomic step on the rate limiter (one Redis round trip); the spend reservation runs only when the
device or its organization has a cap. The grant carries what the rest of the request needs: the
device's own `anthropic-ratelimit-*` headers, the spend reservation to settle, and the
tokens-per-minute key with the tokens reserved under it, settled to the real count afterwards.

Tokens per minute are reserved at admission, not counted after the fact: a Messages request
reserves its prompt as the spend caps estimate it (`usage.spend_estimate.estimate_prompt_tokens`:
measured bytes per token, images and PDFs at what the API bills) plus `max_tokens`, clamped to the
limit (so a request larger than the whole limit can still run, alone, in an empty window). The check
and the reservation are one atomic step, so concurrent requests cannot all see room that only one
has: what is reserved and settled in the window never exceeds the limit at admission. The overshoot
bound: the window's real total can pass the limit only by what admitted requests used beyond their
reservation, that is by a prompt that tokenizes below the estimator's bytes per token (a test holds
Claude Code's request above what the bundled fake bills for it) or one clamped request's excess. Settling adds the difference (real minus reserved, usually negative)
to the window the response ends in. With Redis down neither step can be decided, so the
request is refused (SharedStateUnavailable, 503) rather than let through unchecked.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

import orjson
from django.conf import settings

from gateway.batch_spend import BATCH_RESERVATION_SECONDS, BatchEstimate, clamp_batch, estimate_batch
from gateway.body import BATCHES_PATH, MESSAGES_PATH, RequestSummary
from proxyproject.lib.errors import GatewayError, ModelNotAllowed, RateLimited, refuse_when_shared_state_fails
from proxyproject.lib.logging import log_event
from proxyproject.lib.ratelimit import LimitCheck, LimitDecision, get_rate_limiter
from proxyproject.lib.redis import slot_tag
from tokens.identity import DeviceIdentity, DevicePolicy
from usage.counts import TokenCounts, tokens_per_minute
from usage.spend import SpendReservation, reserve_spend, to_nanos
from usage.spend_estimate import CostEstimate, clamped_params, estimate_message_cost, estimate_prompt_tokens

logger = logging.getLogger("gateway.policy")
TOKENS_WINDOW_MS = 60_000
FREE_PATHS = frozenset({"/v1/messages/count_tokens"})


@dataclass(frozen=True, slots=True)
class PolicyGrant:
    rate_limit_headers: tuple[tuple[bytes, bytes], ...]
    reservation: SpendReservation | None
    tokens_key: str | None  # the tokens-per-minute counter, when the device has that limit
    tokens_reserved: int = 0  # reserved under tokens_key at admission; settling adds real minus this
    forwarded_body: bytes | None = None  # replaces the client's body when the spend caps clamped max_tokens


async def settle_tokens_per_minute(grant: PolicyGrant, usage: TokenCounts) -> None:
    """Once the request is over: its tokens-per-minute reservation becomes the tokens it used (the
    difference lands in the window the response ends in)."""
    if grant.tokens_key is None:
        return
    used = tokens_per_minute(usage)
    if used != grant.tokens_reserved:
        await get_rate_limiter().add(grant.tokens_key, TOKENS_WINDOW_MS, used - grant.tokens_reserved)


def check_models_allowed(policy: DevicePolicy, models: tuple[str, ...]) -> None:
    """Every model the request names must match one of the device's patterns (none: any model)."""
    patterns = policy.allowed_models
    if not patterns:
        return
    for model in models:
        if not any(fnmatchcase(model, pattern) for pattern in patterns):
            raise ModelNotAllowed(f"This device is not allowed to use the model {model!r}.")


def requests_key(identity: DeviceIdentity) -> str:
    """The device's limits share a hash tag: they are checked in one script call."""
    return f"{slot_tag('device', identity.device_pk)}:requests"


def tokens_key(identity: DeviceIdentity) -> str:
    return f"{slot_tag('device', identity.device_pk)}:tokens"


@lru_cache(maxsize=16)
def _rfc3339(epoch_seconds: float) -> bytes:
    """Cached: a reset time is a window's end, the same for every request in that window, and
    formatting a datetime is a percent of a request."""
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def rate_limit_headers(kind: bytes, decision: LimitDecision) -> tuple[tuple[bytes, bytes], ...]:
    """The device's limit in the shape of Anthropic's `anthropic-ratelimit-<kind>-*` headers."""
    prefix = b"anthropic-ratelimit-" + kind
    return (
        (prefix + b"-limit", str(decision.limit).encode()),
        (prefix + b"-remaining", str(decision.remaining).encode()),
        (prefix + b"-reset", _rfc3339(decision.reset_at)),
    )


def tokens_bound(path: str, summary: RequestSummary, body: bytes, limit: int) -> int:
    """What a request reserves against tokens per minute: a Messages request its bound (the spend
    estimator's prompt tokens plus max_tokens) clamped to the limit; any other request nothing (it
    is only checked against what is already counted), and nothing is estimated without a limit."""
    if path != MESSAGES_PATH or limit <= 0:
        return 0
    parsed = summary.parsed if summary.parsed is not None else orjson.loads(body)
    return min(estimate_prompt_tokens(parsed, body) + summary.max_tokens, limit)


async def check_rate_limits(
    identity: DeviceIdentity, *, counts_tokens: bool, tokens_to_reserve: int = 0
) -> tuple[tuple[tuple[bytes, bytes], ...], str | None]:
    """One atomic step: this request is counted against requests-per-window and its tokens
    reserved against tokens-per-minute (or, reserving none, the device must be under it). Raises
    RateLimited (429, retry-after) with the same headers a success would carry."""
    policy = identity.policy
    checks = [LimitCheck(requests_key(identity), policy.requests_per_window, policy.window_ms)]
    limit_tokens = counts_tokens and policy.tokens_per_minute > 0
    if limit_tokens:
        checks.append(LimitCheck(tokens_key(identity), policy.tokens_per_minute, TOKENS_WINDOW_MS, cost=tokens_to_reserve))
    decisions = await get_rate_limiter().hit(checks)
    headers = rate_limit_headers(b"requests", decisions[0])
    if limit_tokens:
        headers += rate_limit_headers(b"tokens", decisions[1])
    refused = [decision for decision in decisions if not decision.allowed]
    if refused:
        what = "requests" if not decisions[0].allowed else "tokens per minute"
        raise RateLimited(
            f"Rate limit exceeded for this device ({what}).",
            retry_after=max(decision.retry_after for decision in refused),
            headers={name.decode(): value.decode() for name, value in headers},
        )
    return headers, tokens_key(identity) if limit_tokens else None


def has_spend_caps(policy: DevicePolicy) -> bool:
    return any(
        cap is not None
        for cap in (
            policy.device_daily_cap_usd,
            policy.device_weekly_cap_usd,
            policy.device_monthly_cap_usd,
            policy.org_daily_cap_usd,
            policy.org_weekly_cap_usd,
            policy.org_monthly_cap_usd,
        )
    )


@dataclass(frozen=True, slots=True)
class SpendAdmission:
    reservation: SpendReservation | None
    forwarded_body: bytes | None = None  # the body with max_tokens lowered, when the caps clamped it


_ClampWith = BatchEstimate | tuple[dict[str, Any], CostEstimate] | None


def _estimate_bounds(path: str, summary: RequestSummary, body: bytes, now: dt.datetime) -> tuple[Decimal, Decimal, _ClampWith]:
    """(full bound, minimum, what to clamp with) of a request; zero for one that costs nothing."""
    min_output = settings.SPEND_CAP_MIN_OUTPUT_TOKENS
    if path == BATCHES_PATH:
        batch = estimate_batch(body, now, min_output_tokens=min_output)
        return batch.full, batch.minimum, batch
    if summary.model and path not in FREE_PATHS:
        parsed = summary.parsed if summary.parsed is not None else orjson.loads(body)
        estimate = estimate_message_cost(summary.model, parsed, body, now, min_output_tokens=min_output)
        return estimate.full, estimate.minimum, (parsed, estimate)
    return Decimal(0), Decimal(0), None


def _clamped_body(clamp_with: _ClampWith, granted: Decimal) -> bytes:
    if isinstance(clamp_with, BatchEstimate):
        return clamp_batch(clamp_with, granted)
    assert clamp_with is not None
    parsed, estimate = clamp_with
    return orjson.dumps(clamped_params(parsed, estimate.affordable_max_tokens(granted)))


async def reserve_estimate(
    identity: DeviceIdentity, summary: RequestSummary, *, path: str, body: bytes, request_id: str
) -> SpendAdmission:
    """Reserve the request's cost bound (`usage.spend_estimate`): a batch all its requests at batch
    prices, for its lifetime (`gateway.batch_spend`). By the device's SPEND_CAP_ENFORCEMENT:
    `clamp` takes what the caps have left when that covers the minimum answer and lowers max_tokens
    to fit it; `strict` refuses unless the whole bound fits; `soft` reserves and never refuses. A
    device already at a cap is refused even when the amount is 0 (a request whose model has no price)."""
    full = minimum = Decimal(0)
    clamp_with: _ClampWith = None
    ttl_seconds = BATCH_RESERVATION_SECONDS if path == BATCHES_PATH else None
    try:
        full, minimum, clamp_with = _estimate_bounds(path, summary, body, dt.datetime.now(dt.UTC))
    except LookupError as exc:
        log_event(logger, "No model prices in force; reserving nothing", logging.WARNING, requestId=request_id, error=str(exc))
    mode = identity.policy.spend_cap_enforcement
    reservation = await reserve_spend(
        identity,
        full,
        request_id,
        minimum=minimum if mode == "clamp" else None,
        soft=mode == "soft",
        ttl_seconds=ttl_seconds,
    )
    if reservation is None or clamp_with is None or mode != "clamp" or reservation.nanos >= to_nanos(full):
        return SpendAdmission(reservation)
    log_event(logger, "Request clamped to the spend cap", requestId=request_id, reserved=str(reservation.amount), bound=str(full))
    return SpendAdmission(reservation, _clamped_body(clamp_with, reservation.amount))


async def enforce_policy(
    identity: DeviceIdentity, summary: RequestSummary, *, path: str, body: bytes, request_id: str
) -> PolicyGrant:
    """Raises ModelNotAllowed (403), RateLimited (429), SpendCapReached (429, no retry) or
    SharedStateUnavailable (503, retry-after) when Redis does not answer."""
    models = summary.models
    check_models_allowed(identity.policy, models)
    tokens_reserved = tokens_bound(path, summary, body, identity.policy.tokens_per_minute)
    with refuse_when_shared_state_fails("rate_limit", request_id):
        headers, counted_tokens_key = await check_rate_limits(
            identity, counts_tokens=bool(models), tokens_to_reserve=tokens_reserved
        )
    tokens_reserved = tokens_reserved if counted_tokens_key else 0
    spend = SpendAdmission(None)
    if models and has_spend_caps(identity.policy):
        try:
            with refuse_when_shared_state_fails("spend_cap", request_id):
                spend = await reserve_estimate(identity, summary, path=path, body=body, request_id=request_id)
        except GatewayError:
            if counted_tokens_key and tokens_reserved:
                await get_rate_limiter().add(counted_tokens_key, TOKENS_WINDOW_MS, -tokens_reserved)
            raise
    return PolicyGrant(headers, spend.reservation, counted_tokens_key, tokens_reserved, spend.forwarded_body)
