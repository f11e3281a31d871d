"""What `inspect` shows of an export: its entry points as the file declares them, the recurrent ops
in it, its batch policy, the streaming states and what each holds, and the parity summary the
conversion stored in it. Each target reads its own files (`Target.contents`) into these."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from rnnexport.model import TensorInfo

if TYPE_CHECKING:
    from rnnexport.model import SourceInfo

# Names of the dynamic dimensions rnnexport's entry points have, by axis: [batch, time, ...].
DYNAMIC = ("batch", "time")


def dims(shape: Iterable[int | None]) -> tuple[int | str, ...]:
    """A declared shape with its dynamic dimensions named: `batch` and `time` where rnnexport puts
    them, `?` elsewhere (formats that do not name them, TFLite and SavedModel, give None or -1)."""
    return tuple(DYNAMIC[axis] if (d is None or d < 0) and axis < len(DYNAMIC) else "?" if d is None or d < 0
                 else int(d) for axis, d in enumerate(shape))


@dataclass(frozen=True)
class Port:
    """An input or output of an entry point; a `str` in `dims` is a dynamic dimension."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def describe(self) -> str:
        return f"{self.name} {self.dtype}[{', '.join(map(str, self.dims))}]"


@dataclass(frozen=True)
class EntryPoint:
    """One callable of an export (a signature, a file): `serving_default`, `step`, `initial_state`."""

    name: str
    file: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]


@dataclass(frozen=True)
class StateTensor:
    """A state a streaming export carries: its input name, shape per batch row, what it holds."""

    name: str
    shape: tuple[int, ...]
    holds: str

    def describe(self) -> str:
        return f"{self.name} [{', '.join(map(str, self.shape))}] per row: {self.holds}"


@dataclass(frozen=True)
class ExportContents:
    """An export as `inspect` shows it. `parity` is the summary stored when it was validated
    (None: never validated, or a format that keeps none)."""

    path: str
    target: str
    entry_points: tuple[EntryPoint, ...]
    recurrent_ops: dict[str, int]
    batch: str
    states: tuple[StateTensor, ...] = ()
    source: str | None = None
    parity: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summary(parity: Mapping[str, Any]) -> str:
    """One line of a stored parity summary (`ExportParity.summary`)."""
    parts = ["PASS" if parity.get("passed") else "FAIL",
             f"{parity.get('cases_passed', '?')}/{parity.get('cases', '?')} cases passed"]
    if parity.get("cases_skipped"):
        parts.append(f"{parity['cases_skipped']} not checked")
    for key in ("lengths", "batches"):
        if parity.get(key):
            parts.append(f"{key} {','.join(map(str, parity[key]))}")
    if parity.get("max_abs") is not None:
        parts.append(f"max abs err {parity['max_abs']:.3g}")
    if parity.get("tolerance"):
        parts.append("tolerance " + " ".join(f"{k} {v:g}" for k, v in parity["tolerance"].items()
                                            if isinstance(v, (int, float))))
    if parity.get("device"):
        parts.append(f"on {parity['device']}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Interface:
    """What an export takes and gives, as its source declared it when rnnexport wrote it: dtypes,
    time axes, vocabulary sizes, masking and lengths inputs that no runtime signature holds (a
    token-id input is just int32 there). `rnnexport compare` builds its sweep from it."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    fixed_length: int | None = None
    min_length: int = 1

    @classmethod
    def of(cls, info: SourceInfo) -> Interface:
        return cls(info.inputs, info.outputs, info.fixed_length, info.min_length)

    def to_dict(self) -> dict[str, Any]:
        """What a target stores in its export's metadata, under `interface`."""
        return {"inputs": [asdict(t) for t in self.inputs], "outputs": [asdict(t) for t in self.outputs],
                "fixed_length": self.fixed_length, "min_length": self.min_length}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> Interface:
        def tensors(key: str) -> tuple[TensorInfo, ...]:
            # Keys a newer rnnexport may add are left out: what this version knows still describes the file.
            known = {f.name for f in fields(TensorInfo)}
            return tuple(TensorInfo(**{**{k: v for k, v in t.items() if k in known}, "shape": tuple(t["shape"])})
                         for t in stored[key])

        return cls(tensors("inputs"), tensors("outputs"), stored.get("fixed_length"), stored.get("min_length", 1))


def states(names: Sequence[str], shapes: Mapping[str, Sequence[int | str]], holds: Mapping[str, str]
           ) -> tuple[StateTensor, ...]:
    """The states of a step entry point: per-row shapes from the file's declared inputs (batch
    dropped), descriptions from rnnexport's metadata (`?` for a file written before it kept them)."""
    return tuple(StateTensor(name, tuple(int(d) if isinstance(d, int) else -1 for d in shapes[name][1:]),
                             holds.get(name, "?")) for name in names)
