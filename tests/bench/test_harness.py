"""The benchmark harness itself: its arithmetic, its table, its HTTP framing, and short bounded
runs of the load generator against the bundled fake and the lean upstream on 127.0.0.1."""

from __future__ import annotations

import math

import httpx
import orjson
import pytest

from bench.capacity import CapacityWorkload, run_capacity
from bench.loadgen import Endpoint, ResponseParser, Workload, build_request, run_closed_loop
from bench.processes import CorePlan, Service, plan_cores
from bench.report import Row, format_table
from bench.run import memory_figures, targets_for
from bench.stats import CellFigures, closed_loop_rate, combine, compare, percentile, summarize
from bench.targets import DIRECT, PASSTHROUGH, SCENARIOS, VARIANT, Target, message_body
from bench.upstream import start_lean_server
from fake_anthropic import FakeAnthropic

KEY = "sk-ant-bench-test"
SHORT_STREAM = "events=3,interval_ms=5,first_byte_ms=20"


def test_percentile_interpolates_between_ranks():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 0.5) == 2.5
    assert percentile(values, 1.0) == 4.0
    assert percentile(list(range(1, 101)), 0.99) == pytest.approx(99.01)
    assert math.isnan(percentile([], 0.5))


def test_percentile_refuses_a_fraction_outside_zero_to_one():
    with pytest.raises(ValueError):
        percentile([1.0], 99)


def test_summarize_gives_rate_and_latencies_in_milliseconds():
    figures = summarize([0.001, 0.002, 0.003], completed=3, errors=1, window=1.5)
    assert figures.rate == 2.0
    assert figures.p50_ms == 2.0
    assert figures.p99_ms == pytest.approx(2.98)
    assert (figures.completed, figures.errors) == (3, 1)


def test_stream_rate_is_connections_over_mean_duration():
    assert closed_loop_rate(16, [0.4, 0.4, 0.3, 0.5]) == 40.0
    assert math.isnan(closed_loop_rate(16, []))
    assert summarize([0.05], completed=1, errors=0, window=2.0, rate=40.0).rate == 40.0


def test_combine_takes_medians_and_sums_errors():
    cells = [
        CellFigures(rate=100.0, p50_ms=1.0, p99_ms=9.0, completed=10, errors=0),
        CellFigures(rate=300.0, p50_ms=3.0, p99_ms=7.0, completed=30, errors=2),
        CellFigures(rate=200.0, p50_ms=2.0, p99_ms=8.0, completed=20, errors=1),
    ]
    combined = combine(cells)
    assert (combined.rate, combined.p50_ms, combined.p99_ms, combined.completed, combined.errors) == (200.0, 2.0, 8.0, 20, 3)
    assert math.isnan(combined.peak_rss)


def test_compare_gives_added_latency_and_ratios():
    direct = CellFigures(rate=20_000.0, p50_ms=0.05)
    passthrough = CellFigures(rate=1_000.0, p50_ms=1.0)
    gateway = CellFigures(rate=800.0, p50_ms=1.25)
    comparison = compare(gateway, direct, passthrough)
    assert comparison.added_p50_ms == pytest.approx(1.2)
    assert comparison.vs_direct == 0.04
    assert comparison.vs_passthrough == 0.8
    assert math.isnan(compare(gateway, None).vs_direct)
    assert compare(gateway, direct, passthrough, CellFigures(rate=1_600.0)).vs_asgi == 0.5


def test_memory_per_stream_is_the_rise_while_held_over_the_streams_held():
    samples = [
        (0.0, 100_000_000),
        (1.0, 100_000_000),
        (2.0, 150_000_000),
        (3.0, 160_000_000),
        (3.5, 170_000_000),
        (5.0, 210_000_000),
    ]
    phases = {"open": 1.5, "held": 2.5, "probe": 4.0, "close": 6.0}
    figures = memory_figures(samples, phases, held=1000)
    assert figures == {"peak_rss": 210_000_000.0, "bytes_per_stream": 65_000.0}  # median of 160 and 170 MB, less 100 MB


def test_plan_cores_gives_the_proxy_a_core_of_its_own():
    assert plan_cores({0, 1}) == CorePlan(frozenset({1}), frozenset({0}))
    assert plan_cores({0, 1}).pinned
    assert not plan_cores({0}).pinned


def test_variants_run_only_in_their_scenarios_and_order_rotates():
    def target(key: str, role: str) -> Target:
        return Target(key, role, key, Service(key, [], {}, 0, frozenset()))

    targets = [
        target("direct", DIRECT),
        target("passthrough", PASSTHROUGH),
        target("variant:x", VARIANT),
        target("gateway", "gateway"),
    ]
    plain_16 = next(scenario for scenario in SCENARIOS if scenario.key == "plain-16")
    plain_64 = next(scenario for scenario in SCENARIOS if scenario.key == "plain-64")
    assert [t.key for t in targets_for(plain_16, targets, 0)] == ["direct", "passthrough", "gateway"]
    assert [t.key for t in targets_for(plain_16, targets, 1)] == ["passthrough", "gateway", "direct"]
    assert [t.key for t in targets_for(plain_64, targets, 0)] == ["direct", "passthrough", "variant:x", "gateway"]
    targets[3].unavailable = "404"
    assert [t.key for t in targets_for(plain_16, targets, 0)] == ["direct", "passthrough"]


def test_table_shows_ratios_only_for_proxies():
    scenario = SCENARIOS[0]
    direct = Target("direct", DIRECT, "direct", Service("d", [], {}, 0, frozenset()))
    gateway = Target("gateway", "gateway", "gateway, uvicorn", Service("g", [], {}, 0, frozenset()))
    direct_figures = CellFigures(rate=20_000.0, p50_ms=0.05, p99_ms=0.1)
    gateway_figures = CellFigures(rate=900.0, p50_ms=1.05, p99_ms=2.5, errors=0, peak_rss=120 * 2**20, bytes_per_stream=30 * 1024)
    ninja, asgi = CellFigures(rate=1_200.0, p50_ms=0.8), CellFigures(rate=3_000.0, p50_ms=0.3)
    rows = [
        Row(scenario, direct, compare(direct_figures, direct_figures, ninja, asgi)),
        Row(scenario, gateway, compare(gateway_figures, direct_figures, ninja, asgi)),
    ]
    lines = format_table(rows).splitlines()
    assert lines[2] == "| JSON, 1 conn | direct | 20,000 | 0.05 | 0.10 |  |  |  |  | 0 |  |  |"
    assert lines[3] == "| JSON, 1 conn | gateway, uvicorn | 900 | 1.05 | 2.50 | 1.00 | 0.045 | 0.75 | 0.30 | 0 | 120 | 30.0 |"


@pytest.mark.parametrize("cut", [1, 7, 40, 70, -3, -1])
def test_parser_finds_the_end_of_a_chunked_stream_split_anywhere(cut):
    body = b"event: ping\ndata: {}\n\n"
    end = b"event: message_stop\ndata: {}\n\n"
    response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%b\r\n" % (len(body), body)
        + b"%x\r\n%b\r\n" % (len(end), end)
        + b"0\r\n\r\n"
    )
    parser = ResponseParser(watch_stream=True)
    assert parser.feed(response[:cut]) is False
    assert parser.feed(response[cut:]) is True
    assert (parser.status, parser.ended_well, parser.errored) == (200, True, False)


def test_parser_reads_content_length_and_flags_a_stream_error():
    parser = ResponseParser(watch_stream=False)
    assert parser.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nab") is False
    assert parser.feed(b"cd") is True
    assert parser.status == 201
    streaming = ResponseParser(watch_stream=True)
    streaming.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 32\r\n\r\nevent: error\ndata: {}\n\n" + b"x" * 10)
    assert streaming.errored and not streaming.ended_well


def messages_request(endpoint: Endpoint, *, stream: bool, key: str = KEY, shape: str = SHORT_STREAM) -> bytes:
    headers = {"anthropic-version": "2023-06-01", "x-api-key": key}
    if stream:
        headers["x-fake-stream"] = shape
    return build_request(endpoint, "/v1/messages", message_body(stream=stream), headers)


async def test_load_generator_sends_exactly_its_budget_to_the_fake():
    async with FakeAnthropic(api_keys=[KEY]) as fake:
        endpoint = Endpoint("127.0.0.1", fake.port)
        samples = await run_closed_loop(
            endpoint, Workload(messages_request(endpoint, stream=False), concurrency=2, duration=5.0, warmup=0.0, max_requests=20)
        )
        assert (samples.completed, samples.errors, len(samples.latencies)) == (20, {}, 20)
        assert len(fake.requests) == 20
        streamed = await run_closed_loop(
            endpoint,
            Workload(
                messages_request(endpoint, stream=True), concurrency=2, duration=5.0, warmup=0.0, max_requests=4, streaming=True
            ),
        )
        assert (streamed.completed, streamed.errors) == (4, {})
        assert all(0.02 <= first <= whole for first, whole in zip(streamed.first_bytes, streamed.latencies))


async def test_load_generator_counts_refusals_as_errors():
    async with FakeAnthropic(api_keys=[KEY]) as fake:
        endpoint = Endpoint("127.0.0.1", fake.port)
        samples = await run_closed_loop(
            endpoint,
            Workload(
                messages_request(endpoint, stream=False, key="sk-wrong"), concurrency=1, duration=5.0, warmup=0.0, max_requests=3
            ),
        )
        assert (samples.completed, samples.errors) == (0, {"http-401": 3})


async def test_capacity_holds_slow_streams_while_probing():
    async with FakeAnthropic(api_keys=[KEY]) as fake:
        endpoint = Endpoint("127.0.0.1", fake.port)
        probe = Workload(
            messages_request(endpoint, stream=True), concurrency=2, duration=5.0, warmup=0.0, max_requests=2, streaming=True
        )
        slow = messages_request(endpoint, stream=True, shape="events=30,interval_ms=1000,first_byte_ms=0")
        result = await run_capacity(endpoint, CapacityWorkload(slow, held=10, probe=probe, settle=0.05))
        assert (result.held_opened, result.held_errors) == (10, {})
        assert (result.probe.completed, result.probe.errors) == (2, {})
        assert result.phases["open"] <= result.phases["held"] <= result.phases["probe"] <= result.phases["close"]


def without_ids(payload: dict) -> dict:
    message = payload.get("message", payload)
    message.pop("id", None)
    return payload


async def test_lean_upstream_replies_like_the_bundled_fake():
    server = await start_lean_server("127.0.0.1", 0, KEY)
    try:
        lean = Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
        async with FakeAnthropic(api_keys=[KEY]) as fake:
            bundled = Endpoint("127.0.0.1", fake.port)
            for stream in (False, True):
                bodies = []
                for endpoint in (lean, bundled):
                    samples = await run_closed_loop(
                        endpoint,
                        Workload(
                            messages_request(endpoint, stream=stream),
                            concurrency=1,
                            duration=5.0,
                            warmup=0.0,
                            max_requests=2,
                            streaming=stream,
                        ),
                    )
                    assert (samples.completed, samples.errors) == (2, {})
                    bodies.append(await fetch_body(endpoint, stream))
                lean_body, bundled_body = bodies
                assert lean_body == bundled_body
    finally:
        server.close()


async def fetch_body(endpoint: Endpoint, stream: bool) -> list[dict]:
    """The JSON payloads of one reply (one per SSE event), ids removed."""
    headers = {"anthropic-version": "2023-06-01", "x-api-key": KEY, "x-fake-stream": SHORT_STREAM}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"http://127.0.0.1:{endpoint.port}/v1/messages", content=message_body(stream=stream), headers=headers
        )
    assert response.status_code == 200
    if not stream:
        return [without_ids(response.json())]
    return [without_ids(orjson.loads(line[len("data: ") :])) for line in response.text.splitlines() if line.startswith("data: ")]
