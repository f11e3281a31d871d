"""Latency in the report: each export's median wall time per timed shape of the sweep, beside the
reference's, and the gate an export must meet (`--max-latency-ms`, `--min-speedup`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# Latencies are wall times on the machine that ran the sweep, shared with whatever else ran there.
LATENCY_NOTE = ("wall time on this machine, on the sweep's own inputs: the median of repeated calls after a warm-up "
                "call, for each export and for the reference run as deployers run it (reference_timing says how; "
                "reference_eager why it ran eagerly, when it did)")


@dataclass(frozen=True)
class LatencyGate:
    """The latency an export must meet at every timed shape: at most `max_ms` milliseconds, at
    least `min_speedup` times faster than the reference (None: not declared)."""

    max_ms: float | None = None
    min_speedup: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"max_ms": self.max_ms, "min_speedup": self.min_speedup}


@dataclass(frozen=True)
class ShapeLatency:
    """One timed case: the export's median milliseconds, and the reference's on the same inputs."""

    case: str
    batch: int
    length: int | None
    median_ms: float
    reference_ms: float | None = None

    @property
    def speedup(self) -> float | None:
        """How many times faster than the reference (below 1: slower)."""
        if self.reference_ms is None or self.median_ms <= 0:
            return None
        return self.reference_ms / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        speedup = self.speedup
        return {"case": self.case, "batch": self.batch, "length": self.length,
                "median_ms": round(self.median_ms, 4),
                "reference_median_ms": None if self.reference_ms is None else round(self.reference_ms, 4),
                "speedup": None if speedup is None else round(speedup, 3)}


@dataclass(frozen=True)
class Latency:
    """An export's latency per timed shape of the sweep, its gate, and what the ratios are
    against; `reference_timing` says how the reference was timed, `reference_eager` why it ran
    eagerly (then a ratio measures TensorFlow's eager loop, not a deployed model)."""

    repeats: int
    shapes: tuple[ShapeLatency, ...]
    gate: LatencyGate = field(default_factory=LatencyGate)
    against: str = "source"
    reference_timing: str = ""
    reference_eager: str = ""

    def failures(self) -> list[str]:
        found = []
        for shape in self.shapes:
            if self.gate.max_ms is not None and shape.median_ms > self.gate.max_ms:
                found.append(f"{shape.case}: latency {shape.median_ms:.3g} ms exceeds --max-latency-ms "
                             f"{self.gate.max_ms:g}")
            speedup = shape.speedup
            if self.gate.min_speedup is not None and (speedup is None or speedup < self.gate.min_speedup):
                got = "not measured" if speedup is None else f"{speedup:.3g}x"
                found.append(f"{shape.case}: speedup over the {self.against} {got} is below --min-speedup "
                             f"{self.gate.min_speedup:g}")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"note": LATENCY_NOTE, "repeats": self.repeats, "against": self.against,
                "reference_timing": self.reference_timing, "reference_eager": self.reference_eager,
                "gate": self.gate.to_dict(), "passed": not self.failures(),
                "shapes": [s.to_dict() for s in self.shapes]}
