"""Two workers on two cores, stated honestly on a machine that has only two.

The load generator, the upstream, the usage writer, Redis and PostgreSQL need CPU while the
gateway is measured, so on two cores its two workers never hold both cores; their raw rate says
how the machine did, not what two cores would carry. What carries over is the gateway's CPU per
response, read from /proc over the measured window (`bench.cpu_watch`): if a second worker does
not make each response cost more (locks, shared connections, a contended Redis), two cores carry
twice what one does, provided each worker has enough connections to fill its core. So:

- rate per core = responses per second / cores the two workers used, against one worker's on a
  core of its own (its rate / the cores it used), in the same run;
- when each worker holds at least as many client connections as the 16-connection workload, and
  that workload keeps one worker as busy as 64 connections do (within 10%) in the same run, two
  cores of their own carry 2 x the rate per core;
- otherwise (a worker left with too few connections: the workers share one listening socket and
  the kernel hands connections to whichever accepts first) only the busier worker is sure to fill
  its core, and two cores carry rate per core / the busiest worker's share of the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.stats import CellFigures

TARGET_RATIO = 1.8
SATURATION_MARGIN = 0.9


@dataclass(frozen=True, slots=True)
class TwoWorkerScaling:
    one: CellFigures  # one worker, pinned to a core of its own
    two: CellFigures  # two workers on both cores, beside everything else
    fewer: CellFigures  # one worker with fewer connections (16): are they enough to fill a core?
    fewer_connections: int

    @property
    def each_worker_fills_a_core(self) -> bool:
        return (
            self.two.serving_processes >= 2
            and self.two.fewest_connections >= self.fewer_connections
            and self.fewer.proxy_cores >= SATURATION_MARGIN * self.one.proxy_cores
        )

    @property
    def one_per_core(self) -> float:
        return self.one.rate / self.one.proxy_cores

    @property
    def two_per_core(self) -> float:
        return self.two.rate / self.two.proxy_cores

    @property
    def projected_rate(self) -> float:
        if self.each_worker_fills_a_core:
            return 2 * self.two_per_core
        return self.two_per_core / self.two.busiest_process_share

    @property
    def projected_ratio(self) -> float:
        return self.projected_rate / self.one_per_core

    @property
    def measured_ratio(self) -> float:
        return self.two.rate / self.one.rate

    @property
    def complete(self) -> bool:
        return not any(
            math.isnan(value) or value <= 0
            for value in (
                self.one.rate,
                self.one.proxy_cores,
                self.two.rate,
                self.two.proxy_cores,
                self.two.busiest_process_share,
            )
        )

    def describe(self, label: str) -> str:
        if not self.complete:
            return f"Two workers ({label}): not enough figures to project (CPU readings missing)."
        one, two, fewer = self.one, self.two, self.fewer
        met = "met" if self.projected_ratio >= TARGET_RATIO else "NOT met"
        if self.each_worker_fills_a_core:
            projection = (
                f"each worker held at least {two.fewest_connections:.0f} connections, and {self.fewer_connections} keep one "
                f"worker {fewer.proxy_cores:.2f} cores busy (64: {one.proxy_cores:.2f}), so each fills a core of its own: "
                f"2 × {self.two_per_core:,.0f}/s per core"
            )
        else:
            projection = (
                f"a worker held only {two.fewest_connections:.0f} connections, so only the busier one is sure to fill "
                f"its core: {self.two_per_core:,.0f}/s per core / {two.busiest_process_share:.2f}"
            )
        return (
            f"Two workers ({label}): one worker on its own core {one.rate:,.0f}/s using {one.proxy_cores:.2f} cores "
            f"({one.proxy_cpu_us:,.0f} µs CPU per response, {self.one_per_core:,.0f}/s per core). Two workers on both cores "
            f"{two.rate:,.0f}/s ({self.measured_ratio:.2f}× measured) using {two.proxy_cores:.2f} cores "
            f"({two.proxy_cpu_us:,.0f} µs per response, {self.two_per_core:,.0f}/s per core; the busiest worker "
            f"{two.busiest_process_share:.0%} of the CPU), beside the load generator's {two.load_generator_cores:.2f} cores "
            f"and {two.others_cores:.2f} of the upstream, the usage writer, Redis and PostgreSQL. Projected to two cores "
            f"of their own: {projection} = {self.projected_rate:,.0f}/s, {self.projected_ratio:.2f}× one worker per core "
            f"(target ≥ {TARGET_RATIO}×: {met})."
        )
