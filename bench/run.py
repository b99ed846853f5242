"""One benchmark run: start the upstream, the pass-throughs and the gateway, enroll a device, run
every scenario against every target, interleaved, for each repetition, and collect the figures.

Interleaving (all targets of a scenario back to back, in an order that rotates every repetition)
spreads the machine's noise over the targets instead of handing it to whichever ran last.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.capacity import CapacityWorkload
from bench.cpu_watch import WatchedGroups, machine_ticks, proxy_groups, steal_share, store_server_pids
from bench.loadgen import Endpoint, Workload, build_request
from bench.processes import (
    BASE_DIR,
    CorePlan,
    cpu_seconds,
    free_port,
    plan_cores,
    raise_open_file_limit,
    resident_bytes,
    stop_all,
    wait_until_idle,
)
from bench.stats import CellFigures, closed_loop_rate, cpu_figures, percentile, summarize
from bench.stores import run_stores, with_local_stores
from bench.targets import (
    ASGI,
    GATEWAY,
    GATEWAY_EMBEDDED,
    GATEWAY_ONE_WORKER_SHARED,
    GATEWAY_PRODUCTION,
    GATEWAY_TWO_WORKERS,
    GATEWAY_TWO_WORKERS_ONE_CORE,
    MESSAGES_PATH,
    PASSTHROUGH,
    REALISTIC_STREAM,
    SCENARIOS,
    SERVERS,
    TRANSPORTS,
    TWO_WORKER_SCENARIOS,
    VARIANT,
    Scenario,
    Secrets,
    Target,
    embedded_environment,
    gateway_target,
    has_production_stores,
    message_body,
    passthrough_target,
    production_environment,
    slow_stream_shape,
    upstream_target,
    usage_writer,
    with_port,
)
from bench.worker import serve_workloads

STREAM_SHAPE_HEADER = "x-fake-stream"
RSS_SAMPLE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class BenchConfig:
    repetitions: int = 3
    duration: float = 1.5  # measured seconds per cell
    warmup: float = 0.4  # seconds per cell before measuring
    held_streams: int = 1000
    server: str = "uvicorn"  # ASGI server of the gateway and of the pass-through (b)
    transport: str = "gateway"  # upstream client of the pass-through (b): the gateway's own
    upstream: str = "lean"  # "lean" or "bundled" (the full fake Anthropic API)
    variants: bool = True  # also every server x transport pass-through
    stream_shape: str = REALISTIC_STREAM
    request_timeout: float = 15.0


@dataclass
class CellResult:
    scenario: str
    target: str
    repetition: int
    figures: CellFigures
    error_kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class RunRecord:
    config: BenchConfig
    cores: CorePlan
    targets: list[Target]
    cells: list[CellResult] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    seconds: float = 0.0
    load_average: dict[str, float] = field(default_factory=dict)  # the machine's, before and after: others' work skews a run
    steal_share: float = 0.0  # of the machine's CPU time over the run, taken by the hypervisor (`cpu_watch.machine_ticks`)
    companion_cpu_seconds: dict[str, float] = field(default_factory=dict)  # e.g. the usage writer's, over the whole run


class LoadGenerator:
    """The load generator in its own process, pinned to the load cores; one workload at a time."""

    def __init__(self, cpus: frozenset[int]) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=serve_workloads, args=(child, set(cpus)), name="bench-loadgen", daemon=True)
        self._process.start()

    def run(self, endpoint: Endpoint, workload: Workload | CapacityWorkload) -> dict:
        self._connection.send((endpoint, workload))
        return self._connection.recv()

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._connection.send(None)
            except OSError:
                pass
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()


class RssSampler:
    """Samples the resident memory of a proxy's processes in a thread while a cell runs."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), resident_bytes(self._pids())))
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def memory_figures(samples: list[tuple[float, int]], phases: dict[str, float], held: int) -> dict[str, float]:
    """Peak RSS over the cell, and (RSS while the streams are held - RSS before they opened) / held."""
    if not samples:
        return {}
    before = [rss for moment, rss in samples if moment <= phases["open"]] or [samples[0][1]]
    holding = [rss for moment, rss in samples if phases["held"] <= moment <= phases["probe"]]
    if not holding:
        holding = [rss for moment, rss in samples if moment >= phases["held"]][:1]
    figures = {"peak_rss": float(max(rss for _, rss in samples))}
    if holding and held:
        figures["bytes_per_stream"] = (percentile(holding, 0.5) - before[-1]) / held
    return figures


def enroll_device(base_url: str) -> str:
    """A fresh device through POST /bootstrap; its wrapper token authenticates the gateway's load."""
    response = httpx.post(
        base_url + "/bootstrap", json={"device_id": f"bench-{uuid.uuid4().hex[:12]}", "app_version": "bench"}, timeout=30
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(f"POST /bootstrap answered {response.status_code}: {response.text[:300]}")
    return response.json()["wrapper_token"]


def one_line(text: str, limit: int = 160) -> str:
    return " ".join(text.split())[:limit]


def preflight(target: Target, shape: str) -> str:
    """One JSON request and one stream through the target: '' when both come back whole, else why not."""
    url = f"http://127.0.0.1:{target.service.port}{MESSAGES_PATH}"
    headers = {"anthropic-version": "2023-06-01", "content-type": "application/json", **target.headers}
    try:
        plain = httpx.post(url, content=message_body(stream=False), headers=headers, timeout=30)
        if plain.status_code != 200 or plain.json().get("type") != "message":
            return f"JSON request answered {plain.status_code}: {one_line(plain.text)}"
        streamed = httpx.post(url, content=message_body(stream=True), headers={**headers, STREAM_SHAPE_HEADER: shape}, timeout=30)
        if streamed.status_code != 200 or "event: message_stop" not in streamed.text:
            return f"stream answered {streamed.status_code}: {one_line(streamed.text)}"
    except (httpx.HTTPError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def plan_targets(config: BenchConfig, cores: CorePlan, var_dir: Path, base_env: dict[str, str]) -> list[Target]:
    """Every server of the run, not started yet: direct first, the gateway's targets last.

    The production-like gateways (one worker on its own core; two workers on that core; one and two
    workers on both cores) share one usage writer and one database; each gateway has a VAR_DIR of its own. Without
    DATABASE_URL and REDIS_URL (or local servers that answer) they are listed as not measured."""
    keys = Secrets.fresh()
    direct = upstream_target(config.upstream, keys, cores, base_env)
    upstream_url = f"http://127.0.0.1:{direct.service.port}"
    production = production_environment(base_env, var_dir / "production", upstream_url, keys, free_port())
    embedded = with_port(embedded_environment(production, var_dir / "embedded"), free_port())
    Path(production["VAR_DIR"]).mkdir(parents=True)
    Path(embedded["VAR_DIR"]).mkdir(parents=True)
    targets = [
        direct,
        passthrough_target(config.server, config.transport, ASGI, cores, embedded),
        passthrough_target(config.server, config.transport, PASSTHROUGH, cores, embedded),
    ]
    if config.variants:
        targets += [
            passthrough_target(server, transport, VARIANT, cores, embedded)
            for server in SERVERS
            for transport in TRANSPORTS
            if (server, transport) != (config.server, config.transport)
        ]
    writer = usage_writer(production, cores)
    stores = "PostgreSQL + Redis"
    all_cores = cores.proxy | cores.load

    def scaling_target(key: str, workers: int, cpus: frozenset[int]) -> Target:
        env = {**with_port(production, free_port()), "VAR_DIR": str(var_dir / key), "WEB_CONCURRENCY": str(workers)}
        Path(env["VAR_DIR"]).mkdir(parents=True)
        label = f"gateway, {stores}, {workers} worker{'s' if workers > 1 else ''} on core{'s' if len(cpus) > 1 else ''} {sorted(cpus)}"
        return gateway_target(key, label, config.server, env, cpus, [writer], TWO_WORKER_SCENARIOS)

    gateways = [
        gateway_target(GATEWAY_EMBEDDED, f"gateway, embedded, {config.server}", config.server, embedded, cores.proxy, []),
        gateway_target(
            GATEWAY_PRODUCTION, f"gateway, {stores}, {config.server}", config.server, production, cores.proxy, [writer]
        ),
        scaling_target(GATEWAY_TWO_WORKERS_ONE_CORE, 2, cores.proxy),
        scaling_target(GATEWAY_ONE_WORKER_SHARED, 1, all_cores),
        scaling_target(GATEWAY_TWO_WORKERS, 2, all_cores),
    ]
    if not has_production_stores(base_env):
        for target in gateways[1:]:
            target.unavailable = "production-like: set DATABASE_URL (PostgreSQL) and REDIS_URL"
    for target in gateways[2:]:
        if not cores.pinned:
            target.unavailable = target.unavailable or "one core: no second core to share"
        if config.server != "uvicorn":
            target.unavailable = target.unavailable or f"{config.server} runs one worker"
    return [*targets, *gateways]


def migrate(env: dict[str, str]) -> str:
    """'' when the database `env` names is migrated, else why not."""
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )
    return "" if done.returncode == 0 else f"migrate failed: {one_line(done.stderr[-600:], 300)}"


def start_targets(config: BenchConfig, targets: list[Target], log: Callable[[str], None]) -> None:
    """Start every server; a proxy that fails to start (or to answer) is kept, marked unavailable.
    A database shared by two gateways is migrated once, a companion shared by two is started once."""
    direct, proxies = targets[0], targets[1:]
    direct.service.start().wait_listening()
    migrated: dict[str, str] = {}
    started: set[int] = set()
    for target in proxies:
        if target.role != GATEWAY or target.unavailable:
            continue
        env = target.service.env
        database = env.get("DATABASE_URL") or env["VAR_DIR"]
        if database not in migrated:
            migrated[database] = migrate(env)
        target.unavailable = migrated[database]
        for companion in target.companions:
            if not target.unavailable and id(companion) not in started:
                started.add(id(companion))
                companion.start()
    for target in proxies:
        if not target.unavailable:
            target.service.start()
    for target in proxies:
        if target.unavailable:
            continue
        try:
            target.service.wait_listening(timeout=60)
        except RuntimeError as exc:
            target.unavailable = one_line(str(exc), 300)
    for target in proxies:
        if target.role == GATEWAY and not target.unavailable:
            try:
                target.headers = {"authorization": f"Bearer {enroll_device(f'http://127.0.0.1:{target.service.port}')}"}
            except (RuntimeError, httpx.HTTPError, KeyError, ValueError) as exc:
                target.unavailable = f"enrollment failed: {exc}"
    for target in targets:
        if not target.unavailable:
            target.unavailable = preflight(target, config.stream_shape)
        log(
            f"{target.label}: "
            + (f"NOT MEASURED ({target.unavailable})" if target.unavailable else f"ready on port {target.service.port}")
        )


def targets_for(scenario: Scenario, targets: list[Target], repetition: int) -> list[Target]:
    chosen = [
        target
        for target in targets
        if not target.unavailable
        and (target.role != VARIANT or scenario.with_variants)
        and (not target.scenarios or scenario.key in target.scenarios)
    ]
    shift = repetition % len(chosen) if chosen else 0
    return chosen[shift:] + chosen[:shift]


def plain_workload(
    target: Target,
    endpoint: Endpoint,
    config: BenchConfig,
    concurrency: int,
    duration: float | None = None,
    watch: WatchedGroups = (),
) -> Workload:
    request = build_request(
        endpoint, MESSAGES_PATH, message_body(stream=False), {"anthropic-version": "2023-06-01", **target.headers}
    )
    return closed_loop(
        request, concurrency, duration or config.duration, config, streaming=False, watch=watch, port=endpoint.port
    )


def stream_workload(
    target: Target,
    endpoint: Endpoint,
    config: BenchConfig,
    concurrency: int,
    shape: str,
    duration: float | None = None,
    watch: WatchedGroups = (),
) -> Workload:
    headers = {"anthropic-version": "2023-06-01", STREAM_SHAPE_HEADER: shape, **target.headers}
    request = build_request(endpoint, MESSAGES_PATH, message_body(stream=True), headers)
    return closed_loop(request, concurrency, duration or config.duration, config, streaming=True, watch=watch, port=endpoint.port)


def closed_loop(
    request: bytes,
    concurrency: int,
    duration: float,
    config: BenchConfig,
    *,
    streaming: bool,
    watch: WatchedGroups,
    port: int,
) -> Workload:
    """Every connection completes a response in the window, stretched up to 3x for that."""
    return Workload(
        request,
        concurrency,
        duration,
        config.warmup,
        streaming=streaming,
        timeout=config.request_timeout,
        min_completed=concurrency,
        max_duration=3 * duration,
        watch=watch,
        proxy_port=port,
    )


def watched_processes(target: Target, direct: Target) -> WatchedGroups:
    """The processes whose CPU a cell reads over its window: the proxy's, one group per process,
    then the upstream, the proxy's companions and the Redis and PostgreSQL servers."""
    groups = proxy_groups(target.service.pids()) if target.is_proxy else ()
    companions = tuple(pid for service in target.companions for pid in service.pids())
    return (
        *groups,
        ("upstream", tuple(direct.service.pids())),
        ("companions", companions),
        ("stores", store_server_pids()),
    )


def cpu_of(samples: dict) -> dict[str, float]:
    return cpu_figures(samples["cpu_seconds"], samples["cpu_span"], samples["completed"], samples["connections"])


def run_cell(
    load: LoadGenerator, target: Target, direct: Target, scenario: Scenario, config: BenchConfig
) -> tuple[CellFigures, dict[str, int]]:
    endpoint = Endpoint("127.0.0.1", target.service.port)
    if scenario.kind == "plain":
        workload = plain_workload(target, endpoint, config, scenario.concurrency, watch=watched_processes(target, direct))
        samples = load.run(endpoint, workload)
        errors = samples["errors"]
        figures = summarize(
            samples["latencies"], samples["completed"], sum(errors.values()), samples["window"], **cpu_of(samples)
        )
        return figures, errors
    if scenario.kind == "stream":
        watch = watched_processes(target, direct)
        samples = load.run(
            endpoint, stream_workload(target, endpoint, config, scenario.concurrency, config.stream_shape, watch=watch)
        )
        errors = samples["errors"]
        rate = closed_loop_rate(scenario.concurrency, samples["latencies"])
        figures = summarize(
            samples["first_bytes"], samples["completed"], sum(errors.values()), samples["window"], rate=rate, **cpu_of(samples)
        )
        return figures, errors
    hold_seconds = 30 + config.warmup + config.duration + config.request_timeout
    slow = stream_workload(target, endpoint, config, 1, slow_stream_shape(hold_seconds)).request
    if target.is_proxy:
        # A fresh process: one that already carried the 256-stream cells keeps that memory mapped
        # and reuses it, which would hide what the held streams cost.
        target.service.restart()
        warm_up(load, [target], config, concurrency=scenario.concurrency)
    watch = watched_processes(target, direct)
    probe = stream_workload(target, endpoint, config, scenario.concurrency, config.stream_shape, watch=watch)
    workload = CapacityWorkload(slow, config.held_streams, probe, open_timeout=30.0, settle=1.0)
    with RssSampler(target.service.pids if target.is_proxy else list) as sampler:
        time.sleep(2 * RSS_SAMPLE_SECONDS)
        result = load.run(endpoint, workload)
    probe_samples = result["probe"]
    errors = {**probe_samples["errors"], **{f"held-{kind}": count for kind, count in result["held_errors"].items()}}
    memory = memory_figures(sampler.samples, result["phases"], result["held_opened"]) if target.is_proxy else {}
    figures = summarize(
        probe_samples["first_bytes"],
        probe_samples["completed"],
        sum(errors.values()),
        probe_samples["window"],
        rate=closed_loop_rate(scenario.concurrency, probe_samples["latencies"]),
        held_streams=result["held_opened"],
        **memory,
        **cpu_of(probe_samples),
    )
    return figures, errors


def warm_up(load: LoadGenerator, targets: list[Target], config: BenchConfig, concurrency: int = 64) -> None:
    """Fill connection pools and caches, and let every process reach its working size, unmeasured."""
    for target in targets:
        if target.unavailable:
            continue
        endpoint = Endpoint("127.0.0.1", target.service.port)
        load.run(endpoint, plain_workload(target, endpoint, config, concurrency, duration=2 * config.warmup))
        load.run(
            endpoint, stream_workload(target, endpoint, config, concurrency, config.stream_shape, duration=2 * config.warmup)
        )


def run_benchmark(config: BenchConfig, log: Callable[[str], None]) -> RunRecord:
    raise_open_file_limit()
    cores = plan_cores(os.sched_getaffinity(0))
    if cores.pinned:
        os.sched_setaffinity(0, set(cores.load))
    log(
        f"cores: proxy on {sorted(cores.proxy)}, upstream and load generator on {sorted(cores.load)}"
        + ("" if cores.pinned else " (one core: nothing pinned)")
    )
    started = time.monotonic()
    environment = with_local_stores(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-var-") as var_dir, run_stores(environment) as stores:
        targets = plan_targets(config, cores, Path(var_dir), {**environment, **stores})
        record = RunRecord(config, cores, targets, load_average={"before": os.getloadavg()[0]})
        ticks_before = machine_ticks()
        load: LoadGenerator | None = None
        try:
            start_targets(config, targets, log)
            load = LoadGenerator(cores.load)
            warm_up(load, targets, config)
            for repetition in range(config.repetitions):
                for scenario in SCENARIOS:
                    for target in targets_for(scenario, targets, repetition):
                        cell_started = time.monotonic()
                        wait_until_idle(
                            [pid for service in target.services + targets[0].services for pid in service.pids()], limit=3.0
                        )
                        try:
                            figures, error_kinds = run_cell(load, target, targets[0], scenario, config)
                        except RuntimeError as exc:  # a proxy that did not come back from its restart
                            target.unavailable = f"stopped during the run: {one_line(str(exc), 300)}"
                            log(f"{target.label}: {target.unavailable}")
                            continue
                        record.cells.append(CellResult(scenario.key, target.key, repetition, figures, error_kinds))
                        log(
                            f"[{repetition + 1}/{config.repetitions} {time.monotonic() - started:4.0f}s] {scenario.label} | "
                            f"{target.label} | {figures.rate:,.1f}/s, p50 {figures.p50_ms:,.2f} ms, errors {figures.errors} "
                            f"({time.monotonic() - cell_started:.1f}s)"
                        )
        finally:
            if load is not None:
                load.close()
            record.companion_cpu_seconds = {
                service.name: cpu_seconds(service.pids()) for target in targets for service in target.companions
            }
            stop_all([service for target in targets for service in target.services])
    record.seconds = time.monotonic() - started
    record.load_average["after"] = os.getloadavg()[0]
    record.steal_share = steal_share(ticks_before, machine_ticks())
    return record
