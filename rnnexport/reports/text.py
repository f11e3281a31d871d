"""Pieces of text the formats share, so that each says the same thing the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rnnexport.parity import ExportResult
    from rnnexport.parity.results import OutputComparison

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
