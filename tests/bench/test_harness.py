"""The benchmark harness itself: its arithmetic, its table, its HTTP framing, and short bounded
runs of the load generator against the bundled fake and the lean upstream on 127.0.0.1."""

from __future__ import annotations

import math
import os
from dataclasses import replace

import httpx
import orjson
import pytest

from bench.capacity import CapacityWorkload, run_capacity
from bench.cpu_watch import machine_ticks, steal_share
from bench.instructions import dumped_total
from bench.loadgen import Endpoint, ResponseParser, Workload, build_request, run_closed_loop
from bench.processes import CorePlan, Service, plan_cores
from bench.report import Row, format_table
from bench.run import BenchConfig, memory_figures, plan_targets, targets_for
from bench.scaling import TwoWorkerScaling
from bench.stats import CellFigures, closed_loop_rate, combine, compare, cpu_figures, percentile, summarize
from bench.targets import (
    DIRECT,
    EXTERNAL_STORE_SETTINGS,
    GATEWAY,
    GATEWAY_EMBEDDED,
    GATEWAY_ONE_WORKER_SHARED,
    GATEWAY_PRODUCTION,
    GATEWAY_TWO_WORKERS,
    GATEWAY_TWO_WORKERS_ONE_CORE,
    PASSTHROUGH,
    SCENARIOS,
    VARIANT,
    Secrets,
    Target,
    embedded_environment,
    has_production_stores,
    message_body,
    production_environment,
)
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


def test_a_target_with_scenarios_runs_only_in_them():
    def target(key: str, scenarios: frozenset[str] = frozenset()) -> Target:
        return Target(key, GATEWAY, key, Service(key, [], {}, 0, frozenset()), scenarios=scenarios)

    targets = [target("gateway"), target("gateway-2-workers", frozenset({"plain-64"}))]
    by_key = {scenario.key: scenario for scenario in SCENARIOS}
    assert [t.key for t in targets_for(by_key["plain-64"], targets, 0)] == ["gateway", "gateway-2-workers"]
    for key in ("plain-1", "plain-16", "stream-256", "capacity"):
        assert [t.key for t in targets_for(by_key[key], targets, 0)] == ["gateway"]


def test_embedded_gateway_names_no_external_store(tmp_path):
    production = production_environment(
        {
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "REDIS_KEY_PREFIX": "bench-1",
            "CHANNEL_REDIS_URL": "redis://127.0.0.1:6379/1",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/2",
            "REDIS_CLUSTER": "false",
        },
        tmp_path / "production",
        "http://127.0.0.1:9",
        Secrets.fresh(),
        8001,
    )
    embedded = embedded_environment(production, tmp_path / "embedded")
    assert has_production_stores(production) and not has_production_stores(embedded)
    assert not set(EXTERNAL_STORE_SETTINGS) & set(embedded)
    assert (embedded["VAR_DIR"], embedded["USAGE_WRITER"], production["USAGE_WRITER"]) == (
        str(tmp_path / "embedded"),
        "thread",
        "process",
    )
    assert embedded["JWT_SECRET"] == production["JWT_SECRET"] and embedded["DJANGO_DEBUG"] == "false"


def test_without_database_and_redis_urls_the_production_like_gateways_are_not_measured(tmp_path):
    targets = plan_targets(BenchConfig(variants=False), CorePlan(frozenset({1}), frozenset({0})), tmp_path, {"PATH": "/bin"})
    gateways = {target.key: target for target in targets if target.role == GATEWAY}
    assert list(gateways) == [
        GATEWAY_EMBEDDED,
        GATEWAY_PRODUCTION,
        GATEWAY_TWO_WORKERS_ONE_CORE,
        GATEWAY_ONE_WORKER_SHARED,
        GATEWAY_TWO_WORKERS,
    ]
    assert gateways[GATEWAY_EMBEDDED].unavailable == ""
    for key in list(gateways)[1:]:
        assert "DATABASE_URL" in gateways[key].unavailable
    one_core, shared, two = (gateways[key] for key in list(gateways)[2:])
    assert gateways[GATEWAY_PRODUCTION].service.cpus == one_core.service.cpus == frozenset({1})
    assert shared.service.cpus == two.service.cpus == frozenset({0, 1})
    assert [target.service.env["WEB_CONCURRENCY"] for target in (one_core, shared, two)] == ["2", "1", "2"]
    assert all(target.companions == gateways[GATEWAY_PRODUCTION].companions for target in (one_core, shared, two))
    assert len({target.service.env["VAR_DIR"] for target in gateways.values()}) == 5


def test_cpu_figures_separate_the_proxy_from_everyone_else():
    seconds = {"proxy:10": 0.02, "proxy:11": 0.9, "proxy:12": 0.6, "load generator": 0.2, "upstream": 0.3, "stores": 0.1}
    figures = cpu_figures(seconds, span=2.0, completed=3_000, connections={"proxy:10": 0, "proxy:11": 40, "proxy:12": 24})
    assert figures["proxy_cores"] == pytest.approx(0.76)
    assert figures["proxy_cpu_us"] == pytest.approx(506.67, abs=0.01)
    assert figures["busiest_process_share"] == pytest.approx(0.9 / 1.52)
    assert figures["load_generator_cores"] == pytest.approx(0.1)
    assert figures["others_cores"] == pytest.approx(0.2)
    assert (figures["serving_processes"], figures["fewest_connections"]) == (2.0, 24.0)
    assert cpu_figures({"upstream": 1.0}, span=1.0, completed=10, connections={}) == {}


def scaling(*, two_per_core: float, shared: bool = True) -> TwoWorkerScaling:
    dedicated = CellFigures(rate=2_000.0, proxy_cores=0.96)  # 2,083 per core
    two_on_one_core = CellFigures(rate=two_per_core * 0.98, proxy_cores=0.98, fewest_connections=15.0)
    fewer = CellFigures(rate=1_900.0, proxy_cores=0.93)
    shared_one = CellFigures(rate=2_200.0, proxy_cores=1.0) if shared else None
    shared_two = CellFigures(rate=2_300.0, proxy_cores=1.15, busiest_process_share=0.55) if shared else None
    return TwoWorkerScaling(dedicated, two_on_one_core, fewer, shared_one, shared_two)


def test_two_workers_are_projected_from_two_saturated_workers_on_one_core_against_one():
    result = scaling(two_per_core=2_000.0)
    assert result.second_worker_efficiency == pytest.approx(2_000 / (2_000 / 0.96))
    assert result.projected_ratio == pytest.approx(2 * 0.96)
    assert result.projected_rate == pytest.approx(2_000 * 2 * 0.96)
    described = result.describe("JSON, 64 conn")
    assert "= 1.92× one worker" in described and "(target ≥ 1.8×: met)" in described
    assert "held 15 of the connections, and one worker with 16 connections was 0.93 cores busy" in described
    assert result.lower_bound_ratio == pytest.approx(2_300 / 1.15 / 2_200 / 0.55)
    assert f"{2_300 / 1.15 / 2_200 / 0.55:.2f}×" in described


def test_a_second_worker_that_makes_responses_cost_more_misses_the_target():
    costly = scaling(two_per_core=1_800.0, shared=False)  # a second worker costs 14% per response
    assert costly.projected_ratio == pytest.approx(2 * 1_800 / (2_000 / 0.96))
    described = costly.describe("JSON, 64 conn")
    assert "NOT met" in described and "Lower bound" not in described
    assert math.isnan(costly.lower_bound_ratio)
    missing = TwoWorkerScaling(CellFigures(rate=2_000.0, proxy_cores=0.96), CellFigures(rate=1_900.0))
    assert not missing.complete and "not projected" in missing.describe("JSON, 64 conn")


async def test_load_generator_reads_the_cpu_and_connections_of_the_processes_it_watches():
    server = await start_lean_server("127.0.0.1", 0, KEY)
    port = server.sockets[0].getsockname()[1]
    try:
        endpoint = Endpoint("127.0.0.1", port)
        watch = (("proxy:me", (os.getpid(),)), ("upstream", ()))
        samples = await run_closed_loop(
            endpoint,
            Workload(
                messages_request(endpoint, stream=False), concurrency=3, duration=0.3, warmup=0.05, watch=watch, proxy_port=port
            ),
        )
    finally:
        server.close()
        await server.wait_closed()
    assert samples.completed > 0 and samples.errors == {}
    assert samples.cpu_span >= 0.3
    assert set(samples.cpu_seconds) == {"proxy:me", "upstream", "load generator"}
    assert 0 < samples.cpu_seconds["proxy:me"] <= samples.cpu_span * 2  # seconds, not nanoseconds
    assert samples.cpu_seconds["upstream"] == 0
    assert samples.connections == {"proxy:me": 3}  # the server's ends only, not the client's


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
    assert lines[2] == "| JSON, 1 conn | direct | 20,000 | 0.05 | 0.10 |  |  |  |  | 0 |  |  |  |  |"
    assert (
        lines[3] == "| JSON, 1 conn | gateway, uvicorn | 900 | 1.05 | 2.50 | 1.00 | 0.045 | 0.75 | 0.30 | 0 |  |  | 120 | 30.0 |"
    )
    measured = replace(gateway_figures, proxy_cores=0.93, proxy_cpu_us=512.4)
    line = format_table([Row(scenario, gateway, compare(measured, direct_figures, ninja, asgi))]).splitlines()[2]
    assert (
        line
        == "| JSON, 1 conn | gateway, uvicorn | 900 | 1.05 | 2.50 | 1.00 | 0.045 | 0.75 | 0.30 | 0 | 0.93 | 512 | 120 | 30.0 |"
    )


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


def test_the_instruction_count_is_the_counted_dump_not_the_idle_ones(tmp_path):
    output = tmp_path / "gateway.callgrind"
    (tmp_path / "gateway.callgrind.41").write_bytes(b"events: Ir\nsummary: 0\ntotals: 0\n")
    (tmp_path / "gateway.callgrind.41.1").write_bytes(b"events: Ir\nfl=(1) x.c\nfn=(1) f\n3 17\nsummary: 952303739\n")
    (tmp_path / "bare.callgrind.40.1").write_bytes(b"summary: 999999999999\n")
    assert dumped_total(output) == 952_303_739
    with pytest.raises(RuntimeError, match="no counts"):
        dumped_total(tmp_path / "missing.callgrind")


def test_the_steal_share_is_the_hypervisors_part_of_the_machines_time():
    assert steal_share((100, 10_000), (400, 12_000)) == pytest.approx(0.15)
    assert steal_share((5, 100), (5, 100)) == 0.0  # no time passed: nothing to divide
    stolen, total = machine_ticks()
    assert total > 0 and 0 <= stolen <= total  # read from this machine's /proc/stat
