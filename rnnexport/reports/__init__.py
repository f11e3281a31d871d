"""The parity report and the formats it is written in: table, JSON, JUnit, Markdown, HTML."""

from rnnexport.reports.json import SCHEMA_FILE, SCHEMA_VERSION
from rnnexport.reports.report import ParityReport

__all__ = ["SCHEMA_FILE", "SCHEMA_VERSION", "ParityReport"]
