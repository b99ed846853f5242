"""Server-side charts for the admin dashboard: inline SVG, no JavaScript and nothing fetched from a
CDN (operators' networks are often closed). Every label is escaped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 760, 200
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 28


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    values: Sequence[float]


def _ticks(labels: Sequence[str], every: int) -> list[tuple[int, str]]:
    return [(index, label) for index, label in enumerate(labels) if index % every == 0]


def stacked_bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    value_format: Callable[[float], str] = lambda value: f"{value:,.0f}",
) -> SafeString:
    """One bar per label, the series stacked bottom-up; a tooltip on each segment, a legend, the max on the y axis."""
    count = max(len(labels), 1)
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    peak = max(totals, default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / count
    bar_w = max(slot * 0.8, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="usage-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#999"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#999"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 10}" text-anchor="end" font-size="11">'
        f"{escape(value_format(peak if any(totals) else 0))}</text>",
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    for index, label in enumerate(labels):
        x = LEFT + index * slot + (slot - bar_w) / 2
        base: float = TOP + plot_h
        for s in series:
            value = s.values[index]
            if value <= 0:
                continue
            height = plot_h * value / peak
            base -= height
            tip = f"{label} {s.name}: {value_format(value)}"
            parts.append(
                f'<rect x="{x:.2f}" y="{base:.2f}" width="{bar_w:.2f}" height="{height:.2f}" fill="{escape(s.color)}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    for index, label in _ticks(labels, max(count // 8, 1)):
        x = LEFT + index * slot + slot / 2
        parts.append(f'<text x="{x:.2f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="10">{escape(label)}</text>')
    legend_x = LEFT + 8
    for s in series:
        parts.append(f'<rect x="{legend_x}" y="{TOP}" width="10" height="10" fill="{escape(s.color)}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{TOP + 9}" font-size="11">{escape(s.name)}</text>')
        legend_x += 22 + 7 * len(s.name)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (built from escaped parts only)
