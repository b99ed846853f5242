"""CPU time of the benchmark's processes over a cell's measured window, read by the load generator.

On a 2-core machine the proxy cannot have both cores to itself: the load generator, the upstream,
the usage writer, Redis and PostgreSQL need CPU too. Reading every process's CPU time at the start
and the end of the measured window (not of the whole cell: warm-up and tail are excluded) says how
much CPU the proxy spent per request and how many cores it held, so a figure measured on shared
cores can be stated per core of the proxy's own CPU, with everyone else's share in the open.
"""

from __future__ import annotations

import os
from pathlib import Path

# (group name, process ids): the load generator reads each group's CPU time, in nanoseconds.
WatchedGroups = tuple[tuple[str, tuple[int, ...]], ...]
PROXY_GROUP_PREFIX = "proxy:"  # one group per process of the proxy under test: its workers' split
STORE_COMMANDS = ("redis-server", "postgres")
ESTABLISHED = "01"  # the state column of /proc/net/tcp


def run_nanoseconds(pids: list[int] | tuple[int, ...]) -> int:
    """CPU time every thread of these processes has run, in nanoseconds (the kernel's scheduler
    clock: /proc/<pid>/stat counts in 10 ms ticks, too coarse for a window of a second or two)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    return total


def machine_ticks() -> tuple[int, int]:
    """(ticks stolen, ticks in all) of the whole machine so far, from /proc/stat's first line. On a
    virtual machine the hypervisor may run other guests on our cores: that time is "steal", and a
    run that lost much of it measures the host's other tenants as much as the code."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time the hypervisor withheld between two `machine_ticks`."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def snapshot(groups: WatchedGroups) -> dict[str, int]:
    return {name: run_nanoseconds(pids) for name, pids in groups}


def spent_seconds(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    return {name: (after.get(name, 0) - start) / 1e9 for name, start in before.items()}


def store_server_pids() -> tuple[int, ...]:
    """Every Redis and PostgreSQL server process on this machine: the production-like gateway's
    requests cost them CPU on the same two cores (none of them serves the embedded gateway)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        if command in STORE_COMMANDS:
            found.append(int(entry))
    return tuple(found)


def proxy_groups(pids: list[int]) -> WatchedGroups:
    return tuple((f"{PROXY_GROUP_PREFIX}{pid}", (pid,)) for pid in pids)


def established_connections(pids: list[int] | tuple[int, ...], port: int) -> int:
    """How many established TCP connections to `port` these processes hold (their sockets' inodes
    matched against /proc/net/tcp and tcp6): how a listening socket shared by workers split them."""
    inodes = set()
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    if not inodes:
        return 0
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == ESTABLISHED
                and int(fields[1].rsplit(":", 1)[1], 16) == port
                and fields[9] in inodes
            ):
                count += 1
    return count
