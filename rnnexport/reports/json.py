"""The JSON report, for machines: everything, in the versioned schema of `SCHEMA_FILE`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnexport.version import __version__

if TYPE_CHECKING:
    from rnnexport.reports.report import ParityReport

# Bump on any change a consumer of the JSON could notice; documented in README.md and described
# by SCHEMA_FILE, which the tests hold every report to.
SCHEMA_VERSION = 3
SCHEMA_FILE = Path(__file__).parent.parent / "schemas" / "report.schema.json"


def document(report: ParityReport) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "rnnexport_version": __version__,
        "passed": report.passed,
        "device": report.device,
        "seed": report.seed,
        "versions": report.versions,
        "environment": report.environment,
        "exports": [e.to_dict() for e in report.exports],
    }


def _jsonable(value: Any) -> Any:
    return str(value)


def render(report: ParityReport) -> str:
    return json.dumps(document(report), indent=2, allow_nan=False, default=_jsonable)
