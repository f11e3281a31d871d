"""The inputs a quantizing target calibrates on: the rows of the user's `.npz` (the layout of
`--data`), or, without one, the sweep's own random inputs, with a warning that they stand in for
real data."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnexport.model import TensorInfo
from rnnexport.options import SweepOptions
from rnnexport.sweep import build_cases

RANDOM = "random inputs drawn as the sweep draws them, a stand-in for real data (pass --calibration data.npz)"


class CalibrationWarning(UserWarning):
    """A quantized export was calibrated on random inputs."""


@dataclass(frozen=True)
class Calibration:
    """One-row samples keyed by input name, and where they come from (for the file and the report)."""

    samples: tuple[dict[str, np.ndarray], ...]
    origin: str


def calibration(inputs: Sequence[TensorInfo], fixed_length: int | None, path: str | Path | None) -> Calibration:
    """The calibration samples, one row each, from `path` or drawn at random (then warned about)."""
    if path is None:
        warnings.warn(f"calibrating on {RANDOM}", CalibrationWarning, stacklevel=2)
        cases, origin = build_cases(inputs, fixed_length, SweepOptions()), RANDOM
    else:
        cases = build_cases(inputs, fixed_length, SweepOptions(data=Path(path)))
        origin = f"{Path(path).name}: {cases[0].batch} rows"
    samples = tuple({name: value[row:row + 1] for name, value in case.inputs.items()}
                    for case in cases for row in range(case.batch))
    return Calibration(samples, origin)
