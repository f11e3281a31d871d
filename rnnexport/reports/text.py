"""Pieces of text the formats share, so that each says the same thing the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rnnexport.parity import ExportResult
    from rnnexport.parity.results import OutputComparison
    from rnnexport.reports.report import ParityReport

# A pull-request comment holds 65536 characters: list this many failing checks per export at most.
FAILURES_SHOWN = 5


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def nonfinite(e: ExportResult) -> int:
    """How many NaN or Inf values the checked cases' outputs held, in the export and the reference."""
    return sum(o.nonfinite_export + o.nonfinite_reference for c in e.checked for o in c.outputs)


def error(e: ExportResult) -> str:
    """The export's max abs error, or NaN/Inf where some output held one (its finite part's error
    would look like a pass)."""
    return "NaN/Inf" if nonfinite(e) else num(e.max_abs)


def output_error(o: OutputComparison) -> str:
    return "NaN/Inf" if o.nonfinite_export or o.nonfinite_reference else num(o.max_abs)


def cases(e: ExportResult) -> str:
    """Checked cases that passed, out of those checked."""
    return f"{sum(1 for c in e.checked if c)}/{len(e.checked)}"


def failing(e: ExportResult) -> list[str]:
    """The first failing checks of an export, and how many more the JSON report holds."""
    lines = e.failures()
    shown = lines[:FAILURES_SHOWN]
    if len(lines) > FAILURES_SHOWN:
        shown.append(f"... {len(lines) - FAILURES_SHOWN} more in the JSON report")
    return shown


def worst(e: ExportResult) -> str:
    """What the criterion measured: the largest error over allowed error (1 is the limit)."""
    found = e.worst
    if nonfinite(e):
        return "NaN/Inf"
    if found is None:
        return "-"
    return "inf" if found.ratio == float("inf") else f"{found.ratio:.2g}"


def output_lines(e: ExportResult) -> list[str]:
    """Where the export came closest to its tolerance, and each output's error over the sweep."""
    lines = []
    found = e.worst
    if found is not None:
        lines.append(f"err/allowed {worst(e)} at {found.output}{list(found.index)} in case {found.case} "
                     "(allowed: atol + rtol * |reference|; above 1 fails)")
    stats = [f"{o.name} {num(o.mean_abs)}/{num(o.median_abs)}/{num(o.p99_abs)}" for o in e.outputs if o.elements]
    if stats:
        lines.append(f"abs err mean/median/p99 over the sweep: {', '.join(stats)}")
    if e.stopped:
        lines.append(f"{e.stopped} (--fail-fast)")
    return lines


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def speedup(value: float | None) -> str:
    if value is None:
        return ""
    return f" ({value:,.0f}x)" if value >= 10 else f" ({value:.2g}x)"


def reference_timing(against: str, how: str, eager: str) -> str:
    """How the reference of a latency table was timed, and a warning when it ran eagerly."""
    if not how:
        return f"the {against} was not timed here"
    line = f"the {against} timed as {how}"
    if eager:
        line += f"; EAGER ({eager}): its ratios measure TensorFlow's eager loop, not the source as deployed"
    return line


def latency_tables(report: ParityReport) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """Per source: (source, how its reference was timed, header, rows) of the latency table:
    one row per timed shape, the reference's median milliseconds, then each export's with its
    speedup over the reference."""
    tables = []
    for source in dict.fromkeys(e.source for e in report.exports):
        timed = [e for e in report.exports if e.source == source and e.latency]
        if not timed:
            continue
        first = timed[0].latency
        against = first.against
        shapes = list(dict.fromkeys(s.case for e in timed for s in e.latency.shapes))
        header = ["shape", against, *(f"{e.target} {Path(e.path).name}" for e in timed)]
        rows = []
        for shape in shapes:
            found = [next((s for s in e.latency.shapes if s.case == shape), None) for e in timed]
            reference = next((s.reference_ms for s in found if s is not None), None)
            rows.append([shape, ms(reference), *("-" if s is None else f"{ms(s.median_ms)}{speedup(s.speedup)}"
                                                  for s in found)])
        tables.append((source, reference_timing(against, first.reference_timing, first.reference_eager), header,
                       rows))
    return tables


def latency_title(report: ParityReport) -> str:
    repeats = next((e.latency.repeats for e in report.exports if e.latency), 0)
    return (f"latency in ms on this machine (another machine or load gives other numbers): each export's median "
            f"of {repeats} calls after a warm-up, the reference's too, run as deployers run it (how: under each "
            "table); (Nx) = times faster than the reference")
