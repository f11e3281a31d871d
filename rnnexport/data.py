"""Evaluation sets bigger than memory: a directory of `.npz` shards (arrays keyed by input name, a
row per sequence), or TFRecord files of serialized `tf.train.Example`s read with the feature
spec of the config file. Shards are read one at a time and their rows cut into batches of at
most `data_batch` rows of one length, so that memory holds a shard and a few batches whatever
the size of the set.

Rows of different lengths are bucketed: a TFRecord row is padded (with its input's mask value,
else zero) to the bucket's length, the next multiple of an eighth of its power of two (at most
12.5% padding; lengths under 16 are exact); the rows of an `.npz` shard share its length.

    >>> for case in batches(Path("shards/"), info.inputs, SweepOptions(data_batch=64)):
    ...     case.name, case.batch, case.length
    ('data shards/ rows 0-63', 64, 20)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rnnexport.errors import UserError, one_line
from rnnexport.model import TensorInfo
from rnnexport.options import SweepOptions
from rnnexport.sweep import Case, checked_arrays, read_npz

TFRECORD = (".tfrecord", ".tfrecords")
# Without `data_batch`, a batch holds about this many input values: every batch costs a call into
# the reference and each export (10,000 rows of 20 steps took 1.3x as long in batches of 256 as
# in batches of 4096), and the batch stays small beside a shard.
BATCH_VALUES = 2**22
BATCH_ROWS = (16, 4096)
# A bucket holding rows of many lengths is flushed, partly full, past this many batches' rows.
PENDING_BATCHES = 4


def is_stream(path: Path | None) -> bool:
    """Whether `--data` names a set that is streamed (a directory of shards, or TFRecord files)
    rather than one `.npz` file read whole."""
    return path is not None and (Path(path).is_dir() or Path(path).suffix in TFRECORD)


def shards(path: Path) -> tuple[list[Path], str]:
    """The shard files of a set, in name order, and their kind (`npz` or `tfrecord`)."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise UserError(f"{path}: no such data file or directory")
        return [path], "tfrecord"
    npz = sorted(path.glob("*.npz"))
    records = sorted(p for p in path.iterdir() if p.suffix in TFRECORD)
    if npz and records:
        raise UserError(f"{path}: holds both .npz and TFRecord shards; keep one kind per data directory")
    if not (npz or records):
        raise UserError(f"{path}: no .npz or TFRecord (.tfrecord, .tfrecords) shards in this directory")
    return (npz, "npz") if npz else (records, "tfrecord")


def bucket_length(length: int) -> int:
    """The padded length of a row: exact under 16 steps, else the next multiple of 1/8 of the
    power of two below it.

    >>> [bucket_length(n) for n in (7, 16, 17, 100, 1000)]
    [7, 16, 18, 104, 1024]
    """
    step = max(1, 2 ** (int(length).bit_length() - 4))
    return -(-length // step) * step


def _padded(spec: TensorInfo, array: np.ndarray, length: int) -> np.ndarray:
    if spec.time_axis is None or array.shape[spec.time_axis] >= length:
        return array
    missing = length - array.shape[spec.time_axis]
    pad = [(0, 0)] * array.ndim
    pad[spec.time_axis] = (0, missing)
    fill = spec.mask_value if spec.mask_value is not None else 0
    return np.pad(array, pad, constant_values=fill)


def _time_length(inputs: Sequence[TensorInfo], arrays: dict[str, np.ndarray]) -> int | None:
    timed = next((spec for spec in inputs if spec.time_axis is not None), None)
    return None if timed is None else int(arrays[timed.name].shape[timed.time_axis])


def _npz_blocks(files: Sequence[Path], inputs: Sequence[TensorInfo]) -> Iterator[dict[str, np.ndarray]]:
    for path in files:
        yield checked_arrays(inputs, read_npz(path), path)


def _tfrecord_blocks(files: Sequence[Path], inputs: Sequence[TensorInfo],
                     features: Sequence[tuple[str, str, tuple[int, ...]]]) -> Iterator[dict[str, np.ndarray]]:
    """Each example as a block of one row, padded to its bucket's length."""
    from rnnexport.tf import tensorflow

    if not features:
        raise UserError(f"{files[0]}: TFRecord data needs the feature spec of its examples: [tool.rnnexport.features] "
                        "in the config file, e.g. x = { dtype = \"float32\", shape = [-1, 8] }")
    tf = tensorflow()
    spec = {name: tf.io.VarLenFeature(tf.as_dtype(dtype)) for name, dtype, _ in features}
    dataset = tf.data.TFRecordDataset([str(f) for f in files]).map(
        lambda s: {k: v.values for k, v in tf.io.parse_single_example(s, spec).items()})
    for index, example in enumerate(dataset.as_numpy_iterator()):
        where = Path(f"{files[0].parent}/example {index}")
        stored = {}
        for name, _, shape in features:
            values = example[name]
            try:
                stored[name] = values.reshape(shape)[None]
            except ValueError:
                raise UserError(f"{where}: feature '{name}' holds {values.size} values, which do not make the shape "
                                f"{list(shape)} of the feature spec") from None
        arrays = checked_arrays(inputs, stored, where)
        length = _time_length(inputs, arrays)
        if length is not None:
            arrays = {s.name: _padded(s, arrays[s.name], bucket_length(length)) for s in inputs}
        yield arrays


def _cut(arrays: dict[str, np.ndarray], rows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return {k: v[:rows] for k, v in arrays.items()}, {k: v[rows:] for k, v in arrays.items()}


def batches(path: Path, inputs: Sequence[TensorInfo], options: SweepOptions) -> Iterator[Case]:
    """The set as cases of at most `options.data_batch` rows of one length (None: sized by the first
    row), in the order rows fill their buckets."""
    files, kind = shards(path)
    blocks = _npz_blocks(files, inputs) if kind == "npz" else _tfrecord_blocks(files, inputs, options.features)
    size = options.data_batch
    pending: dict[int | None, list[dict[str, np.ndarray]]] = {}
    counts: dict[int | None, int] = {}
    start = 0

    def emit(length: int | None, rows: int) -> Case:
        nonlocal start
        taken, held = [], 0
        while held < rows:
            block = pending[length].pop(0)
            need = rows - held
            if len(next(iter(block.values()))) > need:
                block, rest = _cut(block, need)
                pending[length].insert(0, rest)
            taken.append(block)
            held += len(next(iter(block.values())))
        counts[length] -= rows
        arrays = {name: np.concatenate([b[name] for b in taken]) for name in taken[0]}
        case = Case(f"data {Path(path).name} rows {start}-{start + rows - 1}", "data", rows, length, arrays)
        start += rows
        return case

    try:
        for block in blocks:
            if size is None:
                values = max(1, next(iter(block.values()))[0].size)
                size = min(max(BATCH_VALUES // values, BATCH_ROWS[0]), BATCH_ROWS[1])
            length = _time_length(inputs, block)
            pending.setdefault(length, []).append(block)
            counts[length] = counts.get(length, 0) + len(next(iter(block.values())))
            while counts[length] >= size:
                yield emit(length, size)
            if sum(counts.values()) > PENDING_BATCHES * size:
                fullest = max(counts, key=lambda k: counts[k])
                yield emit(fullest, counts[fullest])
        for length in sorted(counts, key=lambda k: (k is None, k or 0)):
            if counts[length]:
                yield emit(length, counts[length])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - tf.data's and numpy's own errors, told with the set's name
        raise UserError(f"{path}: cannot read the data set ({one_line(exc)})") from None
    if start == 0:
        raise UserError(f"{path}: the data set holds no rows")
