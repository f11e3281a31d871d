"""The Markdown summary, for a pull-request comment: the table, where each failing export drifts,
and what the numbers depend on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.reports.text import cases, error, failing, latency_tables, latency_title, output_lines, worst

if TYPE_CHECKING:
    from rnnexport.reports.report import ParityReport


def render(report: ParityReport) -> str:
    lines = [f"### rnnexport parity: {report.headline}", "",
             "| source | target | export | cases | max abs err | err/allowed | tolerance | result |",
             "|---|---|---|---|---|---|---|---|"]
    for e in report.exports:
        lines.append(f"| {Path(e.source).name} | {e.target} | `{Path(e.path).name}` | {cases(e)} | {error(e)} "
                     f"| {worst(e)} | {e.criterion} | {'✅' if e else '❌'} {e.status} |")
    lines += ["", "<details><summary>What the errors measured</summary>", ""]
    for e in report.exports:
        lines += [f"- {e.target} `{Path(e.path).name}`: {line}" for line in output_lines(e)]
    lines += ["", "</details>"]
    tables = latency_tables(report)
    if tables:
        lines += ["", "#### Latency", "", f"_{latency_title(report)}_"]
    for source, how, header, rows in tables:
        lines += ["", f"{Path(source).name}:", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows), "", f"_{how}_"]
    drifting = [e for e in report.exports if not e]
    if drifting:
        lines += ["", "#### Where it drifts"]
        for e in drifting:
            lines.append(f"- **{e.target} `{Path(e.path).name}`** ({Path(e.source).name})")
            if e.drift:
                lines.append(f"  - {e.drift.describe()}")
            lines += [f"  - `{line}`" for line in failing(e)]
    lines += ["", "<details><summary>What the numbers depend on</summary>", "",
              f"- device: {report.device}; seed {report.seed}",
              "- " + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
              "- " + ", ".join(f"{k}: {v}" for k, v in report.environment.items()),
              *(f"- {e.target} `{Path(e.path).name}`: {e.device}" for e in report.exports),
              "", "</details>", ""]
    return "\n".join(lines)
