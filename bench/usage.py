"""`make bench-usage` (python -m bench.usage): years of usage records in a PostgreSQL database of
its own, and how the usage pages, the writer and retention cope with them.

python -m bench.usage                         # 10 M records (about 15 minutes to load here)
python -m bench.usage --records 1000000       # a smaller run
python -m bench.usage --keep                  # leave the database for a look afterwards
python -m bench.usage --reuse --keep          # time again against a database kept before

The database (`bench_usage` unless --database) is made on the PostgreSQL server of
BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres), migrated, loaded by
`manage.py generate_usage` and dropped at the end unless --keep. Every figure is the median of
--repetitions runs (3).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench.stores import LOCAL_POSTGRES

ROOT = Path(__file__).resolve().parent.parent
TARGETS = (
    ("dashboard, 30-day view", "dashboard_30d_s", "< 300 ms"),
    ("dashboard, 30-day view, nothing cached", "dashboard_30d_cold_s", "< 300 ms"),
    ("GET /admin/usage, one device, 30 days", "admin_usage_device_s", "< 300 ms"),
    ("GET /admin/usage, one device, by day", "admin_usage_device_by_day_s", "< 300 ms"),
    ("admin usage records list", "admin_list_s", "< 1 s"),
    ("admin usage records list, one device", "admin_list_device_s", "< 1 s"),
)


def database_url(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _run(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    return time.monotonic() - started


def _table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[index]) for row in rows) for index in range(3)]
    lines = [f"{row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2]}" for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def report(figures: dict, load_s: float | None, records: int) -> str:
    rows = [("figure", "median", "target")]
    if load_s is not None:
        rows.append((f"load {records:,} records + rollups", f"{load_s:,.0f} s", ""))
    rows += [(label, f"{figures[key] * 1000:,.0f} ms", target) for label, key, target in TARGETS]
    rows.append(("usage writer, bursts of new records", f"{figures['writer_records_per_s']:,.0f} /s", ">= 5,000 /s"))
    if "retention_partition_s" in figures:
        rows.append(
            (
                f"retention: drop a month's partition ({figures['retention_partition_records']:,} records)",
                f"{figures['retention_partition_s'] * 1000:,.0f} ms",
                f"lock held {figures['retention_partition_lock_s'] * 1000:,.1f} ms",
            )
        )
        rows.append(
            (
                f"retention: delete a month in chunks ({figures['retention_batched_records']:,} records)",
                f"{figures['retention_batched_s']:,.1f} s",
                f"longest chunk {figures['retention_batched_longest_chunk_s'] * 1000:,.0f} ms",
            )
        )
    return _table(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.usage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--database", default="bench_usage")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="time a database kept by an earlier --keep run")
    args = parser.parse_args(argv)
    server = os.environ.get("BENCH_POSTGRES_URL", LOCAL_POSTGRES)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(server, args.database),
        "DJANGO_DEBUG": "true",
        "USAGE_RETENTION_DAYS": "3650",
    }
    env.pop("REDIS_URL", None)
    load_s = None
    with psycopg.connect(server, autocommit=True) as admin:
        if not args.reuse:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.database}"')
            admin.execute(f'CREATE DATABASE "{args.database}"')
    try:
        if not args.reuse:
            _run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env)
            load_s = _run([sys.executable, "manage.py", "generate_usage", f"--records={args.records}"], env)
        probe = subprocess.run(
            [sys.executable, "-m", "bench.usage_probe", f"--repetitions={args.repetitions}"]
            + ([] if not args.keep else ["--skip-retention"]),
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(probe.stdout)
        print(f"\n{figures['records']:,} usage records; busiest device {figures['device_records_30d']:,} records in 30 days")
        print(report(figures, load_s, args.records))
    finally:
        if not args.keep:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
