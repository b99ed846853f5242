"""`make bench` (python -m bench): the gateway against a direct upstream and a bare pass-through.

python -m bench            # 3 repetitions, well under 10 minutes
python -m bench --quick    # one short repetition, about a minute: a smoke run
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from bench.report import RESULTS_DIR, build_rows, describe, format_table, report_json, write_json
from bench.run import BenchConfig, run_benchmark
from bench.stores import with_local_stores
from bench.targets import SERVERS, TRANSPORTS

QUICK = {"repetitions": 1, "duration": 1.0, "warmup": 0.2, "held_streams": 200}  # about a minute


def parse_config(argv: list[str] | None = None) -> tuple[BenchConfig, Path]:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one short repetition, 200 held streams, no matrix (~1 minute)")
    parser.add_argument("--repetitions", type=int, help=f"default {defaults.repetitions}")
    parser.add_argument("--duration", type=float, help=f"measured seconds per cell, default {defaults.duration}")
    parser.add_argument(
        "--held-streams", type=int, help=f"slow streams held open for the capacity cell, default {defaults.held_streams}"
    )
    parser.add_argument(
        "--server", choices=SERVERS, default=defaults.server, help="ASGI server of the gateway and the pass-throughs"
    )
    parser.add_argument(
        "--transport", choices=TRANSPORTS, default=defaults.transport, help="upstream client of the pass-throughs"
    )
    parser.add_argument(
        "--upstream",
        choices=("lean", "bundled"),
        default=defaults.upstream,
        help="lean: the fake's replies from a lean server (default); bundled: the full fake Anthropic API",
    )
    parser.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also the bare ASGI pass-through on every server x transport (default: on, off with --quick)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="directory of the JSON results")
    arguments = parser.parse_args(argv)
    config = replace(defaults, **QUICK) if arguments.quick else defaults
    overrides = {"repetitions": arguments.repetitions, "duration": arguments.duration, "held_streams": arguments.held_streams}
    config = replace(
        config,
        **{name: value for name, value in overrides.items() if value is not None},
        server=arguments.server,
        transport=arguments.transport,
        upstream=arguments.upstream,
        variants=arguments.variants if arguments.variants is not None else not arguments.quick,
    )
    return config, arguments.output


def stop_on_sigterm(signum: int, frame: object) -> None:
    """Unwind like Ctrl-C, so the servers the run started are stopped on the way out."""
    raise KeyboardInterrupt


def measure_estimator() -> str:
    """In its own process: it sets Django up with the development settings and a price table."""
    done = subprocess.run([sys.executable, "-m", "bench.estimator"], capture_output=True, text=True, timeout=300)
    return done.stdout.strip() if done.returncode == 0 else f"failed: {done.stderr.strip()[-300:]}"


def measure_cpu_per_request() -> str:
    """The gateway's CPU per request beside the bare pass-through's (`bench.cpu`): steadier than
    wall-clock figures on a machine doing other work."""
    done = subprocess.run([sys.executable, "-m", "bench.cpu", "--requests", "2000"], capture_output=True, text=True, timeout=600)
    return done.stdout.strip() if done.returncode == 0 else f"failed: {done.stderr.strip()[-300:]}"


def measure_redis_client(environment: dict[str, str]) -> str:
    """With a Redis (the production-like rows): a hot-path command through redis-py and the lean client."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.redis_client"], env=environment, capture_output=True, text=True, timeout=300
    )
    return done.stdout.strip() if done.returncode == 0 else f"failed: {done.stderr.strip()[-300:]}"


def main(argv: list[str] | None = None) -> int:
    config, output = parse_config(argv)
    signal.signal(signal.SIGTERM, stop_on_sigterm)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        record = run_benchmark(config, log)
    except KeyboardInterrupt:
        log("interrupted: the servers were stopped, nothing was written")
        return 130
    rows = build_rows(record)
    path = write_json(report_json(record, rows), output)
    print(format_table(rows))
    print()
    print(describe(record, rows))
    print(f"JSON: {path}")
    print(f"Spend estimator (microseconds per request): {measure_estimator()}")
    print(f"CPU microseconds per JSON request (gateway, bare ASGI pass-through): {measure_cpu_per_request()}")
    environment = with_local_stores(os.environ)
    if environment.get("REDIS_URL"):
        print(f"Rate-limit script, CPU microseconds per command: {measure_redis_client(environment)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
