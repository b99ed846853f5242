"""Median latency at 1 connection of the direct upstream, the bare ASGI pass-through and the
production-like gateway, in alternating rounds: `python -m bench.latency [--rounds N] [--seconds S]`.

Issue #19's first target is the gateway's added median latency at 1 connection, the figure on this
machine that moves most with whatever else runs: `make bench` measures each proxy for 1.5 s three
times, minutes apart. Here the three are measured back to back, S seconds each, N rounds in turn, so
each round compares them under the same conditions; the servers are started as `make bench` starts
its production-like row (DATABASE_URL and REDIS_URL passed through, the usage writer as its own
process). Prints one line per round and then one JSON line: the medians over the rounds of the
gateway's p50 over the direct upstream's (the target's figure) and over the pass-through's, and the
share of the machine's CPU time the hypervisor took meanwhile.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import orjson

from bench.cpu import started_production_targets
from bench.cpu_watch import machine_ticks, steal_share
from bench.loadgen import Endpoint, Workload, build_request
from bench.run import LoadGenerator
from bench.stats import percentile
from bench.targets import MESSAGES_PATH, Target, message_body


def median_latency_ms(load: LoadGenerator, target: Target, seconds: float) -> float:
    """p50 of the whole JSON response over `seconds` at 1 connection, after 0.3 s of warm-up."""
    endpoint = Endpoint("127.0.0.1", target.service.port)
    headers = {"anthropic-version": "2023-06-01", **target.headers}
    request = build_request(endpoint, MESSAGES_PATH, message_body(stream=False), headers)
    samples = load.run(endpoint, Workload(request, 1, duration=seconds, warmup=0.3))
    if samples["errors"] or not samples["completed"]:
        raise RuntimeError(f"{target.label}: {samples['completed']} completed, errors {samples['errors']}")
    return percentile(samples["latencies"], 0.5) * 1000


def measure(rounds: int, seconds: float, log) -> dict:
    with started_production_targets(log) as (direct, bare, gateway, load):
        for target in (direct, bare, gateway):  # connection pools, caches, the interpreter's specialisations
            median_latency_ms(load, target, 1.0)
        ticks_before = machine_ticks()
        over_direct, over_bare = [], []
        for index in range(rounds):
            direct_ms, bare_ms, gateway_ms = (median_latency_ms(load, target, seconds) for target in (direct, bare, gateway))
            over_direct.append(gateway_ms - direct_ms)
            over_bare.append(gateway_ms - bare_ms)
            log(
                f"round {index + 1}: direct {direct_ms:.3f} ms, bare {bare_ms:.3f}, gateway {gateway_ms:.3f}; "
                f"gateway over direct {over_direct[-1]:.3f}, over bare {over_bare[-1]:.3f}"
            )
        stolen = steal_share(ticks_before, machine_ticks())
    return {
        "gateway_over_direct_ms": round(statistics.median(over_direct), 3),
        "gateway_over_bare_ms": round(statistics.median(over_bare), 3),
        "rounds": rounds,
        "steal_share": round(stolen, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the three in turn (default 6)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per proxy per round (default 2)")
    arguments = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(orjson.dumps(measure(arguments.rounds, arguments.seconds, log)).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
