"""CPU time per request of the gateway process, beside the bare ASGI pass-through's:
`python -m bench.cpu [--requests N] [--concurrency 1,64] [--rounds 3] [--stream]`.

Wall-clock figures move with whatever else the machine runs; the CPU time a process spends on a
fixed number of requests moves far less, so this is the figure to compare changes to the request
path by. `--stream` sends streaming requests of `make bench`'s stream shape (30 events, 10 ms apart)
instead of JSON ones. The servers are started as `make bench` starts them (production mode, DATABASE_URL and
REDIS_URL passed through, the usage writer as its own process); each round sends N JSON requests
per concurrency to each proxy and reads the nanosecond run time of every thread of its processes
(`/proc/<pid>/task/<tid>/schedstat`) before and after. Prints one JSON line: microseconds of CPU per
request for each proxy and concurrency (the median of the rounds), the gateway's excess over the
pass-through, the usage writer's and the Redis and PostgreSQL servers' CPU per gateway request over
the whole run (`usage_writer_us`, `stores_us`), and the share of the machine's CPU time the
hypervisor took meanwhile (`steal_share`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from bench.cpu_watch import machine_ticks, run_nanoseconds, steal_share, store_server_pids
from bench.loadgen import Endpoint, Workload, build_request
from bench.processes import BASE_DIR, CorePlan, free_port, plan_cores, raise_open_file_limit, stop_all, wait_until_idle
from bench.run import STREAM_SHAPE_HEADER, LoadGenerator, enroll_device, preflight
from bench.stores import run_stores, with_local_stores
from bench.targets import (
    ASGI,
    GATEWAY_PRODUCTION,
    MESSAGES_PATH,
    REALISTIC_STREAM,
    Secrets,
    Target,
    gateway_target,
    message_body,
    passthrough_target,
    production_environment,
    upstream_target,
    usage_writer,
)


def fixed_count(request: bytes, concurrency: int, requests: int, *, streaming: bool) -> Workload:
    """Exactly `requests` requests, every one counted: no warm-up window, no time limit to hit."""
    return Workload(request, concurrency, duration=600.0, warmup=0.0, max_requests=requests, streaming=streaming, timeout=30.0)


def cpu_per_request(load: LoadGenerator, target: Target, concurrency: int, requests: int, *, stream: bool = False) -> float:
    """Microseconds of the target's CPU per completed request."""
    endpoint = Endpoint("127.0.0.1", target.service.port)
    headers = {"anthropic-version": "2023-06-01", **target.headers}
    if stream:
        headers[STREAM_SHAPE_HEADER] = REALISTIC_STREAM
    request = build_request(endpoint, MESSAGES_PATH, message_body(stream=stream), headers)
    pids = target.service.pids()
    wait_until_idle(pids, limit=3.0)
    before = run_nanoseconds(pids)
    samples = load.run(endpoint, fixed_count(request, concurrency, requests, streaming=stream))
    spent = run_nanoseconds(pids) - before
    if samples["errors"] or not samples["completed"]:
        raise RuntimeError(f"{target.label}: {samples['completed']} completed, errors {samples['errors']}")
    return spent / samples["completed"] / 1000


def stores_nanoseconds() -> dict[int, int]:
    """Each Redis and PostgreSQL server process's CPU so far: only the gateway's requests and its usage
    writer use them here (the pass-through touches neither), so over the run they are its cost too,
    on the same two cores. A process that ends before the run does is not counted."""
    return {pid: run_nanoseconds([pid]) for pid in store_server_pids()}


def measure(requests: int, concurrencies: list[int], rounds: int, log, *, stream: bool = False) -> dict:
    with started_production_targets(log) as (_, bare, gateway, load):
        for target in (bare, gateway):  # connection pools, caches, the interpreter's specialisations
            for concurrency in concurrencies:
                cpu_per_request(load, target, concurrency, max(requests // 5, 100), stream=stream)
        writer_before = run_nanoseconds(gateway.companions[0].pids())
        stores_before = stores_nanoseconds()
        ticks_before = machine_ticks()
        sent = 0
        figures: dict[str, list[float]] = {}
        for _ in range(rounds):
            for concurrency in concurrencies:
                for target in (bare, gateway):
                    name = f"{'gateway' if target is gateway else 'bare'}_c{concurrency}_us"
                    figures.setdefault(name, []).append(cpu_per_request(load, target, concurrency, requests, stream=stream))
                    sent += requests if target is gateway else 0
                    log(f"{name}: {figures[name][-1]:.1f}")
        writer_spent = run_nanoseconds(gateway.companions[0].pids()) - writer_before
        stores_spent = sum(spent - stores_before.get(pid, 0) for pid, spent in stores_nanoseconds().items())
        stolen = steal_share(ticks_before, machine_ticks())
    result: dict[str, float] = {name: round(statistics.median(values), 1) for name, values in figures.items()}
    for concurrency in concurrencies:
        result[f"added_c{concurrency}_us"] = round(result[f"gateway_c{concurrency}_us"] - result[f"bare_c{concurrency}_us"], 1)
    result["usage_writer_us"] = round(writer_spent / sent / 1000, 1)
    result["stores_us"] = round(stores_spent / sent / 1000, 1)
    result["load_average"] = round(os.getloadavg()[0], 2)
    result["steal_share"] = round(stolen, 3)
    return result


@contextmanager
def production_targets() -> Iterator[tuple[CorePlan, Target, Target, Target, Path]]:
    """(cores, the direct upstream, the bare ASGI pass-through, the gateway, a scratch directory),
    set up as `make bench` sets up its production-like row, not started yet; this process is moved
    to the load core(s)."""
    raise_open_file_limit()
    cores = plan_cores(os.sched_getaffinity(0))
    if cores.pinned:
        os.sched_setaffinity(0, set(cores.load))
    keys = Secrets.fresh()
    environment = with_local_stores(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-var-") as scratch, run_stores(environment) as stores:
        base_env = {**environment, **stores}
        direct = upstream_target("lean", keys, cores, base_env)
        env = production_environment(base_env, Path(scratch), f"http://127.0.0.1:{direct.service.port}", keys, free_port())
        bare = passthrough_target("uvicorn", "gateway", ASGI, cores, env)
        gateway = gateway_target(GATEWAY_PRODUCTION, "gateway, uvicorn", "uvicorn", env, cores.proxy, [usage_writer(env, cores)])
        yield cores, direct, bare, gateway, Path(scratch)


@contextmanager
def started_production_targets(log) -> Iterator[tuple[Target, Target, Target, LoadGenerator]]:
    """(the direct upstream, the bare ASGI pass-through, the gateway, a load generator on the load
    cores): `production_targets`, started; every server and the load generator stopped on exit."""
    with production_targets() as (cores, direct, bare, gateway, _):
        load = None
        try:
            start(direct, bare, gateway, log)
            load = LoadGenerator(cores.load)
            yield direct, bare, gateway, load
        finally:
            if load is not None:
                load.close()
            stop_all([direct.service, bare.service, *gateway.services])


def start(direct: Target, bare: Target, gateway: Target, log) -> None:
    """The upstream, then the pass-through and the gateway (migrated, its device enrolled)."""
    direct.service.start().wait_listening()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=BASE_DIR,
        env=gateway.service.env,
        check=True,
        capture_output=True,
    )
    for service in (*gateway.companions, bare.service, gateway.service):
        service.start()
    bare.service.wait_listening(timeout=60)
    gateway.service.wait_listening(timeout=60)
    gateway.headers = {"authorization": f"Bearer {enroll_device(f'http://127.0.0.1:{gateway.service.port}')}"}
    for target in (bare, gateway):
        failure = preflight(target, REALISTIC_STREAM)
        if failure:
            raise RuntimeError(f"{target.label}: {failure}")
    log("servers ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement (default 5000)")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated connection counts (default 1,64)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per cell; the median is printed (default 3)")
    parser.add_argument("--stream", action="store_true", help="streaming requests (make bench's stream shape) instead of JSON")
    arguments = parser.parse_args(argv)
    concurrencies = [int(value) for value in arguments.concurrency.split(",")]

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(orjson.dumps(measure(arguments.requests, concurrencies, arguments.rounds, log, stream=arguments.stream)).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
