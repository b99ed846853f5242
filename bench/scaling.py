"""Two workers on two cores, stated honestly on a machine that has only two.

While the gateway is measured, the load generator, the upstream, the usage writer, Redis and
PostgreSQL need CPU too, so two workers never hold two cores here; their raw rate says how the
machine did, not what two cores carry. What carries over is a worker's rate per core of its own
CPU (responses per second / cores its processes used, read from /proc over the measured window by
`bench.cpu_watch`) when it is saturated, as a worker with 64 connections on a core of its own is.

So the run puts two workers on the proxy's core (the load generator and the rest stay on the other
core, as for one worker) and compares their rate per core with one worker's there. Both are
saturated; what differs is what a second worker costs each response (locks, shared connections, a
contended Redis, the time slicing between them). Two cores of their own then carry

    2 x (two workers' rate per core on one core / one worker's)

provided each worker has connections enough to fill its core: the workers share one listening
socket and the kernel hands each connection to whichever accepts first, so the run prints the
fewest a worker held, and how busy one worker is with 16 connections.

It also prints a lower bound: one and two workers each pinned to both cores, beside everything
else. There the two workers share the cores with five other processes and neither is saturated, so
each response costs more (fewer requests ready per turn of the event loop, more preemption).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.stats import CellFigures

TARGET_RATIO = 1.8


def per_core(figures: CellFigures) -> float:
    return figures.rate / figures.proxy_cores


def measured(*figures: CellFigures | None) -> bool:
    return all(
        item is not None and not any(math.isnan(value) or value <= 0 for value in (item.rate, item.proxy_cores))
        for item in figures
    )


@dataclass(frozen=True, slots=True)
class TwoWorkerScaling:
    dedicated: CellFigures  # one worker, pinned to a core of its own
    two_on_one_core: CellFigures  # two workers pinned to that same core
    fewer: CellFigures | None = None  # one worker with 16 connections on its own core
    shared_one: CellFigures | None = None  # one worker on both cores, beside everything else
    shared_two: CellFigures | None = None  # two workers on both cores, beside everything else

    @property
    def complete(self) -> bool:
        return measured(self.dedicated, self.two_on_one_core)

    @property
    def second_worker_efficiency(self) -> float:
        """Two saturated workers' rate per core against one's, on the same core."""
        return per_core(self.two_on_one_core) / per_core(self.dedicated)

    @property
    def projected_ratio(self) -> float:
        return 2 * self.second_worker_efficiency

    @property
    def projected_rate(self) -> float:
        return self.dedicated.rate * self.projected_ratio

    @property
    def lower_bound_ratio(self) -> float:
        """Two workers against one, both sharing both cores with everything else; the busier worker
        fills its core first."""
        if not measured(self.shared_one, self.shared_two) or self.shared_two is None or self.shared_one is None:
            return math.nan
        return per_core(self.shared_two) / per_core(self.shared_one) / self.shared_two.busiest_process_share

    def describe(self, label: str) -> str:
        if not self.complete:
            return f"Two workers ({label}): not projected (a row or its CPU readings are missing)."
        one, two = self.dedicated, self.two_on_one_core
        met = "met" if self.projected_ratio >= TARGET_RATIO else "NOT met"
        lines = [
            f"Two workers ({label}): one worker on a core of its own {one.rate:,.0f}/s on {one.proxy_cores:.2f} cores "
            f"({per_core(one):,.0f}/s per core, {one.proxy_cpu_us:,.0f} µs CPU per response); two workers on that core "
            f"{two.rate:,.0f}/s on {two.proxy_cores:.2f} cores ({per_core(two):,.0f}/s per core, {two.proxy_cpu_us:,.0f} µs "
            f"per response). A second worker keeps {self.second_worker_efficiency:.3f} of a worker's rate per core, so two "
            f"cores of their own carry 2 × {self.second_worker_efficiency:.3f} = {self.projected_ratio:.2f}× one worker, "
            f"{self.projected_rate:,.0f}/s (target ≥ {TARGET_RATIO}×: {met}), provided each worker fills its core: the "
            f"fewer-connected worker held {two.fewest_connections:.0f} of the connections"
            + (f", and one worker with 16 connections was {self.fewer.proxy_cores:.2f} cores busy." if self.fewer else ".")
        ]
        shared_one, shared_two = self.shared_one, self.shared_two
        if shared_one is not None and shared_two is not None and not math.isnan(self.lower_bound_ratio):
            lines.append(
                f"Lower bound, one and two workers each on both cores beside the load generator "
                f"({shared_two.load_generator_cores:.2f} cores) and the upstream, usage writer, Redis and PostgreSQL "
                f"({shared_two.others_cores:.2f} cores): one worker {per_core(shared_one):,.0f}/s per core "
                f"({shared_one.proxy_cpu_us:,.0f} µs per response), two workers {per_core(shared_two):,.0f}/s per core "
                f"({shared_two.proxy_cpu_us:,.0f} µs per response, the busier {shared_two.busiest_process_share:.0%} of "
                f"the CPU): {self.lower_bound_ratio:.2f}×; as measured, two workers on both cores did "
                f"{shared_two.rate / one.rate:.2f}× one worker on its own core."
            )
        return " ".join(lines)
