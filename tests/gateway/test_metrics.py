"""Metric labels stay bounded, and per-request samples appear in the Prometheus exposition."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from gateway.metrics import LATENCY_BUCKETS, BoundedLabel, endpoint_label, observe_request, render_metrics
from tests.support import apoll_until
from usage.events import UsageEvent


def test_endpoint_labels_replace_resource_ids():
    assert endpoint_label("/v1/messages") == "/v1/messages"
    assert endpoint_label("/v1/messages/count_tokens") == "/v1/messages/count_tokens"
    assert endpoint_label("/v1/models/claude-opus-4-8") == "/v1/models/{id}"
    assert endpoint_label("/v1/messages/batches") == "/v1/messages/batches"
    assert endpoint_label("/v1/messages/batches/msgbatch_01ABC/results") == "/v1/messages/batches/{id}/results"
    assert endpoint_label("/v1/files/file_011CN") == "/v1/files/{id}"
    assert endpoint_label("/v1/" + "/".join(["a"] * 50)) == "/v1/a/a/a/a/a"


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{wanted}}}")


def gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no gauge {name}")


def observed_event(model: str, latency_ms: float, **fields) -> UsageEvent:
    return UsageEvent(
        request_id=f"req_{uuid.uuid4().hex[:8]}",
        occurred_at=dt.datetime.now(dt.UTC),
        endpoint="/v1/messages",
        method="POST",
        model=model,
        status=200,
        latency_ms=latency_ms,
        **{"input_tokens": 10, "output_tokens": 5, "ttfb_ms": latency_ms / 2, **fields},
    )


def test_observed_request_is_counted_with_tokens_and_spend(db):
    model = f"claude-test-{uuid.uuid4().hex[:8]}"
    event = observed_event(model, 250.0, input_tokens=120, output_tokens=30, cache_read_tokens=1000, ttfb_ms=40.0)
    observe_request(event, Decimal("0.0123"), upstream_latency_ms=35.0)
    observe_request(event, Decimal("0.0123"), upstream_latency_ms=35.0)
    text = render_metrics().decode()
    assert sample(text, "gateway_requests_total", endpoint="/v1/messages", method="POST", status="200", model=model) == 2.0
    assert sample(text, "gateway_tokens_total", model=model, kind="input") == 240.0
    assert sample(text, "gateway_tokens_total", model=model, kind="cache_read") == 2000.0
    assert sample(text, "gateway_spend_usd_total", model=model) == 0.0246
    assert 'gateway_request_duration_seconds_bucket{endpoint="/v1/messages",le="0.25"}' in text


def written_samples() -> str:
    """What every worker's files hold now, without writing this process's gathered counts first."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry).decode()


def written_requests(model: str) -> float:
    text = written_samples()
    return sample(text, "gateway_requests_total", model=model) if f'model="{model}"' in text else 0.0


async def test_gathered_observations_render_as_prometheus_client_would_have_counted_them(db):
    endpoint = f"/v1/gathered_{uuid.uuid4().hex[:8]}"
    reference = Histogram(
        "reference_duration_seconds", "Observed directly.", ["endpoint"], buckets=LATENCY_BUCKETS, registry=None
    )
    seconds = [0.0004, 0.001, 0.003, 0.003, 0.7, 45.0, 900.0]
    for value in seconds:
        event = observed_event("claude-gathered", value * 1000)
        event.endpoint = endpoint
        observe_request(event, None)
        reference.labels(endpoint).observe(value)
    text = await sync_to_async(render_metrics)()
    text = text.decode()
    for bound in [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]:
        ours = sample(text, "gateway_request_duration_seconds_bucket", endpoint=endpoint, le=bound)
        assert ours == sample(text, "reference_duration_seconds_bucket", endpoint=endpoint, le=bound), bound
    for suffix in ("_count", "_sum"):
        ours = sample(text, f"gateway_request_duration_seconds{suffix}", endpoint=endpoint)
        assert ours == pytest.approx(sample(text, f"reference_duration_seconds{suffix}", endpoint=endpoint))
    assert sample(text, "gateway_request_duration_seconds_count", endpoint=endpoint) == len(seconds)


async def test_a_worker_writes_its_gathered_counts_within_a_second_without_a_scrape(db):
    model = f"claude-unscraped-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        observe_request(observed_event(model, 12.0), Decimal("0.001"))
    assert written_requests(model) == 0.0
    await apoll_until(lambda: written_requests(model) == 3.0, 5.0, "the flush")
    assert sample(written_samples(), "gateway_tokens_total", model=model, kind="output") == 15.0


def test_counts_gathered_on_an_event_loop_that_closed_are_written_with_the_next_loops(db):
    """Tests and management commands run many event loops in one process: a flush that was due on a
    closed loop must not keep the next loop's counts from being written."""
    model = f"claude-two-loops-{uuid.uuid4().hex[:8]}"

    async def observe_once() -> None:
        observe_request(observed_event(model, 3.0), None)

    asyncio.run(observe_once())

    async def observe_and_wait() -> None:
        await observe_once()
        await apoll_until(lambda: written_requests(model) == 2.0, 5.0, "the flush")

    asyncio.run(observe_and_wait())


async def scrape(headers: dict[str, str]) -> tuple[int, str]:
    from django.test import AsyncClient

    response = await AsyncClient().get("/metrics", headers=headers)
    return response.status_code, response.content.decode()


async def test_metrics_need_a_credential(transactional_db):
    status, body = await scrape({})
    assert status == 401
    assert '"error_code":"invalid_token"' in body


async def test_scrape_token_reads_request_counts_and_platform_state(token, fake_upstream, settings):
    from tests.gateway.conftest import call_gateway
    from tests.support import MESSAGE_BODY

    settings.METRICS_TOKEN = "scrape-" + "s" * 30
    answer = await call_gateway(
        "POST",
        "/v1/messages",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        body=MESSAGE_BODY,
    )
    assert answer.status == 200
    status, text = await scrape({"authorization": f"Bearer {settings.METRICS_TOKEN}"})
    assert status == 200
    assert (
        sample(text, "gateway_requests_total", endpoint="/v1/messages", method="POST", status="200", model="claude-sonnet-4-5")
        >= 1.0
    )
    assert sample(text, "gateway_upstream_duration_seconds_count", endpoint="/v1/messages") >= 1.0
    assert gauge(text, "gateway_active_tokens") >= 1.0
    assert gauge(text, "gateway_circuit_breaker_state") == 0.0
    assert gauge(text, "gateway_usage_spool_segments") >= 0.0


async def test_operator_api_key_may_scrape(transactional_db):
    from asgiref.sync import sync_to_async

    from tokens.operators import create_operator_api_key

    _, secret = await sync_to_async(create_operator_api_key)(name="prometheus", created_by=None)
    status, text = await scrape({"authorization": f"Bearer {secret}"})
    assert status == 200
    assert gauge(text, "gateway_token_refreshes_last_hour") == 0.0


def test_models_and_paths_that_clients_choose_cannot_grow_the_metrics_without_bound(db, monkeypatch):
    monkeypatch.setattr("gateway.metrics._bounded_model", BoundedLabel(limit=3))
    monkeypatch.setattr("gateway.metrics._bounded_endpoint", BoundedLabel(limit=2))
    prefix = f"made-up-{uuid.uuid4().hex[:8]}"
    for index in range(5):
        observe_request(
            UsageEvent(
                request_id=f"req_{index}",
                occurred_at=dt.datetime.now(dt.UTC),
                endpoint=f"/v1/made_up_{index}",
                method="POST",
                model=f"{prefix}-{index}",
                status=404,
                latency_ms=1.0,
            ),
            None,
        )
    text = render_metrics().decode()
    counted = {
        line.split('model="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("gateway_requests_total{") and (prefix in line or 'model="other"' in line)
    }
    assert counted == {f"{prefix}-0", f"{prefix}-1", f"{prefix}-2", "other"}
    assert sample(text, "gateway_request_errors_total", endpoint="other", status="404", error_type="http_error") >= 3.0


def test_the_usage_backlog_counts_the_records_of_every_queue_shard(redis_required, settings):
    from gateway.platform_metrics import usage_backlog_gauges
    from proxyproject.lib.redis import get_sync_redis
    from usage import queue

    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-backlog-{uuid.uuid4().hex[:6]}"  # a queue of its own
    client = get_sync_redis()
    filled = {0: 3, 7: 2, queue.drained_shards()[-1]: 1}
    try:
        for shard, count in filled.items():
            client.rpush(queue.queue_key(shard), *[b"{}"] * count)
        [backlog] = [family for family in usage_backlog_gauges() if family.name == "gateway_usage_backlog_records"]
        assert backlog.samples[0].value == 6
    finally:
        for shard in filled:
            client.delete(queue.queue_key(shard))
