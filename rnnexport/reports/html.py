"""The HTML report, for people: one self-contained page (inline CSS and SVG, nothing fetched)
with the table and, per source, its exports' error against sequence length on one chart (a line
per export and batch) and, for streaming exports, against chunk size; then the latency table.
A quantized export is drawn by what judges it instead: its SNR against sequence length with the
`--min-snr` line, its top-1 agreement against length with the `--min-agreement` line where an
output is class scores, and its layers ranked by SNR."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.reports.text import cases, error, failing, latency_tables, latency_title, output_lines, worst

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from rnnexport.parity import ExportResult
    from rnnexport.parity.decisions import OutputQuality
    from rnnexport.reports.report import ParityReport

# One colour per export of a source; a failing point is ringed in red whatever its line.
COLORS = ("#0969da", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#57606a")
# One dash pattern per batch size, and the legend's CSS border for it.
DASHES = ("", "6 3", "2 3", "8 3 2 3")
BORDERS = dict(zip(DASHES, ("solid", "dashed", "dotted", "double")))


@dataclass(frozen=True)
class Series:
    """One line of a chart: (x, worst max abs error or None for NaN/Inf, passed) per point."""

    label: str
    color: str
    dash: str
    points: tuple[tuple[int, float | None, bool], ...]


def errors_by(e: ExportResult, streaming: bool) -> dict[int, dict[int, tuple[float | None, bool]]]:
    """Per batch, per length (per chunk size for `streaming`): the worst max abs error over
    outputs and cases, and whether every case there passed. None where an output held NaN or
    Inf, or the case did not run."""
    found: dict[int, dict[int, tuple[float | None, bool]]] = {}
    for c in e.checked:
        if (c.case.chunk is not None) != streaming or c.case.length is None or c.case.kind == "again":
            continue
        x = c.case.chunk if streaming else c.case.length
        errors = [o.max_abs for o in c.outputs]
        value = None if c.error or any(v is None or not math.isfinite(v) for v in errors) else max(errors, default=0.0)
        before = found.setdefault(c.case.batch, {}).get(x)
        if before is not None:
            value = None if before[0] is None or value is None else max(before[0], value)
        found[c.case.batch][x] = (value, bool(c) and (before is None or before[1]))
    return found


def _series(exports: list[ExportResult], streaming: bool) -> list[Series]:
    lines = []
    for i, e in enumerate(exports):
        batches = errors_by(e, streaming)
        for j, batch in enumerate(sorted(batches)):
            points = tuple((x, *batches[batch][x]) for x in sorted(batches[batch]))
            lines.append(Series(f"{e.target} {Path(e.path).name}, batch {batch}", COLORS[i % len(COLORS)],
                                DASHES[j % len(DASHES)], points))
    return lines


def _svg_chart(series: list[Series], x_label: str, tolerances: list[tuple[float, str]]) -> str:
    """Max abs error (log) against `x_label` (log) for every series, each export's atol as a
    dashed line in its colour. An exact zero sits on its own row below the log axis, labelled 0;
    NaN, Inf or a missing output on a row above it."""
    width, height, left, right, top, bottom = 560, 260, 66, 12, 26, 44
    values = [v for s in series for _, v, _ in s.points]
    finite = [v for v in values if v is not None and v > 0]
    has_zero, has_bad = any(v == 0 for v in values), any(v is None for v in values)
    atols = [atol for atol, _ in tolerances if atol > 0]
    low = math.floor(math.log10(min([*finite, *atols] or [1e-7]))) - 1
    high = math.ceil(math.log10(max([*finite, *atols] or [1e-5]))) + 1
    xs = sorted({x for s in series for x, _, _ in s.points})
    x_low, x_high = math.log2(xs[0]), math.log2(xs[-1])
    x_span = max(x_high - x_low, 1.0)
    plot_top = top + (16 if has_bad else 0)
    plot_bottom = height - bottom - (16 if has_zero else 0)

    def x(value: int) -> float:
        return left + 10 + (math.log2(value) - x_low) / x_span * (width - left - right - 20)

    def y(value: float | None) -> float:
        if value is None:
            return top + 6
        if value == 0:
            return height - bottom - 6
        return plot_top + (high - math.log10(value)) / (high - low) * (plot_bottom - plot_top)

    def text(at_x: float, at_y: float, kind: str, anchor: str, content: str, rotate: bool = False) -> str:
        turn = f' transform="rotate(-90 {at_x:.1f} {at_y:.1f})"' if rotate else ""
        return f'<text x="{at_x:.1f}" y="{at_y:.1f}" class={kind} text-anchor={anchor}{turn}>{content}</text>'

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="max abs error against {x_label}">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" class=frame />']
    for exponent in range(low, high + 1, max(1, (high - low) // 5)):
        parts.append(text(left - 4, y(10.0 ** exponent) + 4, "tick", "end", f"1e{exponent}"))
    if has_zero:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{plot_bottom + 2:.1f}" y2="{plot_bottom + 2:.1f}" '
                     'class=cut />')
        parts.append(text(left - 4, y(0.0) + 4, "tick", "end", "0 (exact)"))
    if has_bad:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{plot_top - 2:.1f}" y2="{plot_top - 2:.1f}" '
                     'class=cut />')
        parts.append(text(left - 4, y(None) + 4, "tick", "end", "NaN/Inf"))
    for value in xs:
        parts.append(text(x(value), height - bottom + 14, "tick", "middle", str(value)))
    parts.append(text((left + width) / 2, height - 6, "axis", "middle", x_label))
    parts.append(text(14, (top + height - bottom) / 2, "axis", "middle", "max abs error (log)", rotate=True))
    for atol, color in tolerances:
        if atol > 0:
            parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(atol):.1f}" y2="{y(atol):.1f}" '
                         f'stroke="{color}" class=tol><title>atol {atol:g}</title></line>')
    parts += _lines(series, x, y, lambda at, v: f"{x_label} {at}: max abs err "
                                                + ("NaN/Inf or no output" if v is None else f"{v:.3g}"))
    parts.append("</svg>")
    return "".join(parts)


def _legend(series: list[Series]) -> str:
    keys = "".join(f'<span class=key><span class=swatch style="border-top: 3px {BORDERS[s.dash]} {s.color}"></span> '
                   f"{_esc(s.label)}</span>" for s in series)
    return f"<p class=legend>{keys}</p>"


def _linear_chart(series: list[Series], y_label: str, unit: str, threshold: float, threshold_label: str) -> str:
    """`y_label` (linear) against sequence length (log) for every series, the threshold a point
    must reach as a dashed red line. A point without a value (an exact output: no noise) sits on
    a row above the plot, labelled exact."""
    width, height, left, right, top, bottom = 560, 240, 66, 12, 26, 44
    values = [v for s in series for _, v, _ in s.points if v is not None]
    has_exact = any(v is None for s in series for _, v, _ in s.points)
    low, high = min([*values, threshold]), max([*values, threshold])
    margin = max((high - low) * 0.1, 1.0)
    low, high = low - margin, high + margin
    xs = sorted({x for s in series for x, _, _ in s.points})
    x_low, x_span = math.log2(xs[0]), max(math.log2(xs[-1]) - math.log2(xs[0]), 1.0)
    plot_top = top + (16 if has_exact else 0)

    def x(value: int) -> float:
        return left + 10 + (math.log2(value) - x_low) / x_span * (width - left - right - 20)

    def y(value: float | None) -> float:
        if value is None:
            return top + 6
        return plot_top + (high - value) / (high - low) * (height - bottom - plot_top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{y_label} against sequence length">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" class=frame />']
    step = 10 ** math.floor(math.log10(max(high - low, 1e-9) / 2))
    for k in range(math.ceil(low / step), math.floor(high / step) + 1):
        tick = k * step
        parts.append(f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" class=tick text-anchor=end>{tick:g}</text>')
    if has_exact:
        parts.append(f'<text x="{left - 4}" y="{y(None) + 4:.1f}" class=tick text-anchor=end>exact</text>')
    for value in xs:
        parts.append(f'<text x="{x(value):.1f}" y="{height - bottom + 14}" class=tick text-anchor=middle>{value}</text>')
    parts.append(f'<text x="{(left + width) / 2:.1f}" y="{height - 6}" class=axis text-anchor=middle>sequence length</text>')
    parts.append(f'<text x="14" y="{(top + height - bottom) / 2:.1f}" class=axis text-anchor=middle '
                 f'transform="rotate(-90 14 {(top + height - bottom) / 2:.1f})">{_esc(y_label)}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                 f'class=threshold><title>{_esc(threshold_label)}</title></line>')
    parts += _lines(series, x, y, lambda at, v: f"length {at}: " + ("exact" if v is None else f"{v:.1f}{unit}"))
    parts.append("</svg>")
    return "".join(parts)


def _lines(series: Sequence[Series], x: Callable[[int], float], y: Callable[[float | None], float],
           describe: Callable[[int, float | None], str]) -> list[str]:
    """Each series as a line through its points, each point a circle marked passed or failed,
    titled with the series' label and `describe(length, value)`."""
    parts = []
    for s in series:
        path = " ".join(f"{'L' if i else 'M'}{x(at):.1f},{y(v):.1f}" for i, (at, v, _) in enumerate(s.points))
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(f'<path d="{path}" stroke="{s.color}"{dash} class=line><title>{_esc(s.label)}</title></path>')
        for at, v, passed in s.points:
            parts.append(f'<circle cx="{x(at):.1f}" cy="{y(v):.1f}" r="4" fill="{s.color}" class="{"ok" if passed else "bad"}">'
                         f'<title>{_esc(s.label)}, {_esc(describe(at, v))}</title></circle>')
    return parts


def _by_length(quality: tuple[OutputQuality, ...], agreement: bool, threshold: float) -> list[Series]:
    """One series per output (per class-score output for `agreement`): its SNR in dB, or its
    top-1 agreement in %, at each sequence length, pooled over batches."""
    found = []
    for i, q in enumerate(o for o in quality if o.kind is not None or not agreement):
        points = []
        for length, totals in q.by_length:
            if agreement and totals.agreement is None:
                continue
            value = totals.agreement * 100 if agreement else totals.snr_db
            points.append((length, value, value is None or value >= threshold))
        if points:
            found.append(Series(f"output {q.name}", COLORS[i % len(COLORS)], "", tuple(points)))
    return found


def _ranking(e: ExportResult) -> str:
    """The export's layers, lowest SNR first, each with a bar of its SNR against `--min-snr`."""
    if not e.layers_by_snr:
        return ""
    limit = e.thresholds.min_snr_db
    # At least 1 dB, so that a --min-snr of 0 or less with every layer below it still scales the bars.
    top = max([limit, 1.0, *(layer.snr_db for layer in e.layers_by_snr if layer.snr_db is not None)]) * 1.1
    rows = []
    for layer in e.layers_by_snr:
        snr = layer.snr_db
        bar = ("" if snr is None else f'<span class="bar {"ok" if snr >= limit else "bad"}" '
               f'style="width: {max(snr, 0) / top * 200:.0f}px"></span>')
        shown = "no tensor of its shape" if not layer.tensor else "exact" if snr is None else f"{snr:.1f} dB"
        rows.append(f"<tr><td>{_esc(layer.name)}</td><td>{_esc(layer.kind)}</td><td><code>{_esc(layer.tensor)}"
                    f"</code></td><td>{shown}</td><td>{bar}</td></tr>")
    return (f"<h4>layers by SNR, lowest first (--min-snr {limit:g} dB)</h4><table class=ranking><tr><th>layer</th>"
            f"<th>kind</th><th>export tensor</th><th>SNR</th><th></th></tr>{''.join(rows)}</table>")


def _quantized_charts(e: ExportResult) -> str:
    """What a quantized export is judged by, against length, and where it departs most."""
    t = e.thresholds
    parts = [f"<h4>{_esc(e.target)} <code>{_esc(Path(e.path).name)}</code>: quantized "
             f"{_esc(str(e.details.get('quantize', '')))}, judged by {_esc(str(t))}</h4>"]
    snr = _by_length(e.quality, False, t.min_snr_db)
    if snr:
        parts.append(_linear_chart(snr, "SNR (dB)", " dB", t.min_snr_db, f"--min-snr {t.min_snr_db:g} dB") + _legend(snr))
    agreement = _by_length(e.quality, True, t.min_agreement * 100)
    if agreement:
        parts.append(_linear_chart(agreement, "top-1 agreement (%)", "%", t.min_agreement * 100,
                                   f"--min-agreement {t.min_agreement:g}") + _legend(agreement))
    return "".join(parts) + _ranking(e)


def _charts(source: str, exports: list[ExportResult]) -> str:
    """The charts of one source: every float export's error against length, and against chunk
    size, on one chart each; each quantized export's own (`_quantized_charts`)."""
    floats = [e for e in exports if e.thresholds is None]
    tolerances = list(dict.fromkeys((e.tolerance.atol, COLORS[i % len(COLORS)]) for i, e in enumerate(floats)))
    parts = [f"<h3>{_esc(Path(source).name)}</h3>"]
    for streaming, x_label, title in ((False, "sequence length", "full sequences"),
                                      (True, "chunk size (steps per step() call)", "streaming, chunk by chunk")):
        series = [s for s in _series(floats, streaming) if s.points]
        if series:
            parts.append(f"<h4>{title}</h4>{_svg_chart(series, x_label, tolerances)}{_legend(series)}")
    parts += [_quantized_charts(e) for e in exports if e.thresholds is not None]
    if len(parts) == 1:
        parts.append("<p class=note>No cases to plot.</p>")
    return "".join(parts)


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
.PASS { color: #1a7f37; font-weight: bold; } .FAIL, .NOT { color: #cf222e; font-weight: bold; }
.export { margin: 1.5em 0; } .note { color: #666; } code { background: #f4f4f4; padding: 0 3px; }
svg .frame { fill: none; stroke: #999; } svg .tick, svg .axis { font-size: 11px; fill: #555; }
svg .tol { stroke-dasharray: 5 4; opacity: 0.7; } svg .line { fill: none; stroke-width: 2; }
svg .cut { stroke: #bbb; stroke-dasharray: 2 2; } svg .bad { stroke: #cf222e; stroke-width: 3; }
svg .threshold { stroke: #cf222e; stroke-dasharray: 5 4; }
.bar { display: inline-block; height: 10px; } .bar.ok { background: #1a7f37; } .bar.bad { background: #cf222e; }
.legend .key { margin-right: 1.2em; white-space: nowrap; }
.swatch { display: inline-block; width: 28px; vertical-align: middle; }
"""


def _esc(text: str) -> str:
    """Text content, not attributes: quotes stay as they are."""
    return html.escape(text, quote=False)


def _latency(report: ParityReport) -> str:
    tables = latency_tables(report)
    if not tables:
        return ""
    parts = [f"<h2>Latency</h2><p class=note>{_esc(latency_title(report))}</p>"]
    for source, how, header, rows in tables:
        head = "".join(f"<th>{_esc(cell)}</th>" for cell in header)
        body = "".join("<tr>" + "".join(f"<td>{_esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
        parts.append(f"<h3>{_esc(Path(source).name)}</h3><table><tr>{head}</tr>{body}</table>"
                     f"<p class=note>{_esc(how)}</p>")
    return "".join(parts)


def render(report: ParityReport) -> str:
    esc = _esc
    rows = "".join(
        f"<tr><td>{esc(Path(e.source).name)}</td><td>{esc(e.target)}</td><td><code>{esc(Path(e.path).name)}</code></td>"
        f"<td>{cases(e)}</td><td>{error(e)}</td><td>{worst(e)}</td><td>{esc(e.criterion)}</td>"
        f"<td class={e.status.split()[0]}>{e.status}</td></tr>"
        for e in report.exports
    )
    sources = list(dict.fromkeys(e.source for e in report.exports))
    charts = "".join(_charts(source, [e for e in report.exports if e.source == source]) for source in sources)
    sections = []
    for e in report.exports:
        listed = "".join(f"<li><code>{esc(line)}</code></li>" for line in failing(e))
        notes = "".join(f"<li>{esc(line)}</li>" for line in output_lines(e))
        drift = f"<p><b>{esc(e.drift.describe())}</b></p>" if e.drift else ""
        sections.append(
            f"<div class=export><h3>{esc(e.target)} <code>{esc(e.path)}</code> "
            f"<span class={e.status.split()[0]}>{e.status}</span></h3>"
            f"<p class=note>source {esc(e.source)}; runs on {esc(e.device)}; reference on {esc(e.reference_device)}; "
            f"{esc(e.criterion)}</p><ul class=note>{notes}</ul>{drift}"
            f"{f'<ul>{listed}</ul>' if listed else ''}</div>"
        )
    environment = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                          for k, v in {**report.versions, **report.environment}.items())
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>rnnexport parity report</title>"
        f"<style>{STYLE}</style></head><body><h1>rnnexport parity report</h1>"
        f"<p class={'PASS' if report else 'FAIL'}>{esc(report.headline)}</p>"
        f"<p class=note>device {esc(report.device)}, seed {report.seed}</p>"
        "<table><tr><th>source</th><th>target</th><th>export</th><th>cases</th><th>max abs err</th>"
        f"<th>err/allowed</th><th>tolerance</th><th>result</th></tr>{rows}</table>"
        f"<h2>Error against sequence length</h2>{charts}"
        f"<h2>Exports</h2>{''.join(sections)}{_latency(report)}"
        f"<h2>What the numbers depend on</h2><table>{environment}</table></body></html>\n"
    )
