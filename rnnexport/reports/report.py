"""The parity report: every export checked in one run. Each format renders it from its own module
(`rnnexport.reports.table`, `json`, `junit`, `markdown`, `html`); they import this module, and the
report reaches them only when asked for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnexport.parity import ExportResult


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
        from rnnexport.reports import json as json_report

        return json_report.document(self)

    def to_json(self) -> str:
        from rnnexport.reports import json as json_report

        return json_report.render(self)

    def write_json(self, path: str | Path) -> None:
        _write(Path(path), self.to_json() + "\n")

    def to_junit(self) -> str:
        from rnnexport.reports import junit

        return junit.render(self)

    def write_junit(self, path: str | Path) -> None:
        _write(Path(path), self.to_junit() + "\n")

    def to_markdown(self) -> str:
        from rnnexport.reports import markdown

        return markdown.render(self)

    def write_markdown(self, path: str | Path) -> None:
        _write(Path(path), self.to_markdown())

    def to_html(self) -> str:
        from rnnexport.reports import html

        return html.render(self)

    def write_html(self, path: str | Path) -> None:
        _write(Path(path), self.to_html())

    def table(self, verbose: bool = False) -> str:
        from rnnexport.reports import table

        return table.render(self, verbose)


def _write(path: Path, text: str) -> None:
    """Write a report whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
