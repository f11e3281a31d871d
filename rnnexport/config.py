"""The gate's config file: `[tool.rnnexport]` in `pyproject.toml`, or a TOML file given with `--config`.

Everything is checked on reading: an unknown key or a value of the wrong type is a one-line
error naming the file and the key. Paths are relative to the file's directory.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnexport import plugins
from rnnexport.device import DEVICE_CHOICES
from rnnexport.errors import ConfigError
from rnnexport.tolerance import ToleranceOverrides

TABLE = "tool.rnnexport"
REPORTS = ("json", "junit", "markdown", "html")
# A model's values per target or output, as the command line's options of the same names take them.
PER_NAME = ("atol", "rtol", "max_latency_ms", "min_speedup")


@dataclass(frozen=True)
class ModelEntry:
    """One source and the exports of it the gate checks. `exports` empty: those `targets` wrote under `out`."""

    source: Path
    exports: tuple[Path, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    step: int | None = None
    unsafe: bool = False
    data: Path | None = None
    custom_objects: tuple[str, ...] = ()
    cells: tuple[str, ...] = ()
    architecture: Path | None = None
    # What the command line takes per target or output, for this model: (NAME, value) pairs, NAME
    # a target, an output (tolerances only) or `*`. Tuples keep the entry hashable.
    atol: tuple[tuple[str, float], ...] = ()
    rtol: tuple[tuple[str, float], ...] = ()
    max_latency_ms: tuple[tuple[str, float], ...] = ()
    min_speedup: tuple[tuple[str, float], ...] = ()
    # Where it was declared (`gate.toml: model 'models/en.keras'`), for errors about its names.
    origin: str = field(default="", compare=False)

    @property
    def judging(self) -> tuple[object, ...]:
        """This model's own tolerances and latency gates: models that differ in them are checked apart."""
        return self.atol, self.rtol, self.max_latency_ms, self.min_speedup


@dataclass(frozen=True)
class Config:
    path: Path
    models: tuple[ModelEntry, ...] = ()
    targets: tuple[str, ...] | None = None
    out: Path | None = None
    device: str | None = None
    seed: int | None = None
    lengths: tuple[int, ...] | None = None
    batches: tuple[int, ...] | None = None
    chunks: tuple[int, ...] | None = None
    data: Path | None = None
    data_batch: int | None = None
    features: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
    tolerance: ToleranceOverrides = field(default_factory=ToleranceOverrides)
    reports: Mapping[str, Path] = field(default_factory=dict)


class _Reader:
    """Typed access to one table, each error naming the file and the dotted key."""

    def __init__(self, path: Path, where: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
        self.path, self.where, self.table = path, where, table
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise self.error(unknown[0], f"unknown key; known keys are: {', '.join(known)}")

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{self.where}] '{key}': {message}")

    def get(self, key: str, check: Callable[[Any], bool], expected: str) -> Any:
        if key not in self.table:
            return None
        value = self.table[key]
        if not check(value):
            raise self.error(key, f"expected {expected}, got {value!r}")
        return value

    def string(self, key: str, choices: tuple[str, ...] = ()) -> str | None:
        return self.get(key, lambda v: isinstance(v, str) and (not choices or v in choices),
                        f"one of {', '.join(choices)}" if choices else "a string")

    def path_value(self, key: str) -> Path | None:
        value = self.get(key, lambda v: isinstance(v, str) and v != "", "a path")
        return None if value is None else self.path.parent / value

    def paths(self, key: str) -> tuple[Path, ...]:
        value = self.get(key, lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
                         "a list of paths")
        return tuple(self.path.parent / v for v in value or ())

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self.get(key, lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings")
        return None if value is None else tuple(value)

    def integers(self, key: str) -> tuple[int, ...] | None:
        value = self.get(key, lambda v: isinstance(v, list) and v != [] and all(_is_int(x) and x >= 1 for x in v),
                         "a non-empty list of positive integers")
        return None if value is None else tuple(value)

    def integer(self, key: str, minimum: int = 0) -> int | None:
        return self.get(key, lambda v: _is_int(v) and v >= minimum, f"an integer >= {minimum}")

    def boolean(self, key: str) -> bool | None:
        return self.get(key, lambda v: isinstance(v, bool), "true or false")

    def table_of(self, key: str) -> Mapping[str, Any]:
        return self.get(key, lambda v: isinstance(v, dict), "a table") or {}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tolerance(reader: _Reader, targets: tuple[str, ...]) -> ToleranceOverrides:
    """`[tolerance.<device>]` tables, device `*`, `cpu` or `gpu`, map a target (or `*`) to
    `{atol, rtol}`; a device's own table takes precedence over `*`."""
    devices = _Reader(reader.path, f"{reader.where}.tolerance", reader.table_of("tolerance"), ("*", "cpu", "gpu"))
    layered = None
    for device in ("*", "cpu", "gpu"):
        where = f"{devices.where}.{device}"
        per_target = _Reader(reader.path, where, devices.table_of(device), ("*", *targets))
        atol, rtol = {}, {}
        for target in per_target.table:
            numbers = _Reader(reader.path, f"{where}.{target}", per_target.table_of(target), ("atol", "rtol"))
            for key, into in (("atol", atol), ("rtol", rtol)):
                value = numbers.get(key, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                                    and v >= 0 and v == v, "a non-negative number")
                if value is not None:
                    into[target] = float(value)
        if atol or rtol:
            layered = ToleranceOverrides(atol, rtol, None if device == "*" else device, layered)
    return layered or ToleranceOverrides()


FEATURE_DTYPES = ("float32", "int64")


def _features(reader: _Reader) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """`[features]`: per input, the dtype and shape (-1 for the time axis) of its TFRecord feature."""
    table = reader.table_of("features")
    found = []
    for name in table:
        where = f"{reader.where}.features"
        if not isinstance(table[name], dict):
            raise ConfigError(f"{reader.path}: [{where}] '{name}': expected a table with dtype and shape")
        feature = _Reader(reader.path, f"{where}.{name}", table[name], ("dtype", "shape"))
        dtype = feature.string("dtype", FEATURE_DTYPES) or "float32"
        shape = feature.get("shape", lambda v: isinstance(v, list) and all(_is_int(x) and (x >= 1 or x == -1)
                                                                             for x in v) and v.count(-1) <= 1,
                            "a list of sizes, -1 for the time axis")
        found.append((name, dtype, tuple(shape or ())))
    return tuple(found)


def _per_name(reader: _Reader, key: str, positive: bool, targets: tuple[str, ...] | None = None
              ) -> tuple[tuple[str, float], ...]:
    """`key = { NAME = X, ... }`: numbers by target, output or `*`, as the command line's
    `--key NAME=X`; with `targets`, NAME must be one of them (outputs are known only once the
    source is read, and checked then)."""
    table = reader.get(key, lambda v: isinstance(v, dict), "a table of NAME = number, NAME a target, output or *")
    found = []
    for name, value in (table or {}).items():
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
                and (value > 0 if positive else value >= 0)):
            raise reader.error(key, f"'{name}': expected a {'positive' if positive else 'non-negative'} number, "
                                    f"got {value!r}")
        if targets is not None and name not in (*targets, "*"):
            raise reader.error(key, f"unknown target '{name}'; known targets are: {', '.join(targets)}, *")
        found.append((name, float(value)))
    return tuple(found)


def _model(path: Path, index: int, entry: Any) -> ModelEntry:
    where = f"{TABLE}.models[{index}]"
    if isinstance(entry, str):
        entry = {"source": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: [{where}]: expected a source path or a table, got {entry!r}")
    reader = _Reader(path, where, entry, ("source", "exports", "inputs", "outputs", "step", "unsafe", "data",
                                        "custom_objects", "cell", "architecture", *PER_NAME))
    source = reader.path_value("source")
    if source is None:
        raise reader.error("source", "missing; every model needs the source its exports were made from")
    targets = tuple(t.name for t in plugins.targets())
    return ModelEntry(
        source=source, exports=reader.paths("exports"), inputs=reader.strings("inputs") or (),
        outputs=reader.strings("outputs") or (), step=reader.integer("step"), unsafe=bool(reader.boolean("unsafe")),
        data=reader.path_value("data"), custom_objects=reader.strings("custom_objects") or (),
        cells=reader.strings("cell") or (), architecture=reader.path_value("architecture"),
        atol=_per_name(reader, "atol", False), rtol=_per_name(reader, "rtol", False),
        max_latency_ms=_per_name(reader, "max_latency_ms", True, targets),
        min_speedup=_per_name(reader, "min_speedup", True, targets),
        origin=f"{path}: [{where}] model '{entry['source']}'",
    )


def parse(path: Path, table: Mapping[str, Any]) -> Config:
    reader = _Reader(path, TABLE, table, ("models", "targets", "out", "device", "seed", "lengths", "batches",
                                          "chunks", "data", "data_batch", "features", "tolerance", "reports"))
    models = reader.get("models", lambda v: isinstance(v, list), "a list of sources or tables") or []
    reports = _Reader(path, f"{TABLE}.reports", reader.table_of("reports"), REPORTS)
    known = tuple(t.name for t in plugins.targets())
    targets = reader.strings("targets")
    for name in targets or ():
        if name not in (*known, "all"):
            raise reader.error("targets", f"unknown target '{name}'; known targets are: {', '.join(known)}, all")
    return Config(
        path=path,
        models=tuple(_model(path, i, m) for i, m in enumerate(models)),
        targets=targets,
        out=reader.path_value("out"),
        device=reader.string("device", DEVICE_CHOICES),
        seed=reader.integer("seed"),
        lengths=reader.integers("lengths"),
        batches=reader.integers("batches"),
        chunks=reader.integers("chunks"),
        data=reader.path_value("data"),
        data_batch=reader.integer("data_batch", minimum=1),
        features=_features(reader),
        tolerance=_tolerance(reader, known),
        reports={key: p for key in REPORTS if (p := reports.path_value(key)) is not None},
    )


def load(path: Path | None, cwd: Path) -> Config | None:
    """The config given with `--config`, else `[tool.rnnexport]` of `pyproject.toml` in `cwd`, else None.

    A file given with `--config` may hold the table under `[tool.rnnexport]` (a pyproject) or at its top level."""
    given = path is not None
    path = path if given else cwd / "pyproject.toml"
    if not path.is_file():
        if given:
            raise ConfigError(f"{path}: no such config file")
        return None
    try:
        document = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    table = document.get("tool", {}).get("rnnexport") if isinstance(document.get("tool"), dict) else None
    if table is None:
        if not given:
            return None
        table = document
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{TABLE}] must be a table")
    return parse(path, table)
