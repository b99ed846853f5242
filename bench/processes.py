"""The benchmark's server processes: start pinned to cores, wait until they answer, measure, stop.

Two cores: the proxy under test gets one to itself; the upstream and the load generator share the
other, so the proxy never competes with the load it is given. With one core nothing is pinned.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CorePlan:
    proxy: frozenset[int]
    load: frozenset[int]  # the upstream and the load generator

    @property
    def pinned(self) -> bool:
        return bool(self.proxy) and self.proxy.isdisjoint(self.load)


def plan_cores(available: set[int]) -> CorePlan:
    """The last core for the proxy, the rest for upstream and load; nothing pinned on one core."""
    cores = sorted(available)
    if len(cores) < 2:
        return CorePlan(frozenset(cores), frozenset(cores))
    return CorePlan(frozenset(cores[-1:]), frozenset(cores[:-1]))


def raise_open_file_limit() -> int:
    """Thousands of held streams need thousands of sockets in every process; children inherit this."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """A server process of the benchmark, with its log in a temporary file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    cpus: frozenset[int]
    process: subprocess.Popen | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="bench-", suffix=".log")[1]))

    def start(self) -> Service:
        cpus = set(self.cpus)

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=BASE_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pin,
                start_new_session=True,
            )
        return self

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on port {self.port} within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def pids(self) -> list[int]:
        """The server and its descendants (uvicorn's worker, if it forks one)."""
        if self.process is None or self.process.poll() is not None:
            return []
        return process_tree(self.process.pid)

    def restart(self) -> None:
        self.stop()
        self.start().wait_listening()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def stop_all(services: list[Service], timeout: float = 10.0) -> None:
    """SIGTERM to all at once, then wait (daphne takes seconds to close): teardown in one wait."""
    running = [service for service in services if service.process is not None and service.process.poll() is None]
    for service in running:
        service.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for service in running:
        try:
            service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


def process_tree(pid: int) -> list[int]:
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                found.extend(int(child) for child in children)
        except OSError:
            continue
    return found


def resident_bytes(pids: list[int]) -> int:
    """Resident memory of these processes now (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def wait_until_idle(pids: list[int], *, busy_fraction: float = 0.1, interval: float = 0.2, limit: float = 5.0) -> float:
    """Wait until these processes use under `busy_fraction` of a core (a proxy still closing the
    last cell's streams would skew the next one); returns the seconds waited, at most `limit`."""
    started = time.monotonic()
    before = cpu_seconds(pids)
    while time.monotonic() - started < limit:
        time.sleep(interval)
        after = cpu_seconds(pids)
        if after - before < busy_fraction * interval:
            break
        before = after
    return time.monotonic() - started
