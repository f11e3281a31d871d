"""The parity report: one object for the terminal table and the JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnexport import __version__
from rnnexport.parity import ExportResult

# Bump on any change a consumer of the JSON could notice; documented in README.md and described
# by SCHEMA_FILE, which the tests hold every report to.
SCHEMA_VERSION = 2
SCHEMA_FILE = Path(__file__).with_name("schemas") / "report.schema.json"


@dataclass
class ParityReport:
    """Every export checked in one run. Truthy when all of them passed."""

    exports: list[ExportResult] = field(default_factory=list)
    device: str = ""
    seed: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.exports) and all(self.exports)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def headline(self) -> str:
        matching = sum(1 for e in self.exports if e)
        return f"{'PASS' if self else 'FAIL'}: {matching}/{len(self.exports)} exports match their source"

    def failures(self) -> list[str]:
        return [f"{e.target} {e.path}: {line}" for e in self.exports for line in e.failures()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "rnnexport_version": __version__,
            "passed": self.passed,
            "device": self.device,
            "seed": self.seed,
            "versions": self.versions,
            "environment": self.environment,
            "exports": [e.to_dict() for e in self.exports],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_jsonable)

    def write_json(self, path: str | Path) -> None:
        _write(Path(path), self.to_json() + "\n")

    def to_junit(self) -> str:
        """JUnit XML: a test suite per export, a test case per sweep case. A case that drifted is a
        failure, one the export could not run an error, one without ground truth skipped; an
        export that could not be run at all is a single failing case named `load`."""
        import xml.etree.ElementTree as ET

        root = ET.Element("testsuites", name="rnnexport")
        totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for e in self.exports:
            suite = ET.SubElement(root, "testsuite", name=f"{Path(e.source).name} -> {e.target} {Path(e.path).name}")
            properties = ET.SubElement(suite, "properties")
            for key, value in (("source", e.source), ("export", e.path), ("device", e.device),
                               ("reference_device", e.reference_device),
                               ("tolerance", str(e.tolerance))):
                ET.SubElement(properties, "property", name=key, value=value)
            counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
            classname = f"rnnexport.{e.target}.{Path(e.source).name}"
            if e.error or not e.validated:
                case = ET.SubElement(suite, "testcase", classname=classname, name="load")
                ET.SubElement(case, "failure", message=e.error or "not validated").text = e.error
                counts["tests"] += 1
                counts["failures"] += 1
            for c in e.cases:
                case = ET.SubElement(suite, "testcase", classname=classname, name=c.case.name)
                counts["tests"] += 1
                if c.skipped:
                    ET.SubElement(case, "skipped", message=c.skipped)
                    counts["skipped"] += 1
                elif c.error:
                    ET.SubElement(case, "error", message=c.error).text = c.error
                    counts["errors"] += 1
                elif not c:
                    lines = c.failures()
                    ET.SubElement(case, "failure", message=lines[0]).text = "\n".join(lines)
                    counts["failures"] += 1
                else:
                    errors = ", ".join(f"{o.name} {_num(o.max_abs)}" for o in c.outputs)
                    ET.SubElement(case, "system-out").text = f"{c.reference_method}: max abs err {errors}"
            suite.attrib.update({k: str(v) for k, v in counts.items()})
            for key in totals:
                totals[key] += counts[key]
        root.attrib.update({k: str(v) for k, v in totals.items()})
        ET.indent(root)
        return ET.tostring(root, encoding="unicode", xml_declaration=True)

    def write_junit(self, path: str | Path) -> None:
        _write(Path(path), self.to_junit() + "\n")

    def to_markdown(self) -> str:
        from rnnexport.render import markdown

        return markdown(self)

    def write_markdown(self, path: str | Path) -> None:
        _write(Path(path), self.to_markdown())

    def to_html(self) -> str:
        from rnnexport.render import html_page

        return html_page(self)

    def write_html(self, path: str | Path) -> None:
        _write(Path(path), self.to_html())

    def table(self, verbose: bool = False) -> str:
        return format_table(self, verbose)


def _write(path: Path, text: str) -> None:
    """Write a report whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    return str(value)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def format_table(report: ParityReport, verbose: bool = False) -> str:
    header = ("source", "target", "device", "cases", "max abs err", "max rel err", "tolerance", "result")
    rows = []
    for e in report.exports:
        passed = sum(1 for c in e.checked if c)
        rows.append((
            Path(e.source).name,
            e.target,
            e.device,
            f"{passed}/{len(e.checked)}",
            _num(e.max_abs),
            _num(e.max_rel),
            str(e.tolerance),
            e.status,
        ))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for e in report.exports:
        ops = e.details.get("recurrent_ops")
        if ops is not None:
            found = ", ".join(f"{op} x{n}" for op, n in sorted(ops.items())) or "none"
            extra = "".join(f", {key} {e.details[key]}" for key in ("batch", "quantize") if e.details.get(key))
            lines.append(f"  {e.target} {Path(e.path).name}: recurrent ops {found}{extra}")
        for layer, reason in e.details.get("not_fused", {}).items():
            lines.append(f"    not fused: {layer}: {reason}")
        if "streaming_states" in e.details:
            streamed = [c for c in e.checked if c.case.chunk is not None]
            chunks = ",".join(str(c) for c in sorted({c.case.chunk for c in streamed}))
            states = ", ".join(sorted(e.details["streaming_states"]))
            lines.append(f"  {e.target} {Path(e.path).name}: streaming, state {states}; "
                         f"{sum(1 for c in streamed if c)}/{len(streamed)} chunked runs (chunks {chunks or '-'}) match")
        reasons = sorted({c.skipped for c in e.skipped})
        if reasons:
            lines.append(f"  {e.target} {Path(e.path).name}: {len(e.skipped)} case(s) not checked: {'; '.join(reasons)}")
        if verbose:
            lines.append(f"\n{e.target} {e.path} (reference on {e.reference_device})")
            for c in e.cases:
                errs = ", ".join(f"{o.name} {_num(o.max_abs)}" for o in c.outputs)
                mark = "skip" if c.skipped else "ok  " if c else "FAIL"
                lines.append(f"  {mark} {c.case.name:<40} {c.reference_method:<28} {errs or c.skipped}")
        if e.drift is not None:
            lines.append(f"  {e.target} {Path(e.path).name}: {e.drift.describe()}")
        for failure in e.failures()[:10]:
            lines.append(f"  {'FAIL' if e.validated else 'NOT VALIDATED'} {e.target} {Path(e.path).name}: {failure}")
        if len(e.failures()) > 10:
            lines.append(f"  ... {len(e.failures()) - 10} more failing checks in the JSON report")
    lines.append("")
    lines.append(report.headline)
    return "\n".join(lines)
