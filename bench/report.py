"""The run's one table (printed, and pasted into the README) and its JSON file."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.run import RunRecord
from bench.scaling import TwoWorkerScaling
from bench.stats import CellFigures, Comparison, combine, compare
from bench.targets import (
    ASGI,
    DIRECT,
    GATEWAY,
    GATEWAY_ONE_WORKER_SHARED,
    GATEWAY_PRODUCTION,
    GATEWAY_TWO_WORKERS,
    GATEWAY_TWO_WORKERS_ONE_CORE,
    PASSTHROUGH,
    SCENARIOS,
    TWO_WORKER_SCENARIOS,
    VARIANT,
    Scenario,
    Target,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COLUMNS = (
    "workload",
    "target",
    "rate /s",
    "p50 ms",
    "p99 ms",
    "added p50 ms",
    "× direct",
    "× ninja",
    "× ASGI",
    "errors",
    "proxy cores",
    "CPU µs/resp",
    "peak RSS MB",
    "KB per held stream",
)


@dataclass(frozen=True, slots=True)
class Row:
    scenario: Scenario
    target: Target
    comparison: Comparison


def build_rows(record: RunRecord) -> list[Row]:
    """Median figures per (scenario, target), compared with direct and the pass-through of the same run."""
    combined: dict[tuple[str, str], CellFigures] = {}
    for scenario in SCENARIOS:
        for target in record.targets:
            cells = [cell.figures for cell in record.cells if cell.scenario == scenario.key and cell.target == target.key]
            if cells:
                combined[scenario.key, target.key] = combine(cells)
    rows = []
    for scenario in SCENARIOS:
        direct = combined.get((scenario.key, DIRECT))
        passthrough = combined.get((scenario.key, PASSTHROUGH))
        asgi = combined.get((scenario.key, ASGI))
        for target in record.targets:
            figures = combined.get((scenario.key, target.key))
            if figures is not None:
                rows.append(Row(scenario, target, compare(figures, direct, passthrough, asgi)))
    return rows


def number(value: float, *, decimals: int | None = None) -> str:
    if value is None or math.isnan(value):
        return "–"
    if decimals is None:
        decimals = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{decimals}f}"


def format_cells(row: Row) -> list[str]:
    figures, comparison = row.comparison.figures, row.comparison
    proxy = row.target.role != DIRECT
    return [
        row.scenario.label,
        row.target.label,
        number(figures.rate),
        number(figures.p50_ms),
        number(figures.p99_ms),
        number(comparison.added_p50_ms) if proxy else "",
        number(comparison.vs_direct, decimals=3) if proxy else "",
        number(comparison.vs_passthrough, decimals=2) if row.target.role == GATEWAY else "",
        number(comparison.vs_asgi, decimals=2) if row.target.role in (PASSTHROUGH, VARIANT, GATEWAY) else "",
        str(figures.errors),
        number(figures.proxy_cores, decimals=2) if proxy and not math.isnan(figures.proxy_cores) else "",
        number(figures.proxy_cpu_us) if proxy and not math.isnan(figures.proxy_cpu_us) else "",
        number(figures.peak_rss / 2**20, decimals=0) if proxy and not math.isnan(figures.peak_rss) else "",
        number(figures.bytes_per_stream / 1024, decimals=1) if proxy and not math.isnan(figures.bytes_per_stream) else "",
    ]


def format_table(rows: list[Row]) -> str:
    """A Markdown table; latencies of SSE rows are first-byte latencies."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(format_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def load_generator_ceiling(rows: list[Row]) -> dict[str, float]:
    """What the load generator reached against the direct upstream (sharing its core), per workload."""
    return {row.scenario.key: row.comparison.figures.rate for row in rows if row.target.role == DIRECT}


def two_worker_scaling(rows: list[Row]) -> list[tuple[str, TwoWorkerScaling]]:
    """The two-worker projection in each scenario the two-worker targets ran in (bench/scaling.py)."""
    by_key = {(row.scenario.key, row.target.key): row.comparison.figures for row in rows}
    fewer = by_key.get(("plain-16", GATEWAY_PRODUCTION))
    found = []
    for scenario in SCENARIOS:
        dedicated = by_key.get((scenario.key, GATEWAY_PRODUCTION))
        two_on_one_core = by_key.get((scenario.key, GATEWAY_TWO_WORKERS_ONE_CORE))
        if scenario.key in TWO_WORKER_SCENARIOS and dedicated and two_on_one_core:
            shared_one = by_key.get((scenario.key, GATEWAY_ONE_WORKER_SHARED))
            shared_two = by_key.get((scenario.key, GATEWAY_TWO_WORKERS))
            found.append((scenario.label, TwoWorkerScaling(dedicated, two_on_one_core, fewer, shared_one, shared_two)))
    return found


def unmeasured(record: RunRecord) -> dict[str, str]:
    return {target.label: target.unavailable for target in record.targets if target.unavailable}


def describe(record: RunRecord, rows: list[Row]) -> str:
    config = record.config
    ceiling = load_generator_ceiling(rows)
    lines = [
        f"{config.repetitions} repetition(s) of {config.duration:g} s per cell (after {config.warmup:g} s warm-up); medians; "
        f"proxy on core(s) {sorted(record.cores.proxy)}, upstream and load generator on {sorted(record.cores.load)}; "
        f"stream shape {config.stream_shape}; {config.held_streams} held slow streams (one event a second); "
        f"{record.seconds:.0f} s in all; load average {record.load_average.get('before', math.nan):.1f} before, "
        f"{record.load_average.get('after', math.nan):.1f} after (2 cores: above ~2, other work shared the machine); "
        f"the hypervisor took {record.steal_share:.1%} of the machine's CPU time (steal, /proc/stat: "
        "above a few percent, the figures measure the host's other guests too).",
        "Latencies: whole response for JSON, first body byte for SSE. 'added p50' is against direct in the same run; "
        "'× ninja' and '× ASGI' compare rates with the bare ninja pass-through (b) and the bare ASGI one. "
        "'proxy cores' is the CPU the proxy's processes used over the measured window (from /proc), "
        "'CPU µs/resp' that CPU per response completed in it.",
    ]
    if ceiling:
        lines.append(
            "Load generator ceiling against the direct upstream (one shared core): "
            + ", ".join(f"{key} {number(rate)}/s" for key, rate in ceiling.items())
            + "."
        )
    lines += [
        f"The gateway's {name} process (on the load core(s)) used {seconds:.1f} CPU-seconds in the whole run."
        for name, seconds in record.companion_cpu_seconds.items()
    ]
    lines += [scaling.describe(label) for label, scaling in two_worker_scaling(rows)]
    lines += [f"NOT MEASURED: {label}: {reason}" for label, reason in unmeasured(record).items()]
    return "\n".join(lines)


def clean(value: object) -> object:
    """JSON without NaN (null instead)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(key): clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(item) for item in value]
    return value


def report_json(record: RunRecord, rows: list[Row]) -> dict:
    return clean(
        {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.started_at)),
            "seconds": record.seconds,
            "config": asdict(record.config),
            "cores": {"proxy": sorted(record.cores.proxy), "load": sorted(record.cores.load), "pinned": record.cores.pinned},
            "load_average": record.load_average,
            "steal_share": record.steal_share,
            "companion_cpu_seconds": record.companion_cpu_seconds,
            "targets": [
                {
                    "key": target.key,
                    "role": target.role,
                    "label": target.label,
                    "argv": target.service.argv[1:],
                    "unavailable": target.unavailable or None,
                }
                for target in record.targets
            ],
            "load_generator_ceiling": load_generator_ceiling(rows),
            "two_workers": [
                {
                    "scenario": label,
                    "second_worker_efficiency": scaling.second_worker_efficiency,
                    "lower_bound_ratio": scaling.lower_bound_ratio,
                    "projected_rate": scaling.projected_rate,
                    "projected_ratio": scaling.projected_ratio,
                }
                for label, scaling in two_worker_scaling(rows)
                if scaling.complete
            ],
            "combined": [
                {
                    "scenario": row.scenario.key,
                    "target": row.target.key,
                    **row.comparison.figures.as_json(),
                    "added_p50_ms": row.comparison.added_p50_ms,
                    "vs_direct": row.comparison.vs_direct,
                    "vs_passthrough": row.comparison.vs_passthrough,
                    "vs_asgi": row.comparison.vs_asgi,
                }
                for row in rows
            ],
            "cells": [
                {
                    "scenario": cell.scenario,
                    "target": cell.target,
                    "repetition": cell.repetition,
                    **cell.figures.as_json(),
                    "error_kinds": cell.error_kinds,
                }
                for cell in record.cells
            ],
        }
    )


def write_json(data: dict, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + ".json")
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
