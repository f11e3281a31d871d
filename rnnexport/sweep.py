"""The cases the parity engine runs: lengths and batch sizes, seeded, or the user's own data."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnexport.errors import UserError, one_line
from rnnexport.model import TensorInfo
from rnnexport.options import SweepOptions

DEFAULT_LENGTHS = (1, 2, 7, 32, 128)
STREAM_LENGTH = 64


@dataclass(frozen=True)
class Case:
    """One set of inputs. `kind` is `random`, `padded` (masked tail) or `data` (from a file).

    A case with a `chunk` runs a streaming export that many steps at a time."""

    name: str
    kind: str
    batch: int
    length: int | None
    inputs: dict[str, np.ndarray] = field(compare=False, repr=False)
    chunk: int | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"name": self.name, "kind": self.kind, "batch": self.batch, "length": self.length}
        if self.chunk is not None:
            data["chunk"] = self.chunk
        return data


def default_lengths(fixed_length: int | None, min_length: int = 1) -> tuple[int, ...]:
    """1, 2, a short length, the source's own length and 4x beyond it. A model that needs at least
    `min_length` steps starts at `min_length` and `min_length + 1` instead of 1 and 2.

    >>> default_lengths(20, min_length=6)
    (6, 7, 20, 80)
    """
    if fixed_length is None:
        lengths = set(DEFAULT_LENGTHS)
    else:
        lengths = {1, 2, max(3, fixed_length // 4), fixed_length, 4 * fixed_length}
    if min_length > 1:
        lengths = {min_length, min_length + 1} | {length for length in lengths if length >= min_length}
    return tuple(sorted(lengths))


def _sample(spec: TensorInfo, batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
    shape = []
    for axis, dim in enumerate(spec.shape):
        if axis == 0:
            shape.append(batch)
        elif axis == spec.time_axis:
            shape.append(length)
        elif dim is None:
            raise UserError(f"input '{spec.name}' has an unknown size on axis {axis}; pass inputs with --data")
        else:
            shape.append(dim)
    if spec.role == "lengths":
        return np.full(shape, length, dtype=spec.dtype)
    if spec.vocab_size is not None:
        # Id 0 is padding when the model masks zeros: keep it out of unpadded sequences.
        low = 1 if spec.mask_value == 0 else 0
        return rng.integers(low, spec.vocab_size, size=shape).astype(spec.dtype)
    if np.issubdtype(np.dtype(spec.dtype), np.integer):
        return rng.integers(0, 2, size=shape).astype(spec.dtype)
    return rng.standard_normal(shape).astype(spec.dtype)


def _pad_tail(array: np.ndarray, spec: TensorInfo, true_lengths: Sequence[int]) -> np.ndarray:
    padded = array.copy()
    for row, true_length in enumerate(true_lengths):
        padded[row, true_length:] = spec.mask_value
    return padded


def _random_cases(inputs: Sequence[TensorInfo], fixed_length: int | None, options: SweepOptions,
                  min_length: int) -> list[Case]:
    lengths = options.lengths or default_lengths(fixed_length, min_length)
    cases = []
    for length in lengths:
        for batch in options.batches:
            rng = np.random.default_rng([options.seed, length, batch])
            arrays = {spec.name: _sample(spec, batch, length, rng) for spec in inputs}
            cases.append(Case(f"len={length} batch={batch}", "random", batch, length, arrays))
    masked = [spec for spec in inputs if spec.mask_value is not None and spec.time_axis == 1]
    if masked:
        length = max(4, min_length, fixed_length or 16)
        true_lengths = (length, length // 2, 1)
        rng = np.random.default_rng([options.seed, length, 0])
        arrays = {spec.name: _sample(spec, len(true_lengths), length, rng) for spec in inputs}
        for spec in masked:
            arrays[spec.name] = _pad_tail(arrays[spec.name], spec, true_lengths)
        name = f"padded len={length} batch=3 true={','.join(map(str, true_lengths))}"
        cases.append(Case(name, "padded", len(true_lengths), length, arrays))
    lengths_inputs = [spec for spec in inputs if spec.role == "lengths"]
    if lengths_inputs:
        for length in sorted({fixed_length or 16, 4 * (fixed_length or 16)}):
            true_lengths = (length, length // 2 + 1, 1)
            rng = np.random.default_rng([options.seed, length, 1])
            arrays = {spec.name: _sample(spec, len(true_lengths), length, rng) for spec in inputs}
            for spec in lengths_inputs:
                arrays[spec.name] = np.asarray(true_lengths, dtype=spec.dtype)
            name = f"lengths len={length} batch=3 true={','.join(map(str, true_lengths))}"
            cases.append(Case(name, "padded", len(true_lengths), length, arrays))
    return cases


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file by name; a one-line error naming the file when it is not one."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise UserError(f"{path}: a single .npy array, not an .npz archive of arrays keyed by input name")
        with loaded as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable .npz file ({one_line(exc, typed=False)})") from None


def _data_case(inputs: Sequence[TensorInfo], path: Path) -> Case:
    arrays = checked_arrays(inputs, read_npz(path), path)
    first = arrays[inputs[0].name]
    length = first.shape[1] if inputs[0].time_axis == 1 else None
    return Case(f"data {path.name}", "data", first.shape[0], length, arrays)


def checked_arrays(inputs: Sequence[TensorInfo], stored: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """`stored` as the model's inputs take them, keyed by input name and cast to their dtypes;
    a one-line error naming `path` for a missing name, a wrong rank or size, or values the
    input cannot take."""
    names = [spec.name for spec in inputs]
    if len(inputs) == 1 and len(stored) == 1:
        stored = {names[0]: next(iter(stored.values()))}
    missing = [n for n in names if n not in stored]
    if missing:
        raise UserError(f"{path}: no array for input(s) {', '.join(missing)}; arrays found: {', '.join(stored)}")
    arrays = {}
    for spec in inputs:
        array = stored[spec.name]
        if array.ndim != len(spec.shape):
            raise UserError(
                f"{path}: array '{spec.name}' has {array.ndim} dimensions, the model expects {len(spec.shape)}"
            )
        for axis, size in enumerate(spec.shape):
            if size is not None and array.shape[axis] != size:
                raise UserError(
                    f"{path}: array '{spec.name}' has size {array.shape[axis]} on axis {axis}, the model expects {size}"
                )
        _check_values(path, spec, array)
        arrays[spec.name] = array.astype(spec.dtype)
    return arrays


def _check_values(path: Path, spec: TensorInfo, array: np.ndarray) -> None:
    """Refuse values the input cannot take: another kind of number (float token ids), strings,
    token ids outside the vocabulary."""
    if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
        what = "token ids" if spec.vocab_size is not None else f"{spec.dtype} values"
        raise UserError(f"{path}: array '{spec.name}' holds {array.dtype} values, the model expects {what} "
                        f"({spec.dtype})")
    if spec.vocab_size is not None and array.size and (array.min() < 0 or array.max() >= spec.vocab_size):
        raise UserError(f"{path}: array '{spec.name}' holds token ids from {array.min()} to {array.max()}, the "
                        f"model's vocabulary has ids 0 to {spec.vocab_size - 1}")


def build_cases(inputs: Sequence[TensorInfo], fixed_length: int | None, options: SweepOptions,
                min_length: int = 1) -> list[Case]:
    """The cases of the sweep; the default lengths start at `min_length` (lengths the user asks
    for are kept: a reference that cannot serve them says so)."""
    if options.data is not None:
        return [_data_case(inputs, Path(options.data))]
    return _random_cases(inputs, fixed_length, options, min_length)


def stream_length(fixed_length: int | None) -> int:
    """A sequence long enough that every chunk size runs many chunks, and whole windows of a
    source fixed at `fixed_length` steps (which can only be run window by window)."""
    if fixed_length is None:
        return STREAM_LENGTH
    return fixed_length * -(-STREAM_LENGTH // fixed_length)


def build_stream_cases(inputs: Sequence[TensorInfo], fixed_length: int | None, options: SweepOptions) -> list[Case]:
    """The cases of the streaming check: one long sequence per batch size (or the `--data`
    arrays), fed in chunks of each of `options.chunks` steps."""
    if options.data is not None:
        bases = [_data_case(inputs, Path(options.data))]
    else:
        length = stream_length(fixed_length)
        bases = []
        for batch in options.batches:
            rng = np.random.default_rng([options.seed, length, batch, 2])
            arrays = {spec.name: _sample(spec, batch, length, rng) for spec in inputs}
            bases.append(Case(f"len={length} batch={batch}", "streaming", batch, length, arrays))
    return [
        Case(f"stream chunk={chunk} {base.name}", "streaming", base.batch, base.length, base.inputs, chunk)
        for base in bases if base.length is not None for chunk in options.chunks
    ]
