"""Metric labels stay bounded, and per-request samples appear in the Prometheus exposition."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from gateway.metrics import endpoint_label, observe_request, render_metrics
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


def test_observed_request_is_counted_with_tokens_and_spend():
    model = f"claude-test-{uuid.uuid4().hex[:8]}"
    event = UsageEvent(
        request_id="req_1", occurred_at=dt.datetime.now(dt.timezone.utc), endpoint="/v1/messages", method="POST",
        model=model, status=200, input_tokens=120, output_tokens=30, cache_read_tokens=1000, latency_ms=250.0, ttfb_ms=40.0,
    )
    observe_request(event, Decimal("0.0123"), upstream_latency_ms=35.0)
    observe_request(event, Decimal("0.0123"), upstream_latency_ms=35.0)
    text = render_metrics().decode()
    assert sample(text, "gateway_requests_total", endpoint="/v1/messages", method="POST", status="200", model=model) == 2.0
    assert sample(text, "gateway_tokens_total", model=model, kind="input") == 240.0
    assert sample(text, "gateway_tokens_total", model=model, kind="cache_read") == 2000.0
    assert sample(text, "gateway_spend_usd_total", model=model) == 0.0246
    assert 'gateway_request_duration_seconds_bucket{endpoint="/v1/messages",le="0.25"}' in text
