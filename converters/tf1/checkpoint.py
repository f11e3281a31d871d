"""Source plugin for TF1 Saver checkpoints: a prefix (`model.ckpt`), its `.meta` file, or a
directory with a `checkpoint` state file.

The meta graph is imported with the checkpoint's values and opened as every TF1 graph is
(`opened.OpenedTf1`): its cells recognised, the equivalent Keras model checked against the graph
before anything is returned, and the graph itself in a `tf.compat.v1.Session` as the reference.
A checkpoint saved without a graph is opened with the architecture `--cell` or `--architecture`
names (`graphless_source.OpenedGraphless`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rnnexport_converters.tf1 import graph as tf1_graph
from rnnexport_converters.tf1 import safety
from rnnexport_converters.tf1.architecture import from_options
from rnnexport_converters.tf1.graphless import Variables
from rnnexport_converters.tf1.graphless_source import OpenedGraphless
from rnnexport_converters.tf1.opened import OpenedTf1
from rnnexport.errors import SourceError, one_line
from rnnexport.options import SourceOptions
from rnnexport.plugins import OpenedSource, Source
from rnnexport.tf import tensorflow


def _state_file_prefixes(directory: Path) -> list[str]:
    """Checkpoint prefixes a `checkpoint` state file lists, newest last, as paths in `directory`
    (state files often hold absolute paths from the machine that trained)."""
    text = (directory / "checkpoint").read_text(errors="replace")
    newest = re.findall(r'^model_checkpoint_path:\s*"(.*)"', text, re.M)
    listed = re.findall(r'^all_model_checkpoint_paths:\s*"(.*)"', text, re.M)
    names = [Path(p).name for p in listed]
    for name in (Path(p).name for p in newest):
        if name in names:
            names.remove(name)
        names.append(name)
    return names


def resolve(path: Path, step: int | None) -> tuple[Path, Path | None]:
    """(checkpoint prefix, meta graph file) for a prefix, a `.meta` file or a directory; None for
    the meta graph of a checkpoint saved without one."""
    if path.is_dir():
        if not (path / "checkpoint").is_file():
            raise SourceError(f"{path}: a directory without a 'checkpoint' state file")
        prefixes = _state_file_prefixes(path)
        if step is not None:
            wanted = [p for p in prefixes if p.endswith(f"-{step}")]
            found = sorted(path.glob(f"*-{step}.index"))
            if not wanted and not found:
                steps = sorted({m.group(1) for p in path.glob("*.index") if (m := re.search(r"-(\d+)$", p.stem))})
                raise SourceError(f"{path}: no checkpoint for step {step}; steps present: {', '.join(steps) or 'none'}")
            prefix = path / (wanted[-1] if wanted else found[-1].stem)
        elif prefixes:
            prefix = path / prefixes[-1]
        else:
            raise SourceError(f"{path}/checkpoint: lists no checkpoint")
    elif path.suffix == ".meta":
        prefix = path.with_suffix("")
    elif path.suffix == ".index":
        prefix = path.with_suffix("")
    else:
        prefix = path
    if not Path(f"{prefix}.index").is_file():
        raise SourceError(f"{prefix}: no checkpoint here ({prefix.name}.index is missing)")
    meta = Path(f"{prefix}.meta")
    if not meta.is_file():
        metas = sorted(prefix.parent.glob("*.meta"))
        return prefix, metas[0] if len(metas) == 1 else None
    return prefix, meta



class Tf1CheckpointSource(Source):
    name = "tf1-checkpoint"
    description = "TF1 Saver checkpoints: model.ckpt prefix, .meta file, or a directory with 'checkpoint'"

    def sniff(self, path: Path) -> bool:
        if path.is_dir():
            return (path / "checkpoint").is_file()
        if path.suffix in (".meta", ".index"):
            return path.is_file()
        return Path(f"{path}.index").is_file()

    def open(self, source: Path | Any, options: SourceOptions) -> OpenedSource:
        if not isinstance(source, Path):
            raise SourceError("the tf1-checkpoint source reads files, not objects")
        prefix, meta = resolve(source, options.step)
        named = from_options(options)
        # A named architecture wins over a meta graph: the graph saved may not be the model's.
        if named is not None:
            return OpenedGraphless(source, prefix, named, meta)
        if meta is None:
            raise SourceError(f"{prefix}: no meta graph ({prefix.name}.meta is missing), so nothing says how its "
                              "variables connect; name the architecture with --cell (e.g. --cell lstm:64) or "
                              f"--architecture model.json; the checkpoint holds {Variables.read(prefix).listing()}")
        return OpenedTf1(source, Graph(prefix, meta, options.unsafe), options)


def _check_data(prefix: Path, reader: Any) -> None:
    """Read every value the index lists, so that a missing or truncated `.data` file is named now,
    not found by the first session that restores."""
    for name in reader.get_variable_to_shape_map():
        try:
            reader.get_tensor(name)
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises OpError, IndexError, ValueError here
            shards = sorted(p.name for p in prefix.parent.glob(f"{prefix.name}.data-*"))
            raise SourceError(f"{prefix}: the checkpoint's data cannot be read ({', '.join(shards) or 'no .data file'}: "
                              f"{one_line(exc, typed=False)}); the .data file is missing, truncated or "
                              "from another checkpoint") from None


class Graph:
    """The imported meta graph and the checkpoint's values."""

    kind = "tf1-checkpoint"
    title = "TF1 Saver checkpoint"
    # Names of the outputs a signature declares (none in a checkpoint): export name -> tensor.
    signature_outputs: dict[str, str] = {}

    def __init__(self, prefix: Path, meta: Path, unsafe: bool = False) -> None:
        tf = tensorflow()
        self.prefix, self.meta = prefix, meta
        self.path = meta
        self.note = f"restored from {prefix} (meta graph {meta.name})"
        self.graph = tf.Graph()
        try:
            with self.graph.as_default():
                self.saver = tf.compat.v1.train.import_meta_graph(str(meta), clear_devices=True)
            reader = tf.train.load_checkpoint(str(prefix))
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types for bad files
            raise SourceError(f"{meta}: TensorFlow cannot read this checkpoint: {one_line(exc, typed=False)}") from None
        if self.saver is None:
            raise SourceError(f"{meta}: the meta graph has no variables to restore")
        # The saver's restore op comes with the graph: it may run only restores of the prefix fed.
        saver_def = self.saver.saver_def
        safety.check(meta, self.graph.as_graph_def(), [saver_def.restore_op_name], unsafe,
                     "restoring its checkpoint", fed=[saver_def.filename_tensor_name],
                     restore_from=saver_def.filename_tensor_name)
        _check_data(prefix, reader)
        self.view = tf1_graph.GraphView(self.graph, reader)

    def session(self) -> Any:
        tf = tensorflow()
        session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.saver.restore(session, str(self.prefix))
        return session
