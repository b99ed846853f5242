"""Instructions per request of the gateway and of the bare ASGI pass-through, counted by callgrind:
`python -m bench.instructions [--requests N] [--concurrency C]`.

On this kind of machine wall-clock and CPU-time figures move by a fifth from run to run; the
instructions a process executes in user space do not: the same code sent the same requests counts
the same within about 1%, whatever else the machine does. So a change to the request path can be
judged on one run. Each proxy runs under `valgrind --tool=callgrind` with counting switched off;
it is started as `make bench` starts it (production mode, DATABASE_URL and REDIS_URL passed
through, the usage writer as its own process), warmed up, then counted over N requests only.

What the count leaves out: the kernel (system calls, waking another core), and the cost of an
instruction, which is not fixed: a change that removes cheap ones (a C loop over a string) saves
less time than its count suggests. Confirm a change's time with `python -m bench.cpu`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from bench.cpu import fixed_count, production_targets, start
from bench.loadgen import Endpoint, build_request
from bench.processes import stop_all
from bench.run import LoadGenerator
from bench.targets import MESSAGES_PATH, Target, message_body

WARM_UP_REQUESTS = 300  # connection pools, caches, the interpreter's specialisations
_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def under_callgrind(target: Target, output: Path) -> None:
    """Run the target's server under callgrind, counting nothing until told to."""
    target.service.argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--trace-children=yes",  # the server command execs the ASGI server
        f"--callgrind-out-file={output}.%p",
        *target.service.argv,
    ]


def send(load: LoadGenerator, target: Target, concurrency: int, requests: int) -> None:
    endpoint = Endpoint("127.0.0.1", target.service.port)
    headers = {"anthropic-version": "2023-06-01", **target.headers}
    request = build_request(endpoint, MESSAGES_PATH, message_body(stream=False), headers)
    samples = load.run(endpoint, fixed_count(request, concurrency, requests, streaming=False))
    if samples["errors"] or samples["completed"] != requests:
        raise RuntimeError(f"{target.label}: {samples['completed']} of {requests} completed, errors {samples['errors']}")


def counted_instructions(load: LoadGenerator, target: Target, output: Path, concurrency: int, requests: int) -> int:
    """Instructions the target executed over `requests` requests, after the warm-up."""
    assert target.service.process is not None
    pid = str(target.service.process.pid)
    send(load, target, concurrency, WARM_UP_REQUESTS)
    subprocess.run(["callgrind_control", "--instr=on", pid], check=True, capture_output=True)
    send(load, target, concurrency, requests)
    subprocess.run(["callgrind_control", "--instr=off", pid], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
    return dumped_total(output)


def dumped_total(output: Path) -> int:
    """The counted dump's total: callgrind writes one file per process (`<output>.<pid>`) and one
    per dump (`.1`, ...); the ones written while counting was off hold zero."""
    totals = [int(match) for dump in output.parent.glob(f"{output.name}.*") for match in _TOTALS.findall(dump.read_bytes())]
    if not totals:
        raise RuntimeError(f"callgrind wrote no counts next to {output}")
    return max(totals)


def measure(requests: int, concurrency: int, log) -> dict[str, int]:
    result: dict[str, int] = {}
    with production_targets() as (cores, direct, bare, gateway, scratch):
        outputs = {"bare": scratch / "bare.callgrind", "gateway": scratch / "gateway.callgrind"}
        under_callgrind(bare, outputs["bare"])
        under_callgrind(gateway, outputs["gateway"])
        load = None
        try:
            start(direct, bare, gateway, log)
            load = LoadGenerator(cores.load)
            for name, target in (("bare", bare), ("gateway", gateway)):
                result[f"{name}_instructions"] = round(
                    counted_instructions(load, target, outputs[name], concurrency, requests) / requests
                )
                log(f"{name}: {result[f'{name}_instructions']:,} instructions per request")
        finally:
            if load is not None:
                load.close()
            stop_all([direct.service, bare.service, *gateway.services])
    result["added_instructions"] = result["gateway_instructions"] - result["bare_instructions"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests counted per proxy (default 500)")
    parser.add_argument("--concurrency", type=int, default=1, help="connections (default 1)")
    arguments = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(orjson.dumps(measure(arguments.requests, arguments.concurrency, log)).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
