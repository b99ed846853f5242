"""The load generator process: one workload at a time, on uvloop, pinned to the load cores."""

from __future__ import annotations

import asyncio
import os
import signal
from multiprocessing.connection import Connection

import uvloop

from bench.capacity import CapacityWorkload, run_capacity
from bench.loadgen import run_closed_loop


def serve_workloads(connection: Connection, cpus: set[int]) -> None:
    """Run each (endpoint, workload) received and send back its samples as plain data; None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the runner ends this process
    if cpus:
        os.sched_setaffinity(0, cpus)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        while (job := connection.recv()) is not None:
            endpoint, workload = job
            if isinstance(workload, CapacityWorkload):
                connection.send(loop.run_until_complete(run_capacity(endpoint, workload)).as_json())
            else:
                connection.send(loop.run_until_complete(run_closed_loop(endpoint, workload)).as_json())
    finally:
        loop.close()
