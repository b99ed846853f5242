"""A device's policy, enforced before any byte goes upstream: model, rate, spend, in that order.

Cheapest first: the model check needs no I/O; requests-per-window and tokens-per-minute are one
atomic step on the rate limiter (one Redis round trip); the spend reservation runs only when the
device or its organization has a cap. The grant carries what the rest of the request needs: the
device's own `anthropic-ratelimit-*` headers, the spend reservation to settle, and the key under
which the tokens it used are counted afterwards. With Redis down neither step can be decided, so the
request is refused (SharedStateUnavailable, 503) rather than let through unchecked.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase

from gateway.body import RequestSummary
from gateway.errors import ModelNotAllowed, RateLimited, refuse_when_shared_state_fails
from gateway.ratelimit import LimitCheck, LimitDecision, get_rate_limiter
from proxyproject.logging import log_event
from tokens.identity import DeviceIdentity, DevicePolicy
from usage.pricing import worst_case_cost
from usage.spend import SpendReservation, reserve_spend

logger = logging.getLogger("gateway.policy")
TOKENS_WINDOW_MS = 60_000
FREE_PATHS = frozenset({"/v1/messages/count_tokens"})


@dataclass(frozen=True, slots=True)
class PolicyGrant:
    rate_limit_headers: tuple[tuple[bytes, bytes], ...]
    reservation: SpendReservation | None
    tokens_key: str | None  # the tokens-per-minute counter, when the device has that limit


def check_models_allowed(policy: DevicePolicy, models: tuple[str, ...]) -> None:
    """Every model the request names must match one of the device's patterns (none: any model)."""
    patterns = policy.allowed_models
    if not patterns:
        return
    for model in models:
        if not any(fnmatchcase(model, pattern) for pattern in patterns):
            raise ModelNotAllowed(f"This device is not allowed to use the model {model!r}.")


def requests_key(identity: DeviceIdentity) -> str:
    return f"device:{identity.device_pk}:requests"


def tokens_key(identity: DeviceIdentity) -> str:
    return f"device:{identity.device_pk}:tokens"


def _rfc3339(epoch_seconds: float) -> bytes:
    return dt.datetime.fromtimestamp(epoch_seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def rate_limit_headers(kind: bytes, decision: LimitDecision) -> tuple[tuple[bytes, bytes], ...]:
    """The device's limit in the shape of Anthropic's `anthropic-ratelimit-<kind>-*` headers."""
    prefix = b"anthropic-ratelimit-" + kind
    return (
        (prefix + b"-limit", str(decision.limit).encode()),
        (prefix + b"-remaining", str(decision.remaining).encode()),
        (prefix + b"-reset", _rfc3339(decision.reset_at)),
    )


async def check_rate_limits(identity: DeviceIdentity, *, counts_tokens: bool) -> tuple[tuple[tuple[bytes, bytes], ...], str | None]:
    """One atomic step: this request is counted against requests-per-window, and the device must be
    under its tokens-per-minute (tokens are added once the response says how many). Raises
    RateLimited (429, retry-after) with the same headers a success would carry."""
    policy = identity.policy
    checks = [LimitCheck(requests_key(identity), policy.requests_per_window, policy.window_ms)]
    limit_tokens = counts_tokens and policy.tokens_per_minute > 0
    if limit_tokens:
        checks.append(LimitCheck(tokens_key(identity), policy.tokens_per_minute, TOKENS_WINDOW_MS, cost=0))
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
    return any(cap is not None for cap in (policy.device_daily_cap_usd, policy.device_monthly_cap_usd, policy.org_daily_cap_usd, policy.org_monthly_cap_usd))


async def reserve_worst_case(identity: DeviceIdentity, summary: RequestSummary, *, path: str, body_bytes: int, request_id: str) -> SpendReservation | None:
    """Reserve what this request could cost at most; a device already at a cap is refused even for
    requests whose cost is not known up front (a batch is billed when its results land)."""
    amount = Decimal(0)
    if summary.model and path not in FREE_PATHS:
        try:
            amount = worst_case_cost(summary.model, body_bytes, summary.max_tokens, dt.datetime.now(dt.timezone.utc))
        except LookupError as exc:
            log_event(logger, "No model prices in force; reserving nothing", logging.WARNING, requestId=request_id, error=str(exc))
    return await reserve_spend(identity, amount, request_id)


async def enforce_policy(identity: DeviceIdentity, summary: RequestSummary, *, path: str, body_bytes: int, request_id: str) -> PolicyGrant:
    """Raises ModelNotAllowed (403), RateLimited (429), SpendCapReached (429, no retry) or
    SharedStateUnavailable (503, retry-after) when Redis does not answer."""
    models = summary.models
    check_models_allowed(identity.policy, models)
    with refuse_when_shared_state_fails("rate_limit", request_id):
        headers, counted_tokens_key = await check_rate_limits(identity, counts_tokens=bool(models))
    reservation = None
    if models and has_spend_caps(identity.policy):
        with refuse_when_shared_state_fails("spend_cap", request_id):
            reservation = await reserve_worst_case(identity, summary, path=path, body_bytes=body_bytes, request_id=request_id)
    return PolicyGrant(headers, reservation, counted_tokens_key)
