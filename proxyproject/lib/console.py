"""Readable output for management commands: aligned tables and a progress bar on long work."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from io import TextIOBase
from typing import TextIO, TypeVar

T = TypeVar("T")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell, with a rule under the header; numbers right-aligned."""
    text_rows = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in text_rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    numeric = [all(_looks_numeric(row[i]) for row in text_rows) and bool(text_rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(cells, widths, numeric)).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in text_rows]
    if not text_rows:
        out.append("(none)")
    return "\n".join(out)


def _looks_numeric(cell: str) -> bool:
    stripped = cell.replace(",", "").replace(".", "", 1).lstrip("-$")
    return stripped.isdigit()


def progress(
    items: Iterable[T], total: int, label: str, stream: TextIO | TextIOBase | None = None, width: int = 30
) -> Iterator[T]:
    """Yield items while drawing `label [#####-----] n/total` on a terminal (one final line otherwise)."""
    stream = stream or sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    done = 0
    for item in items:
        yield item
        done += 1
        if interactive:
            filled = int(width * done / total) if total else width
            stream.write(f"\r{label} [{'#' * filled}{'-' * (width - filled)}] {done}/{total}")
            stream.flush()
    if interactive:
        stream.write("\n")
    else:
        stream.write(f"{label}: {done}/{total} done\n")
    stream.flush()
