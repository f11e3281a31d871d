"""The JUnit XML report, for CI systems' test views: a test suite per export, a test case per
sweep case. A case that drifted is a failure, one the export could not run an error, one without
ground truth skipped; an export that could not be run at all is a single failing case `load`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.reports.text import output_error

if TYPE_CHECKING:
    from rnnexport.parity import ExportResult
    from rnnexport.reports.report import ParityReport

COUNTS = ("tests", "failures", "errors", "skipped")


def _suite(root: ET.Element, e: ExportResult) -> dict[str, int]:
    """The test suite of one export; returns its counts."""
    suite = ET.SubElement(root, "testsuite", name=f"{Path(e.source).name} -> {e.target} {Path(e.path).name}")
    properties = ET.SubElement(suite, "properties")
    for key, value in (("source", e.source), ("export", e.path), ("device", e.device),
                       ("reference_device", e.reference_device), ("tolerance", str(e.tolerance))):
        ET.SubElement(properties, "property", name=key, value=value)
    counts = dict.fromkeys(COUNTS, 0)
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
            errors = ", ".join(f"{o.name} {output_error(o)}" for o in c.outputs)
            ET.SubElement(case, "system-out").text = f"{c.reference_method}: max abs err {errors}"
    suite.attrib.update({k: str(v) for k, v in counts.items()})
    return counts


def render(report: ParityReport) -> str:
    root = ET.Element("testsuites", name="rnnexport")
    totals = dict.fromkeys(COUNTS, 0)
    for e in report.exports:
        for key, value in _suite(root, e).items():
            totals[key] += value
    root.attrib.update({k: str(v) for k, v in totals.items()})
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
