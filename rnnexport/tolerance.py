"""Tolerances: what an export must meet against its source, and the one place they are resolved.

The tolerance an export is checked with is built in layers, each over the one before:

1. the target's default for the device (`Target.default_tolerance`: declared per device kind,
   or what the file itself says, such as a TFLite file's quantization);
2. the source's floor (`OpenedSource.tolerance_floor`): no export can match a source more closely
   than the source's own arithmetic allows, so the default is raised to it, never lowered;
3. the config file: `[tolerance."*"]`, then `[tolerance.<device>]`;
4. the command line (`--atol`, `--rtol`, or the API's `ToleranceOverrides`).

Within one layer, a value for an output by name wins over the one for the target, which wins
over the one for `*`. A key names a target or an output; one that names neither is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rnnexport.errors import ConfigError, UserError


@dataclass(frozen=True)
class Tolerance:
    """An output passes where every element satisfies |export - reference| <= atol + rtol * |reference|."""

    atol: float
    rtol: float
    # Outputs judged with their own tolerance (`--atol logits=1e-4`), by output name.
    outputs: Mapping[str, Tolerance] = field(default_factory=dict, compare=False)

    def of(self, output: str) -> Tolerance:
        """The tolerance output `output` is judged with."""
        return self.outputs.get(output, self)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"atol": self.atol, "rtol": self.rtol}
        if self.outputs:
            data["outputs"] = {name: {"atol": t.atol, "rtol": t.rtol} for name, t in sorted(self.outputs.items())}
        return data

    def __str__(self) -> str:
        own = "".join(f"; {name} atol {t.atol:g} rtol {t.rtol:g}" for name, t in sorted(self.outputs.items()))
        return f"atol {self.atol:g} rtol {self.rtol:g}{own}"


# What float32 exports meet against the reference, per device kind. Measured on CPU: SavedModel
# matches exactly, fused ONNX and TFLite kernels within 4e-7 over 1024 steps of a 256-unit LSTM.
# GPU references differ more: cuDNN kernels and TF32-free matmuls take other paths.
FLOAT32_TOLERANCE = {"cpu": Tolerance(atol=1e-5, rtol=1e-5), "gpu": Tolerance(atol=1e-4, rtol=1e-4)}


@dataclass(frozen=True)
class ToleranceOverrides:
    """User overrides keyed by target name; the key `*` applies to every target.

    `device` limits them to one device kind (`cpu` or `gpu`). `under` holds the overrides these
    ones take precedence over: the command line sits over a model's own values in the config
    file, over the file's device table, over its table for every device. `origin` names where
    a config file's values were declared, for an error about their names.

    >>> ToleranceOverrides(atol={"*": 1e-4, "tflite": 1e-3}).apply("tflite", Tolerance(1e-5, 1e-5))
    Tolerance(atol=0.001, rtol=1e-05, outputs={})
    """

    atol: Mapping[str, float] = field(default_factory=dict)
    rtol: Mapping[str, float] = field(default_factory=dict)
    device: str | None = None
    under: ToleranceOverrides | None = None
    origin: str = ""

    def apply(self, target: str, default: Tolerance, device: str = "cpu", outputs: Iterable[str] = ()) -> Tolerance:
        """The tolerance of an export of `target` on `device`, with its own one for each of
        `outputs` that some layer names."""
        base = self._lookup((target, "*"), default, device)
        own = {name: self._lookup((name, target, "*"), default, device) for name in outputs if self.names(name)}
        return Tolerance(base.atol, base.rtol, {name: t for name, t in own.items() if t != base})

    def _lookup(self, keys: tuple[str, ...], default: Tolerance, device: str) -> Tolerance:
        if self.under is not None:
            default = self.under._lookup(keys, default, device)
        if self.device is not None and self.device != device:
            return default
        atol = next((self.atol[k] for k in keys if k in self.atol), default.atol)
        rtol = next((self.rtol[k] for k in keys if k in self.rtol), default.rtol)
        return Tolerance(atol, rtol)

    def names(self, key: str) -> bool:
        """Whether some layer gives a value for `key`."""
        layer: ToleranceOverrides | None = self
        while layer is not None:
            if key in layer.atol or key in layer.rtol:
                return True
            layer = layer.under
        return False


def unknown_name(given: Iterable[str], targets: Iterable[str], where: str, outputs: Iterable[str] = ()) -> None:
    """Refuse a per-target (or, where `outputs` are known, per-output) value for a name that is
    none of them (a typo would silently do nothing): one line naming it and the names known."""
    targets, outputs = sorted(set(targets)), sorted(set(outputs))
    for key in given:
        if key != "*" and key not in targets and key not in outputs:
            what = "target or output" if outputs else "target"
            listed = f"; outputs are: {', '.join(outputs)}" if outputs else ""
            raise UserError(f"{where}: unknown {what} '{key}'; known targets are: {', '.join(targets)}, *{listed}")


def check_targets(overrides: ToleranceOverrides | None, targets: Iterable[str], outputs: Iterable[str] = (),
                  where: str = "--atol/--rtol") -> None:
    """Refuse an override for a name that is neither a target nor one of `outputs`; one a config
    file declared (`origin`) is the config file's error, naming it and the model."""
    targets, outputs = list(targets), list(outputs)
    while overrides is not None:
        try:
            unknown_name((*overrides.atol, *overrides.rtol), targets, where, outputs)
        except UserError as exc:
            if not overrides.origin:
                raise
            raise ConfigError(f"{overrides.origin} atol/rtol{str(exc)[len(where):]}") from None
        overrides = overrides.under


def resolve(target: str, default: Tolerance, floor: Tolerance | None, overrides: ToleranceOverrides,
            device: str, outputs: Iterable[str] = ()) -> Tolerance:
    """The tolerance an export of `target` is checked with on `device` (`cpu` or `gpu`), from the
    target's `default`, the source's `floor` and the user's `overrides` (layers 3 and 4), with
    its own one for each of `outputs` the overrides name."""
    if floor is not None:
        default = Tolerance(max(default.atol, floor.atol), max(default.rtol, floor.rtol))
    return overrides.apply(target, default, device, outputs)

