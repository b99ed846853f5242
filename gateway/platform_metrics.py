"""Scrape-time gauges of shared platform state: active tokens, refreshes in the last hour, the
circuit breaker, and the usage writer's backlog. Read from the database and Redis when scraped, so
every instance reports the same values and nothing is added to the request path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from gateway.breaker import BreakerState, get_circuit_breaker
from gateway.metrics import register_state_reader
from proxyproject.lib.redis import get_sync_redis
from tokens.models import AuditEvent, AuditKind, IssuedToken, TokenKind
from usage import queue, spool

BREAKER_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@register_state_reader
def token_gauges() -> Iterable[GaugeMetricFamily]:
    now = timezone.now()
    active = IssuedToken.objects.filter(kind=TokenKind.ACCESS, expires_at__gt=now, revoked_at__isnull=True).count()
    refreshes = AuditEvent.objects.filter(kind=AuditKind.REFRESH, occurred_at__gte=now - dt.timedelta(hours=1)).count()
    yield GaugeMetricFamily("gateway_active_tokens", "Wrapper tokens issued, unexpired and not revoked.", value=active)
    yield GaugeMetricFamily("gateway_token_refreshes_last_hour", "Token refreshes in the last hour.", value=refreshes)


@register_state_reader
def breaker_gauges() -> Iterable[GaugeMetricFamily]:
    snapshot = async_to_sync(get_circuit_breaker().snapshot)()
    yield GaugeMetricFamily(
        "gateway_circuit_breaker_state",
        "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        value=BREAKER_STATE_VALUES[snapshot.state],
    )
    yield GaugeMetricFamily(
        "gateway_circuit_breaker_consecutive_failures", "Consecutive upstream failures.", value=snapshot.failures
    )
    yield GaugeMetricFamily(
        "gateway_circuit_breaker_opens", "Times the breaker opened since its record began.", value=snapshot.opens
    )


@register_state_reader
def usage_backlog_gauges() -> Iterable[GaugeMetricFamily]:
    client = get_sync_redis()
    if client is not None:
        yield GaugeMetricFamily(
            "gateway_usage_backlog_records",
            "Usage records queued in Redis, not yet in the database.",
            value=queue.queued_count(client),
        )
    yield GaugeMetricFamily(
        "gateway_usage_spool_segments",
        "Local spool files of usage records waiting for the database.",
        value=spool.spooled_segment_count(),
    )
