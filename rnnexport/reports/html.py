"""The HTML report, for people: one self-contained page (inline CSS and SVG, nothing fetched)
with the table and, per export, a plot of max abs error against sequence length."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.reports.text import cases, error, failing

if TYPE_CHECKING:
    from rnnexport.parity import ExportResult
    from rnnexport.reports.report import ParityReport


def errors_by_length(e: ExportResult) -> list[tuple[int, float | None, bool]]:
    """(length, worst max abs error over outputs and batches, passed) of the full-sequence cases.

    The error is None where an output held NaN or Inf, or the case did not run."""
    worst: dict[int, tuple[float | None, bool]] = {}
    for c in e.checked:
        if c.case.chunk is not None or c.case.length is None:
            continue
        errors = [o.max_abs for o in c.outputs]
        value = None if c.error or any(x is None or not math.isfinite(x) for x in errors) else max(errors, default=0.0)
        before = worst.get(c.case.length)
        if before is None:
            worst[c.case.length] = (value, bool(c))
        else:
            merged = None if before[0] is None or value is None else max(before[0], value)
            worst[c.case.length] = (merged, before[1] and bool(c))
    return [(length, *worst[length]) for length in sorted(worst)]


def _svg_plot(e: ExportResult) -> str:
    """Max abs error (log) against sequence length (log) for one export, with its atol as a dashed line."""
    points = errors_by_length(e)
    if not points:
        return "<p class=note>No full-sequence cases to plot.</p>"
    width, height, left, right, top, bottom = 420, 220, 58, 12, 12, 34
    floor = 1e-10
    finite = [v for _, v, _ in points if v is not None]
    low = math.floor(math.log10(max(min([*finite, e.tolerance.atol or floor]) or floor, floor))) - 1
    high = math.ceil(math.log10(max([*finite, e.tolerance.atol, floor]))) + 1
    lengths = [length for length, _, _ in points]
    x_low, x_high = math.log2(min(lengths)), math.log2(max(lengths))
    x_span = max(x_high - x_low, 1.0)

    def x(length: int) -> float:
        return left + (math.log2(length) - x_low) / x_span * (width - left - right)

    def y(value: float | None) -> float:
        if value is None:
            return top
        exponent = math.log10(max(value, 10.0 ** low))
        return top + (high - exponent) / (high - low) * (height - top - bottom)

    def text(at_x: float, at_y: float, kind: str, anchor: str, content: str) -> str:
        return f'<text x="{at_x:.1f}" y="{at_y:.1f}" class={kind} text-anchor={anchor}>{content}</text>'

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="max abs error against sequence length">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'class=frame />']
    for exponent in range(low, high + 1, max(1, (high - low) // 5)):
        parts.append(text(left - 4, y(10.0 ** exponent) + 4, "tick", "end", f"1e{exponent}"))
    for length in lengths:
        parts.append(text(x(length), height - bottom + 14, "tick", "middle", str(length)))
    parts.append(text((left + width) / 2, height - 4, "axis", "middle", "sequence length"))
    if e.tolerance.atol > 0:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(e.tolerance.atol):.1f}" '
                     f'y2="{y(e.tolerance.atol):.1f}" class=tol><title>atol {e.tolerance.atol:g}</title></line>')
    path = " ".join(f"{'L' if i else 'M'}{x(length):.1f},{y(value):.1f}" for i, (length, value, _) in enumerate(points))
    parts.append(f'<path d="{path}" class=line />')
    for length, value, passed in points:
        label = "NaN/Inf or no output" if value is None else f"{value:.3g}"
        parts.append(f'<circle cx="{x(length):.1f}" cy="{y(value):.1f}" r="4" class="{"ok" if passed else "bad"}">'
                     f'<title>length {length}: max abs err {label}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
.PASS { color: #1a7f37; font-weight: bold; } .FAIL, .NOT { color: #cf222e; font-weight: bold; }
.export { margin: 1.5em 0; } .note { color: #666; } code { background: #f4f4f4; padding: 0 3px; }
svg .frame { fill: none; stroke: #999; } svg .tick, svg .axis { font-size: 11px; fill: #555; }
svg .tol { stroke: #cf222e; stroke-dasharray: 5 4; } svg .line { fill: none; stroke: #0969da; stroke-width: 2; }
svg .ok { fill: #0969da; } svg .bad { fill: #cf222e; }
"""


def _esc(text: str) -> str:
    """Text content, not attributes: quotes stay as they are."""
    return html.escape(text, quote=False)


def render(report: ParityReport) -> str:
    esc = _esc
    rows = "".join(
        f"<tr><td>{esc(Path(e.source).name)}</td><td>{esc(e.target)}</td><td><code>{esc(Path(e.path).name)}</code></td>"
        f"<td>{cases(e)}</td><td>{error(e)}</td><td>{e.criterion}</td>"
        f"<td class={e.status.split()[0]}>{e.status}</td></tr>"
        for e in report.exports
    )
    sections = []
    for e in report.exports:
        listed = "".join(f"<li><code>{esc(line)}</code></li>" for line in failing(e))
        drift = f"<p><b>{esc(e.drift.describe())}</b></p>" if e.drift else ""
        sections.append(
            f"<div class=export><h3>{esc(e.target)} <code>{esc(e.path)}</code> "
            f"<span class={e.status.split()[0]}>{e.status}</span></h3>"
            f"<p class=note>source {esc(e.source)}; runs on {esc(e.device)}; reference on {esc(e.reference_device)}; "
            f"{e.tolerance}</p>{_svg_plot(e)}{drift}{f'<ul>{listed}</ul>' if listed else ''}</div>"
        )
    environment = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                          for k, v in {**report.versions, **report.environment}.items())
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>rnnexport parity report</title>"
        f"<style>{STYLE}</style></head><body><h1>rnnexport parity report</h1>"
        f"<p class={'PASS' if report else 'FAIL'}>{esc(report.headline)}</p>"
        f"<p class=note>device {esc(report.device)}, seed {report.seed}</p>"
        "<table><tr><th>source</th><th>target</th><th>export</th><th>cases</th><th>max abs err</th>"
        f"<th>tolerance</th><th>result</th></tr>{rows}</table>"
        f"<h2>Error against sequence length</h2>{''.join(sections)}"
        f"<h2>What the numbers depend on</h2><table>{environment}</table></body></html>\n"
    )
