"""Tolerances: what an export must meet against its source, and the one place they are resolved.

The tolerance an export is checked with is built in layers, each over the one before:

1. the target's default for the device (`Target.default_tolerance`: declared per device kind,
   or what the file itself says, such as a TFLite file's quantization);
2. the source's floor (`OpenedSource.tolerance_floor`): no export can match a source more closely
   than the source's own arithmetic allows, so the default is raised to it, never lowered;
3. the config file: `[tolerance."*"]`, then `[tolerance.<device>]`;
4. the command line (`--atol`, `--rtol`, or the API's `ToleranceOverrides`).

Within one layer, a value for the target by name wins over the one for `*`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rnnexport.errors import UserError


@dataclass(frozen=True)
class Tolerance:
    """An output passes where every element satisfies |export - reference| <= atol + rtol * |reference|."""

    atol: float
    rtol: float

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}

    def __str__(self) -> str:
        return f"atol {self.atol:g} rtol {self.rtol:g}"


# What float32 exports meet against the reference, per device kind. Measured on CPU: SavedModel
# matches exactly, fused ONNX and TFLite kernels within 4e-7 over 1024 steps of a 256-unit LSTM.
# GPU references differ more: cuDNN kernels and TF32-free matmuls take other paths.
FLOAT32_TOLERANCE = {"cpu": Tolerance(atol=1e-5, rtol=1e-5), "gpu": Tolerance(atol=1e-4, rtol=1e-4)}


@dataclass(frozen=True)
class ToleranceOverrides:
    """User overrides keyed by target name; the key `*` applies to every target.

    `device` limits them to one device kind (`cpu` or `gpu`). `under` holds the overrides these
    ones take precedence over: the command line sits over the config file's device table, which
    sits over its table for every device.

    >>> ToleranceOverrides(atol={"*": 1e-4, "tflite": 1e-3}).apply("tflite", Tolerance(1e-5, 1e-5))
    Tolerance(atol=0.001, rtol=1e-05)
    """

    atol: Mapping[str, float] = field(default_factory=dict)
    rtol: Mapping[str, float] = field(default_factory=dict)
    device: str | None = None
    under: ToleranceOverrides | None = None

    def apply(self, target: str, default: Tolerance, device: str = "cpu") -> Tolerance:
        if self.under is not None:
            default = self.under.apply(target, default, device)
        if self.device is not None and self.device != device:
            return default
        return Tolerance(
            atol=self.atol.get(target, self.atol.get("*", default.atol)),
            rtol=self.rtol.get(target, self.rtol.get("*", default.rtol)),
        )


def check_targets(overrides: ToleranceOverrides | None, known: Iterable[str], where: str = "--atol/--rtol") -> None:
    """Refuse an override for a target that does not exist (a typo would silently do nothing)."""
    names = sorted(known)
    while overrides is not None:
        for key in (*overrides.atol, *overrides.rtol):
            if key != "*" and key not in names:
                raise UserError(f"{where}: unknown target '{key}'; known targets are: {', '.join(names)}, *")
        overrides = overrides.under


def resolve(target: str, default: Tolerance, floor: Tolerance | None, overrides: ToleranceOverrides,
            device: str) -> Tolerance:
    """The tolerance an export of `target` is checked with on `device` (`cpu` or `gpu`), from the
    target's `default`, the source's `floor` and the user's `overrides` (layers 3 and 4)."""
    if floor is not None:
        default = Tolerance(max(default.atol, floor.atol), max(default.rtol, floor.rtol))
    return overrides.apply(target, default, device)
