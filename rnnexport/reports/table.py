"""The terminal table: one row per export, then what each export's details, skipped cases, drift
and first failures say."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.reports.text import cases, error, latency_tables, latency_title, num, output_error, output_lines, worst

if TYPE_CHECKING:
    from rnnexport.parity import ExportResult
    from rnnexport.reports.report import ParityReport

# The terminal shows this many failing checks per export; the JSON report holds them all.
FAILURES_SHOWN = 10


def _notes(e: ExportResult, verbose: bool) -> list[str]:
    """The lines under the table for one export."""
    name = f"{e.target} {Path(e.path).name}"
    details = e.details
    lines = []
    ops = details.get("recurrent_ops")
    if ops is not None:
        found = ", ".join(f"{op} x{n}" for op, n in sorted(ops.items())) or "none"
        extra = "".join(f", {label} {value}" for label, value in
                        (("batch", details.get("batch")), ("quantize", details.get("quantize"))) if value)
        lines.append(f"  {name}: recurrent ops {found}{extra}")
    for layer, reason in details.get("not_fused", {}).items():
        lines.append(f"    not fused: {layer}: {reason}")
    if "streaming_states" in details:
        streamed = [c for c in e.checked if c.case.chunk is not None]
        chunks = ",".join(str(c) for c in sorted({c.case.chunk for c in streamed}))
        states = ", ".join(sorted(details["streaming_states"]))
        lines.append(f"  {name}: streaming, state {states}; "
                     f"{sum(1 for c in streamed if c)}/{len(streamed)} chunked runs (chunks {chunks or '-'}) match")
    if "interface" in details:
        lines.append(f"  {name}: interface {details['interface']}")
    if "shortest_length" in details:
        lines.append(f"  {name}: the source needs at least {details['shortest_length']} steps; "
                     "the default sweep starts there")
    if "data" in details:
        data = details["data"]
        for output, stats in data["outputs"].items():
            agreement = stats["top1_agreement"]
            lines.append(f"  {name}: data {data['rows']} rows in {data['batches']} batch(es), '{output}': mean abs err "
                         f"{num(stats['mean_abs'])}, p99 {num(stats['p99_abs'])}, within tolerance "
                         f"{stats['within_tolerance']:.2%}" + ("" if agreement is None else f", top-1 agreement "
                                                                                            f"{agreement:.2%}"))
    reasons = sorted({c.skipped for c in e.skipped})
    if reasons:
        lines.append(f"  {name}: {len(e.skipped)} case(s) not checked: {'; '.join(reasons)}")
    if verbose:
        # The export's notes go under its own heading, above its cases, not under the export before.
        lines = ["", f"{e.target} {e.path} (reference on {e.reference_device})", *lines]
        for c in e.cases:
            errs = ", ".join(f"{o.name} {output_error(o)}" for o in c.outputs)
            mark = "skip" if c.skipped else "ok  " if c else "FAIL"
            lines.append(f"  {mark} {c.case.name:<40} {c.reference_method:<28} {errs or c.skipped}")
    lines += [f"  {name}: {line}" for line in output_lines(e)]
    if e.drift is not None:
        lines.append(f"  {name}: {e.drift.describe()}")
    failures = e.failures()
    for failure in failures[:FAILURES_SHOWN]:
        lines.append(f"  {'FAIL' if e.validated else 'NOT VALIDATED'} {name}: {failure}")
    if len(failures) > FAILURES_SHOWN:
        lines.append(f"  ... {len(failures) - FAILURES_SHOWN} more failing checks in the JSON report")
    return lines


def render(report: ParityReport, verbose: bool = False) -> str:
    from rnnexport.console import render as plain, table as new_table

    table = new_table("source", "target", "device", "cases", "max abs err", "err/allowed", "tolerance", "result")
    for e in report.exports:
        table.add_row(Path(e.source).name, e.target, e.device, cases(e), error(e), worst(e), e.criterion, e.status)
    lines = plain(table).splitlines()
    for e in report.exports:
        lines += _notes(e, verbose)
    tables = latency_tables(report)
    if tables:
        lines += ["", latency_title(report)]
    for source, how, header, rows in tables:
        latency = new_table(*header)
        for row in rows:
            latency.add_row(*row)
        lines += [f"{Path(source).name}:", *plain(latency).splitlines(), f"  {how}"]
    lines.append("")
    lines.append(report.headline)
    return "\n".join(lines)
