"""Figures from samples: percentiles, per-cell summaries, medians over repetitions, ratios.

A cell is one workload against one target in one repetition; the table quotes the median of each
figure over the repetitions, and ratios between medians measured in the same run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

from bench.cpu_watch import PROXY_GROUP_PREFIX
from bench.loadgen import LOAD_GENERATOR_GROUP


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the two nearest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is not within [0, 1]")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def median_of(values: Iterable[float]) -> float:
    """The median of the finite values; NaN when there are none (a cell that measured nothing)."""
    finite = [value for value in values if not math.isnan(value)]
    return statistics.median(finite) if finite else math.nan


def ratio(value: float, baseline: float) -> float:
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return value / baseline


def difference(value: float, baseline: float) -> float:
    if math.isnan(value) or math.isnan(baseline):
        return math.nan
    return value - baseline


@dataclass(frozen=True, slots=True)
class CellFigures:
    """One cell's figures. `rate` is responses (or streams) per second; latencies in milliseconds:
    whole response for plain requests, first body byte for streams. Memory in bytes."""

    rate: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    completed: int = 0
    errors: int = 0
    peak_rss: float = math.nan
    bytes_per_stream: float = math.nan
    held_streams: int = 0
    proxy_cores: float = math.nan  # cores the proxy's processes used over the measured window
    proxy_cpu_us: float = math.nan  # the proxy's CPU microseconds per response completed in the window
    busiest_process_share: float = math.nan  # the busiest proxy process's share of the proxy's CPU
    load_generator_cores: float = math.nan
    others_cores: float = math.nan  # the upstream, the proxy's companions, Redis and PostgreSQL
    serving_processes: float = math.nan  # proxy processes holding client connections
    fewest_connections: float = math.nan  # the connections of the serving process that holds fewest

    def as_json(self) -> dict:
        return {name: (None if isinstance(value, float) and math.isnan(value) else value) for name, value in asdict(self).items()}


def closed_loop_rate(connections: int, durations: Sequence[float]) -> float:
    """Responses per second of `connections` busy back to back (Little's law: N / mean duration).

    For streams, counting completions in a window of a second or two is coarse: every connection
    finishes a 0.4 s stream at about the same moments, so the count moves in steps of a whole
    round. Their mean duration is measured to the microsecond; the load generator's own gap
    between two requests is microseconds against the stream's hundreds of milliseconds."""
    if not durations or connections <= 0:
        return math.nan
    return connections / statistics.fmean(durations)


def cpu_figures(
    cpu_seconds: Mapping[str, float], span: float, completed: int, connections: Mapping[str, int]
) -> dict[str, float]:
    """The proxy's cores and CPU per response over the window, how its CPU and its client
    connections split between its processes, and the cores everyone else used (`bench.cpu_watch`
    names the groups)."""
    proxy = [seconds for name, seconds in cpu_seconds.items() if name.startswith(PROXY_GROUP_PREFIX)]
    if span <= 0 or not proxy:
        return {}
    proxy_total = sum(proxy)
    others = sum(
        seconds
        for name, seconds in cpu_seconds.items()
        if not name.startswith(PROXY_GROUP_PREFIX) and name != LOAD_GENERATOR_GROUP
    )
    return {
        "proxy_cores": proxy_total / span,
        "proxy_cpu_us": proxy_total / completed * 1e6 if completed else math.nan,
        "busiest_process_share": max(proxy) / proxy_total if proxy_total > 0 else math.nan,
        "load_generator_cores": cpu_seconds.get(LOAD_GENERATOR_GROUP, math.nan) / span,
        "others_cores": others / span,
        **connection_figures(connections),
    }


def connection_figures(connections: Mapping[str, int]) -> dict[str, float]:
    serving = [count for count in connections.values() if count > 0]
    if not serving:
        return {}
    return {"serving_processes": float(len(serving)), "fewest_connections": float(min(serving))}


def summarize(
    latencies: Sequence[float], completed: int, errors: int, window: float, *, rate: float | None = None, **extra: float
) -> CellFigures:
    """Figures of one cell from its samples (latencies in seconds, `window` the measured span);
    `rate` replaces completed / window when given; `extra` are memory and CPU figures."""
    if rate is None:
        rate = completed / window if window > 0 else math.nan
    return CellFigures(
        rate=rate,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        completed=completed,
        errors=errors,
        **extra,
    )


def combine(repetitions: Sequence[CellFigures]) -> CellFigures:
    """The median of every figure over the repetitions; errors are summed (one is one too many)."""
    if not repetitions:
        return CellFigures()
    values = {}
    for spec in fields(CellFigures):
        column = [getattr(cell, spec.name) for cell in repetitions]
        if spec.name == "errors":
            values[spec.name] = sum(column)
        elif spec.type == "int":
            values[spec.name] = int(statistics.median(column))
        else:
            values[spec.name] = median_of(column)
    return CellFigures(**values)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A target's combined figures against the direct baseline and the bare pass-throughs."""

    figures: CellFigures
    added_p50_ms: float = math.nan  # p50 minus the direct p50
    vs_direct: float = math.nan  # rate / direct rate
    vs_passthrough: float = math.nan  # rate / bare ninja pass-through rate
    vs_asgi: float = math.nan  # rate / bare ASGI pass-through rate


def compare(
    figures: CellFigures, direct: CellFigures | None, passthrough: CellFigures | None = None, asgi: CellFigures | None = None
) -> Comparison:
    return Comparison(
        figures=figures,
        added_p50_ms=difference(figures.p50_ms, direct.p50_ms) if direct else math.nan,
        vs_direct=ratio(figures.rate, direct.rate) if direct else math.nan,
        vs_passthrough=ratio(figures.rate, passthrough.rate) if passthrough else math.nan,
        vs_asgi=ratio(figures.rate, asgi.rate) if asgi else math.nan,
    )
