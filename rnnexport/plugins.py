"""Sources and targets, discovered through entry points.

The built-in plugins in `converters/` register in `pyproject.toml` exactly as a third-party
package would (groups `rnnexport.sources` and `rnnexport.targets`). A plugin that fails to
load is listed as broken with its error; the others keep working.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from rnnexport.errors import ExportError, PluginError, SourceError, one_line
from rnnexport.target_options import NoOptions
from rnnexport.tolerance import FLOAT32_TOLERANCE

if TYPE_CHECKING:
    import numpy as np

    from rnnexport.device import Device
    from rnnexport.exported import ExportContents, Interface
    from rnnexport.model import RecurrentModel, SourceInfo, TensorInfo
    from rnnexport.options import SourceOptions
    from rnnexport.tolerance import Tolerance
    from rnnexport.runner import Probe, ReferenceRunner, Runner, StreamRunner

SOURCE_GROUP = "rnnexport.sources"
TARGET_GROUP = "rnnexport.targets"


class ExportDetails(TypedDict, total=False):
    """Facts about one export for the report: what `Target.describe` returns, plus the states a
    streaming export carries. Every key is optional; a format fills in those it knows."""

    opset: int | None
    batch: int | None
    quantize: str | None
    ops: dict[str, int]
    recurrent_ops: dict[str, int]
    fused: dict[str, str]
    not_fused: dict[str, str]
    streaming_states: list[str]
    shortest_length: int
    calibration: str
    io: dict[str, dict[str, Any]]


class OpenedSource(ABC):
    """A source that has been read: what was found, the model to export, the reference."""

    info: SourceInfo

    @abstractmethod
    def recurrent_model(self) -> RecurrentModel:
        """Build the variable-length model every target exports."""

    @abstractmethod
    def reference(self, device: Device) -> ReferenceRunner:
        """The source itself, executed, as ground truth for parity."""

    def tolerance_floor(self, device: Device) -> Tolerance | None:
        """A tolerance below which no export of this source can match it, when the source's own
        arithmetic differs from the exported kind (None: the targets' defaults apply)."""
        return None

    def layer_outputs(self, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]] | None:
        """Each layer's output on `inputs`, in order, (name, class, array), from the model the
        targets export; the parity engine compares them with a failing export's insides to find
        the first layer that drifts. None: this source cannot say."""
        return None


class Source(ABC):
    """Reads one kind of input. `sniff` must be cheap: no TensorFlow import."""

    name: str
    description: str

    @abstractmethod
    def sniff(self, path: Path) -> bool:
        """True when `path` looks like this source's kind of file."""

    def accepts(self, obj: Any) -> bool:
        """True when this source can read the in-memory object `obj`."""
        return False

    @abstractmethod
    def open(self, source: Path | Any, options: SourceOptions) -> OpenedSource:
        """Read the file or object; raise `SourceError` or `UnsupportedModelError`."""


class Target(ABC):
    """Writes one format from a RecurrentModel and runs what it wrote.

    `Options` is the frozen dataclass of the options this target declares (fields made with
    `rnnexport.target_options.option`); the API checks the values it is given against it and the
    command line offers a flag for each. `tolerances` is what a float32 export of this format
    meets against its source, per device kind."""

    name: str
    description: str
    suffix: str
    Options: type = NoOptions
    tolerances: Mapping[str, Tolerance] = FLOAT32_TOLERANCE

    @abstractmethod
    def export(self, model: RecurrentModel, path: Path, options: Any, streaming: bool) -> None:
        """Write the artifact at `path`, which does not exist yet, with `options` (an `Options`);
        with `streaming`, also the step entry points, into `files(path, True)`."""

    @abstractmethod
    def detect(self, path: Path) -> bool:
        """True when `path` is an artifact of this format (cheap, no heavy import)."""

    @abstractmethod
    def runner(self, path: Path, device: Device) -> Runner:
        """A runner for the artifact; raise `ExportError` when it cannot be read."""

    def judged_by(self, path: Path) -> str | None:
        """The quantization mode whose thresholds (`rnnexport.thresholds.DEFAULT_THRESHOLDS`) judge
        the export at `path` by decisions instead of a tolerance; None: a tolerance judges it."""
        return None

    def default_tolerance(self, device: Device, path: Path) -> Tolerance:
        """The tolerance the artifact at `path` meets against the reference on `device` (by
        default the declared `tolerances`; a format may read the file, e.g. its quantization)."""
        return self.tolerances[device.kind]

    # Whether `export` writes streaming entry points when `ExportOptions.streaming` is set.
    streams: bool = False

    def files(self, path: Path, streaming: bool) -> list[Path]:
        """Everything an export at `path` writes: `path`, and any file the streaming entry points
        go into beside it."""
        return [path]

    def stream_runner(self, path: Path, device: Device) -> StreamRunner | None:
        """A runner for the streaming entry points of the export at `path` (None: it has none)."""
        return None

    def probe(self, path: Path, device: Device) -> Probe | None:
        """Something that runs the export and returns its intermediate tensors, to find the layer
        a failing export drifts in (None: this format does not show them)."""
        return None

    def describe(self, path: Path) -> ExportDetails:
        """Facts about an artifact for the report (op types, fused layers); cheap to compute."""
        return {}

    def interface(self, path: Path, device: Device) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """The inputs and outputs of the artifact as its runtime declares them (dynamic
        dimensions None), for checking it without its source (`rnnexport compare`)."""
        raise ExportError(f"{path}: the {self.name} target cannot say what its exports take")

    def stored_interface(self, path: Path) -> Interface | None:
        """The interface rnnexport stored in the export at `path` when it wrote it (token-id
        vocabularies, masking, lengths inputs); None for a file another tool wrote."""
        return None

    def record_parity(self, path: Path, summary: Mapping[str, Any]) -> None:
        """Store the parity summary in an artifact that can carry it; others ignore it."""

    def contents(self, path: Path) -> ExportContents | None:
        """What `inspect` shows of the export at `path`: entry points, recurrent ops, batch policy,
        streaming states and the stored parity (None: not an export this target can show)."""
        return None


@dataclass(frozen=True)
class PluginEntry:
    group: str
    name: str
    value: str
    distribution: str | None
    plugin: Any = None
    error: str | None = None

    @property
    def broken(self) -> bool:
        return self.error is not None


@functools.cache
def _entry_points() -> Any:
    """Every installed entry point, read once: each reading scans every installed distribution."""
    return entry_points()


def _load(group: str, base: type) -> tuple[PluginEntry, ...]:
    found = []
    for ep in sorted(_entry_points().select(group=group), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else None
        try:
            cls = ep.load()
            plugin = cls()
            if not isinstance(plugin, base):
                raise TypeError(f"{ep.value} is not a {base.__name__}")
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
            found.append(PluginEntry(group, ep.name, ep.value, dist, error=one_line(exc)))
        else:
            found.append(PluginEntry(group, ep.name, ep.value, dist, plugin=plugin))
    return tuple(found)


@functools.cache
def source_entries() -> tuple[PluginEntry, ...]:
    return _load(SOURCE_GROUP, Source)


@functools.cache
def target_entries() -> tuple[PluginEntry, ...]:
    return _load(TARGET_GROUP, Target)


def _working(entries: tuple[PluginEntry, ...]) -> list[Any]:
    return [e.plugin for e in entries if not e.broken]


def sources() -> list[Source]:
    return _working(source_entries())


def targets() -> list[Target]:
    return _working(target_entries())


def _lookup(entries: tuple[PluginEntry, ...], name: str, what: str) -> Any:
    for entry in entries:
        if entry.name == name:
            if entry.broken:
                raise PluginError(f"{what} plugin '{name}' failed to load: {entry.error}")
            return entry.plugin
    supported = ", ".join(e.name for e in entries if not e.broken) or "none"
    raise PluginError(f"{what} '{name}' is not supported; supported are: {supported}")


def get_target(name: str) -> Target:
    return _lookup(target_entries(), name, "target")


def find_source(source: Path | Any) -> Source:
    """The source plugin for a path or an in-memory model, or a one-line `SourceError`."""
    if not isinstance(source, Path):
        for plugin in sources():
            if plugin.accepts(source):
                return plugin
        raise SourceError(f"no source plugin reads objects of type {type(source).__name__}")
    # A checkpoint prefix (model.ckpt) names files that exist only with suffixes: sniff first.
    for plugin in sources():
        if plugin.sniff(source):
            return plugin
    if not source.exists():
        raise SourceError(f"{source}: no such file or directory")
    known = "; ".join(f"{p.name} ({p.description})" for p in sources())
    raise SourceError(f"{source}: not a model rnnexport can read; supported sources: {known}")


def find_target_for(path: Path) -> Target:
    """The target plugin that wrote an existing artifact."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    for plugin in targets():
        if plugin.detect(path):
            return plugin
    known = ", ".join(f"{p.name} (*{p.suffix})" for p in targets())
    raise ExportError(f"{path}: not an export rnnexport can run; supported formats: {known}")
