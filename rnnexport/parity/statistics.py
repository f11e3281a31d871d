"""Running statistics of an output's error, taken batch by batch without keeping the outputs:
elements compared, mean and max absolute error, its 50/90/99/99.9th percentiles, the share of
elements within tolerance and, for outputs with a class axis, how often the export's top class
agrees with the reference's.

Percentiles come from a histogram of fixed logarithmic bins (20 per decade; a numpy histogram,
where a sketch library would add values one at a time): each is the upper edge of its bin, at
most 12% above the exact value, and the same for any split of the same rows into batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnexport.tolerance import Tolerance

# |error| histogram: 0 exactly, then 20 bins per decade from 1e-12 to 1e4, then above.
EDGES = 10.0 ** np.arange(-12, 4.0001, 0.05)
PERCENTILES = (50, 90, 99, 99.9)


@dataclass
class OutputStatistics:
    """Running statistics of one output's error over every batch added."""

    elements: int = 0
    sum_abs: float = 0.0
    max_abs: float | None = None
    within: int = 0
    agree: int = 0
    positions: int = 0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(len(EDGES) + 1, dtype=np.int64))

    def add(self, reference: np.ndarray, exported: np.ndarray, tolerance: Tolerance) -> None:
        if exported is None or exported.shape != reference.shape or reference.size == 0:
            return
        ref, exp = reference.astype(np.float64), exported.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(exp - ref)
            within = diff <= tolerance.atol + tolerance.rtol * np.abs(ref)
        finite = diff[np.isfinite(diff)]
        self.elements += ref.size
        self.within += int(np.count_nonzero(within))
        self.sum_abs += float(finite.sum())
        if finite.size:
            self.max_abs = max(self.max_abs or 0.0, float(finite.max()))
        self.histogram += np.bincount(np.searchsorted(EDGES, finite, side="left"), minlength=len(EDGES) + 1)
        # Values that are not finite count in the last bin: above every edge.
        self.histogram[-1] += ref.size - finite.size
        if ref.ndim >= 2 and ref.shape[-1] > 1 and np.issubdtype(reference.dtype, np.floating):
            self.positions += ref.size // ref.shape[-1]
            self.agree += int(np.count_nonzero(np.argmax(ref, axis=-1) == np.argmax(exp, axis=-1)))

    def percentile(self, q: float) -> float | None:
        if not self.elements:
            return None
        rank = int(np.ceil(q / 100 * self.elements))
        index = int(np.searchsorted(np.cumsum(self.histogram), max(rank, 1)))
        if index == 0:
            return 0.0
        return float(EDGES[index - 1]) if index <= len(EDGES) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "elements": self.elements,
            "mean_abs": self.sum_abs / self.elements if self.elements else None,
            "max_abs": self.max_abs,
            **{f"p{q:g}_abs": self.percentile(q) for q in PERCENTILES},
            "within_tolerance": self.within / self.elements if self.elements else None,
            "top1_agreement": self.agree / self.positions if self.positions else None,
        }


def statistics(pairs: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]], tolerance: Tolerance,
               into: dict[str, OutputStatistics] | None = None) -> dict[str, OutputStatistics]:
    """Statistics per output over (reference outputs, export outputs) pairs, added to `into`."""
    found = {} if into is None else into
    for expected, produced in pairs:
        for name, ref in expected.items():
            found.setdefault(name, OutputStatistics()).add(ref, produced.get(name), tolerance.of(name))
    return found


def summary(stats: Mapping[str, OutputStatistics], rows: int, batches: int) -> dict[str, Any]:
    """What the report's `details["data"]` says of a data set checked in `batches` batches."""
    return {"rows": rows, "batches": batches, "outputs": {name: s.to_dict() for name, s in stats.items()}}
