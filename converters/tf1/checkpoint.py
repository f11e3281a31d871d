"""Source plugin for TF1 Saver checkpoints: a prefix (`model.ckpt`), its `.meta` file, or a
directory with a `checkpoint` state file.

The meta graph is imported and its cells recognised (`tf1_graph`, `tf1_model`); the export is
the equivalent Keras model, checked against the graph before anything is returned. The
reference is the graph itself in a `tf.compat.v1.Session`, served at other lengths by prefix
padding (shorter) and by state-carrying windows (longer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport_converters.tf1 import graph as tf1_graph
from rnnexport_converters.tf1 import structure as tf1_model
from rnnexport_converters.keras.source import OpenedKeras, signature_name
from rnnexport.device import Device
from rnnexport.errors import SourceError, UnsupportedModelError
from rnnexport.model import LayerInfo, RecurrentModel, SourceInfo, TensorInfo
from rnnexport.options import SourceOptions
from rnnexport.tolerance import Tolerance
from rnnexport.plugins import OpenedSource, Source
from rnnexport.runner import NEXT, Arrays
from rnnexport.tf import tensorflow

# Ops only training adds; outputs are never found behind them.
TRAINING_SCOPES = ("gradients", "save", "GradientDescent", "Adam", "Adagrad", "RMSProp", "Momentum", "init",
                   "clip_by_global_norm", "global_norm")
LOSS_OPS = {"SparseSoftmaxCrossEntropyWithLogits", "SoftmaxCrossEntropyWithLogits", "SquaredDifference"}
# A recognised graph must reproduce its source this closely at the source's own length.
RECOGNITION_ATOL = 1e-4
# TF1 cells compute all gates as one MatMul of concat([x, h]) and add the forget bias at run
# time; every export computes x.W + h.U with the bias folded in, as fused kernels require. The
# float32 sums are reassociated: on the deepnlp tagger (2 x 128 units, 44 logits) that differs
# by up to 3.3e-5 at any length up to 300 steps, from step 2 on (step 1, h = 0, is exact).
TF1_FLOAT32_ATOL = 5e-5


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


def resolve(path: Path, step: int | None) -> tuple[Path, Path]:
    """(checkpoint prefix, meta graph file) for a prefix, a `.meta` file or a directory."""
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
        if len(metas) != 1:
            raise SourceError(f"{prefix}: no meta graph ({meta.name} is missing); rnnexport needs the .meta file "
                              "Saver writes beside the checkpoint")
        meta = metas[0]
    return prefix, meta


def _export_name(name: str) -> str:
    return signature_name(re.sub(r"[^A-Za-z0-9_]", "_", name))


def _sanitise(names: list[str]) -> dict[str, str]:
    """Export names for tensors: the last scope component where that is unambiguous."""
    short = {n: _export_name(n.split(":")[0].rsplit("/", 1)[-1]) for n in names}
    if len(set(short.values())) == len(short):
        return short
    return {n: f"{_export_name(n.split(':')[0])}_{i}" for i, n in enumerate(names)}


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
        return OpenedTf1(source, Graph(prefix, meta), options)


class Graph:
    """The imported meta graph and the checkpoint's values."""

    kind = "tf1-checkpoint"
    title = "TF1 Saver checkpoint"
    # Names of the outputs a signature declares (none in a checkpoint): export name -> tensor.
    signature_outputs: dict[str, str] = {}

    def __init__(self, prefix: Path, meta: Path) -> None:
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
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"{meta}: TensorFlow cannot read this checkpoint: {first}") from None
        if self.saver is None:
            raise SourceError(f"{meta}: the meta graph has no variables to restore")
        self.view = tf1_graph.GraphView(self.graph, reader)

    def session(self) -> Any:
        tf = tensorflow()
        session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.saver.restore(session, str(self.prefix))
        return session


def _is_training(op: Any) -> bool:
    return op.type in LOSS_OPS or any(part.startswith(TRAINING_SCOPES) for part in op.name.split("/"))


def output_candidates(view: tf1_graph.GraphView) -> list[str]:
    """Float tensors of rank >= 2 that inference ends at: nothing but losses or training ops
    consume them, and they depend on a recurrent cell's kernel MatMul and on a placeholder."""
    found = []
    for op in view.graph.get_operations():
        # Inside a while loop or a cell op nothing is a model output.
        if op._get_control_flow_context() is not None or op.type in ("LSTMBlockCell", "BlockLSTM"):
            continue
        if _is_training(op) or op.type in tf1_graph.PLUMBING - {"Identity", "Reshape", "Transpose", "ConcatV2",
                                                                 "Pack", "StridedSlice"}:
            continue
        for tensor in op.outputs:
            if not tensor.dtype.is_floating or tensor.shape.rank is None or tensor.shape.rank < 2:
                continue
            users = view.users(tensor)
            if any(not _is_training(u) and u.type not in LOSS_OPS for u in users):
                continue
            found.append(tensor)
    cells = []
    for tensor in found:
        scope = tf1_graph.ancestors([tensor])
        ops = [view.op(n) for n in scope]
        if any(o.type == "Placeholder" for o in ops) and any(
                (o.type == "MatMul" and o.inputs[0].op.type == "ConcatV2") or o.type == "LSTMBlockCell" for o in ops):
            cells.append(tensor.name)
    return cells


class OpenedTf1(OpenedSource):
    def __init__(self, label: Path, source: Any, options: SourceOptions) -> None:
        """`source` is a loaded graph: `graph`, `view`, `session()`, `path`, `kind`, `title`, `note`."""
        self.label = str(label)
        self.options = options
        self.source = source
        view = self.source.view
        path = source.path
        self.output = self._output(view)
        output = view.tensor(self.output)
        chosen = self._chosen_inputs(view)
        scope = tf1_graph.ancestors([output], stop={view.tensor(n).op.name for n in chosen})
        view.scope = scope
        for name in chosen:
            if not any(op.name in scope for op in view.consumers.get(name, [])):
                raise SourceError(f"{self.label}: '{name}' is not an input of '{self.output}'")
        try:
            cells = tf1_graph.find_cells(view, scope)
            if not cells:
                raise UnsupportedModelError(f"no recurrent cell feeds '{self.output}'")
            tracer = tf1_model.Tracer(view, cells, set(chosen))
            layers, origins = tf1_model.layers_of(view, cells, tracer)
            head, head_ops = tf1_model.head_of(view, output, tracer, layers[-1])
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"{path}: {exc}") from None
        data = {o.name for o in origins}
        if len(data) != 1:
            raise UnsupportedModelError(f"{path}: the first recurrent layer reads several inputs ({', '.join(data)})")
        origin = origins[0]
        self.data_input = origin.name
        self.time_axis = origin.time_axis if origin.time_axis is not None else 1
        feeds = {view.op(n).outputs[0].name for n in scope if view.op(n).type == "Placeholder"} | set(chosen)
        lengths = sorted(t for t in feeds if t != self.data_input and view.tensor(t).dtype.is_integer
                         and view.tensor(t).shape.rank == 1)
        extra = sorted(t for t in feeds if t != self.data_input and t not in lengths[:1])
        if extra:
            raise UnsupportedModelError(f"{path}: input '{extra[0]}' feeds '{self.output}' but is neither the "
                                        "sequence input nor a sequence_length")
        embedding = view.value(origin.embedding) if origin.embedding else None
        self.structure = tf1_model.Structure(self.data_input, lengths[0] if lengths else None, embedding, layers, head)
        claimed = tf1_model.claimed_ops(layers) | head_ops | tracer.claimed
        stray = next(tf1_graph.unclaimed(view, scope, claimed), None)
        if stray is not None:
            raise UnsupportedModelError(f"{path}: op '{stray.name}' ({stray.type}) computes part of '{self.output}' "
                                        "but belongs to no recognised cell, embedding or projection")
        self.cells = [c for layer in layers for c in layer.cells]
        shape = view.tensor(self.data_input).shape.as_list()
        self.fixed_batch = shape[1 - self.time_axis] if len(shape) >= 2 else None
        steps = len(self.cells[0].steps)
        self.fixed_length = steps if steps > 1 else shape[self.time_axis]
        self.names = _sanitise([self.data_input] + ([self.structure.lengths_input] if lengths else []))
        self.features = None if embedding is not None else shape[-1]
        self.initial = self._trained_initial_states()
        self.layout, self.keras = self._equivalent()
        self.info = self._describe()

    def _chosen_inputs(self, view: tf1_graph.GraphView) -> list[str]:
        """The tensors `--inputs` names, which may be any tensor: the graph is cut there."""
        chosen = []
        for name in self.options.inputs:
            full = name if ":" in name else f"{name}:0"
            try:
                view.tensor(full)
            except (KeyError, ValueError):
                placeholders = [o.name for o in view.graph.get_operations() if o.type == "Placeholder"]
                raise SourceError(f"{self.label}: no tensor '{name}' in the graph; its placeholders are "
                                  f"{', '.join(placeholders) or 'none'}") from None
            chosen.append(full)
        return chosen

    def _output(self, view: tf1_graph.GraphView) -> str:
        wanted = self.options.outputs
        declared = self.source.signature_outputs
        candidates = list(declared.values()) or output_candidates(view)
        if wanted:
            if len(wanted) != 1:
                raise UnsupportedModelError(f"{self.label}: name one output (got {len(wanted)}); rnnexport exports "
                                            "one output per TF1 graph")
            name = declared.get(wanted[0]) or (wanted[0] if ":" in wanted[0] else f"{wanted[0]}:0")
            try:
                view.tensor(name)
            except (KeyError, ValueError):
                listed = list(declared) or candidates
                raise SourceError(f"{self.label}: no tensor '{wanted[0]}' in the graph; candidates: "
                                  f"{', '.join(listed[:12]) or 'none found'}") from None
            return name
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise UnsupportedModelError(f"{self.label}: found no output fed by a recurrent cell; "
                                        "name one with --outputs")
        listed = list(declared) or candidates
        raise SourceError(f"{self.label}: several outputs could be the model's; name one with --outputs: "
                          f"{', '.join(listed[:12])}")

    def _output_name(self) -> str:
        declared = {tensor: key for key, tensor in self.source.signature_outputs.items()}
        return _export_name(declared[self.output]) if self.output in declared else _sanitise([self.output])[self.output]

    def _equivalent(self) -> tuple[str, Any]:
        """The output's layout and the Keras model that reproduces the graph at its own length."""
        with_sequences = tf1_model.keras_model(self.structure, self.names, self.features, self._vocab(), False,
                                               self.initial)
        inputs = self._probe_inputs()
        expected = self.run_graph(inputs)
        batch = next(iter(inputs.values())).shape[0]
        produced = np.asarray(with_sequences([inputs[n] for n in self._input_names()], training=False))
        out_shape = expected.shape
        best = None
        for layout in tf1_model.LAYOUTS:
            candidate = tf1_model.to_layout(produced, layout)
            if candidate.shape != out_shape:
                continue
            diff = float(np.max(np.abs(candidate - expected))) if candidate.size else 0.0
            if best is None or diff < best[1]:
                best = (layout, diff)
        if best is None:
            raise UnsupportedModelError(f"{self.label}: output '{self.output}' has shape {out_shape}, which no layout "
                                        f"of the recognised layers' outputs {produced.shape} gives")
        layout, _ = best
        model = with_sequences
        if layout == "last step":
            model = tf1_model.keras_model(self.structure, self.names, self.features, self._vocab(), True,
                                          self.initial)
        check = np.asarray(model([inputs[n] for n in self._input_names()], training=False))
        expected = tf1_model.from_layout(expected, layout, batch)
        diff = float(np.max(np.abs(check - expected))) if check.size else 0.0
        if not np.isfinite(diff) or diff > RECOGNITION_ATOL * (1.0 + float(np.max(np.abs(expected)))):
            raise UnsupportedModelError(
                f"{self.label}: the recognised cells ({'; '.join(c.describe() for c in self._cells())}) do not "
                f"reproduce '{self.output}' (max abs difference {diff:.3g}); rnnexport refuses to export a guess")
        return layout, model

    def _trained_initial_states(self) -> dict[int, list[np.ndarray]]:
        """By layer index, the state vectors (c, h) or (h,) a forward cell starts from where they
        are not zero: a trained initial state, the same for every row."""
        try:
            tensors = [_state_tensors(self.source.view, layer.forward)[0] for layer in self.structure.layers]
        except UnsupportedModelError:
            return {}
        values = self.run_graph(self._probe_inputs(), fetch=tuple(t for each in tensors for t in each))[1:]
        initial = {}
        for index, names in enumerate(tensors):
            vectors, values = values[:len(names)], values[len(names):]
            if not any(np.any(v) for v in vectors):
                continue
            if any(v.ndim != 2 or not np.array_equal(v, np.broadcast_to(v[:1], v.shape)) for v in vectors):
                raise UnsupportedModelError(
                    f"{self.label}: cell '{self.structure.layers[index].forward.scope}' starts from a state that "
                    f"differs from row to row ('{names[0]}'); rnnexport reproduces cells that start from zero or "
                    "from one trained state")
            initial[index] = [v[0] for v in vectors]
        return initial

    def _cells(self) -> list[tf1_graph.Cell]:
        return [c for layer in self.structure.layers for c in layer.cells]

    def _vocab(self) -> int | None:
        return None if self.structure.embedding is None else self.structure.embedding.shape[0]

    def _input_names(self) -> list[str]:
        return list(self.names.values())

    def _probe_inputs(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        batch = self.fixed_batch or 3
        length = self.fixed_length or 7
        data = self.names[self.data_input]
        if self.structure.embedding is not None:
            arrays = {data: rng.integers(0, self._vocab(), (batch, length)).astype(np.int32)}
        else:
            arrays = {data: rng.standard_normal((batch, length, self.features)).astype(np.float32)}
        if self.structure.lengths_input:
            arrays[self.names[self.structure.lengths_input]] = np.linspace(length, 1, batch).astype(np.int32)
        return arrays

    def run_graph(self, inputs: Mapping[str, np.ndarray], session: Any = None, feeds: Mapping[str, Any] = (),
                  fetch: tuple[str, ...] = ()) -> Any:
        """The graph on batch-major inputs at its own length; the output in the graph's layout."""
        own = session is None
        session = session or self.source.session()
        try:
            feed = dict(feeds)
            for original, name in self.names.items():
                array = inputs[name]
                if original == self.data_input and self.time_axis == 0:
                    array = np.swapaxes(array, 0, 1)
                feed[original] = array
            results = session.run([self.output, *fetch], feed)
        finally:
            if own:
                session.close()
        return results[0] if not fetch else results

    def _describe(self) -> SourceInfo:
        cells = self._cells()
        data_name = self.names[self.data_input]
        if self.structure.embedding is not None:
            vocab, dim = self.structure.embedding.shape
            inputs = [TensorInfo(data_name, "int32", (None, None), 1, int(vocab))]
        else:
            inputs = [TensorInfo(data_name, "float32", (None, None, self.features), 1)]
        if self.structure.lengths_input:
            inputs.append(TensorInfo(self.names[self.structure.lengths_input], "int32", (None,), None,
                                     role="lengths"))
        out = self.keras.outputs[0]
        last = self.layout == "last step"
        outputs = [TensorInfo(self._output_name(), "float32",
                              (None,) * (len(out.shape) - 1) + (out.shape[-1],), None if last else 1)]
        layers = []
        if self.structure.embedding is not None:
            layers.append(LayerInfo("embedding", "Embedding", details={"vocab": int(vocab), "dim": int(dim)}))
        for index, layer in enumerate(self.structure.layers):
            for cell in layer.cells:
                direction = "backward" if cell is layer.backward else "forward"
                unrolled = "unroll=True" if cell.keras else "static_rnn"
                runner = "dynamic_rnn" if cell.looped else f"{unrolled} ({len(cell.steps)} steps)"
                details = {"layer": index, "runner": runner}
                if index in self.initial and cell is layer.forward:
                    details["initial_state"] = "trained"
                layers.append(LayerInfo(cell.scope, cell.describe(), True, cell.units, direction, details))
        kinds = [k for k, _ in self.structure.head]
        if kinds:
            layers.append(LayerInfo("projection", " + ".join(kinds),
                                    details={"activation": dict(self.structure.head).get("activation", "linear")}))
        notes = [f"output '{self.output}' holds the per-step outputs {self.layout}; the export returns "
                 + ("[batch, C] for the last step" if last else "[batch, time, C]")]
        if self.fixed_length:
            notes.append(f"the graph is built for {self.fixed_length} steps; the export accepts any length")
        for index in self.initial:
            notes.append(f"cell '{self.structure.layers[index].forward.scope}' starts from a trained state, which "
                         "the export starts from too (and a streaming export's initial_state returns)")
        if self.time_axis == 0:
            notes.append("the graph's input is time-major; the export takes [batch, time, ...]")
        if self.fixed_batch:
            notes.append(f"the graph fixes the batch at {self.fixed_batch}; the export accepts any batch")
        notes.append(self.source.note)
        causal = not self.structure.bidirectional
        title = f"{self.source.title} ({len(cells)} cell{'s' if len(cells) != 1 else ''})"
        return SourceInfo(self.label, self.source.kind, title, tuple(inputs),
                          tuple(outputs), tuple(layers), self.fixed_length, causal, tuple(notes))

    def recurrent_model(self) -> RecurrentModel:
        opened = _KerasEquivalent(self.label, self.keras, self.options, self.info)
        model = opened.recurrent_model()
        model.info = self.info
        for index, layer in enumerate(self.structure.layers):
            if layer.backward is not None:
                model.streaming = None
                model.not_streamable = (f"layer {index} is bidirectional: its backward cell '{layer.backward.scope}' "
                                        "reads each sequence from the end, so it needs the whole sequence")
                break
        return model

    def free_graph(self) -> tuple[Any, str, str] | None:
        """(session, entry, placeholder) for a loop graph whose length is fixed only by static
        shapes and reshapes between the input and the loop: the same graph imported with a
        placeholder of free length at `entry`, the batch-major tensor the loop reads."""
        graph_def = getattr(self.source, "graph_def", None)
        if graph_def is None or self.fixed_length is None or not all(c.looped for c in self.cells):
            return None
        view = self.source.view
        read = view.through(view.tensor(self.cells[0].steps[0].x))
        if read.op.type != "TensorArrayReadV3" or self.structure.embedding is not None:
            return None
        value = view.through(read.op.inputs[2]).op.inputs[2]
        if value.op.type != "Transpose":
            return None
        entry = value.op.inputs[0]
        tensor = entry
        while tensor.name != self.data_input:
            if tensor.op.type not in ("Reshape", "Identity", "ExpandDims", "Squeeze"):
                return None
            tensor = tensor.op.inputs[0]
        shape = view.tensor(self.data_input).shape.as_list()
        if entry.shape.rank != len(shape) or self.time_axis != 1 or any(
                a is not None and b is not None and a != b for a, b in zip(entry.shape.as_list()[1:], shape[1:])):
            return None
        batch, length, features = shape[0], shape[1], shape[2:]
        # Freezing folds the loop's shape ([time, batch, features] of its time-major input) into
        # constants that bound the loop; they are fed the actual shape instead.
        from tensorflow.python.framework import tensor_util

        folded = [f"{n.name}:0" for n in graph_def.node if n.op == "Const" and n.attr["dtype"].type == 3
                  and tensor_util.MakeNdarray(n.attr["value"].tensor).tolist() == [length, batch, *features]]
        tf = tensorflow()
        graph = tf.Graph()
        with graph.as_default():
            placeholder = tf.compat.v1.placeholder(entry.dtype, [batch, None, *features], name="rnnexport_free_input")
            dims = tf.shape(placeholder)
            actual = tf.stack([dims[1], dims[0], *features])
            mapping = {entry.name: placeholder, **dict.fromkeys(folded, actual)}
            tf.compat.v1.import_graph_def(graph_def, input_map=mapping, name="")
        session = tf.compat.v1.Session(graph=graph)
        probe = self._probe_inputs()
        data = probe[self.names[self.data_input]]
        feed = {placeholder.name: data}
        if self.structure.lengths_input:
            feed[self.structure.lengths_input] = probe[self.names[self.structure.lengths_input]]
        if not np.allclose(session.run(self.output, feed), self.run_graph(probe), rtol=0, atol=1e-6):
            session.close()
            return None
        return session, entry.name, placeholder.name

    def reference(self, device: Device) -> Tf1Reference:
        return Tf1Reference(self, device)

    def layer_outputs(self, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
        """The layers of the Keras equivalent every target exports (a cell is layer `rnn_<i>`)."""
        return _KerasEquivalent(self.label, self.keras, self.options, self.info).layer_outputs(inputs)

    def tolerance_floor(self, device: Device) -> Tolerance | None:
        if all(cell.keras for cell in self.cells):
            return None  # a traced Keras cell already computes x.W + h.U, as the exports do
        return Tolerance(atol=TF1_FLOAT32_ATOL, rtol=0.0)


class _KerasEquivalent(OpenedKeras):
    """The equivalent Keras model, already variable-length, under the TF1 graph's names."""

    def __init__(self, label: str, model: Any, options: SourceOptions, info: SourceInfo) -> None:
        super().__init__(label, model, "equivalent of a TF1 graph", None, options)
        self.output_names = [o.name for o in info.outputs]
        self.info = info
        self._rebuilt = model


class Tf1Reference:
    """The TF1 graph in a Session. It runs at its own length; shorter sequences are padded to it
    (causal graphs), longer ones run in windows that carry each cell's final state into the
    next window's initial state. A bidirectional graph only serves its own length."""

    name = "tf1-checkpoint"

    def __init__(self, opened: OpenedTf1, device: Device) -> None:
        self.opened = opened
        self.device = f"{device.label} (TF1 Session)"
        self.session = opened.source.session()
        # A graph with a sequence_length input is run as it is deployed: padded, true lengths fed.
        self.free = None if opened.structure.lengths_input else opened.free_graph()
        self.states: list[tuple[list[str], list[str | None]]] = []
        self.no_states = ""
        try:
            self.states = [_state_tensors(opened.source.view, cell) for cell in opened.cells]
        except UnsupportedModelError as exc:
            self.no_states = str(exc)
        # The final-state tensors the graph has, fetched with the output, by the export's state names.
        self.finals: dict[str, str] = {}
        by_cell = {id(cell): states for cell, states in zip(opened.cells, self.states)}
        for index, layer in enumerate(opened.structure.layers):
            initials, finals = by_cell.get(id(layer.forward), ([], []))
            roles = ("c", "h") if layer.forward.kind == "lstm" else ("h",)
            for role, initial, final in zip(roles, initials, finals):
                if final is None:
                    self.no_states = self.no_states or (f"the graph has no final value of state '{initial}' (pruned "
                                                        "when it was frozen?)")
                else:
                    self.finals[f"rnn_{index}_{role}{NEXT}"] = final

    def _length(self, inputs: Mapping[str, np.ndarray]) -> int:
        return inputs[self.opened.names[self.opened.data_input]].shape[1]

    def serves(self, inputs: Mapping[str, np.ndarray]) -> str:
        fixed = self.opened.fixed_length
        length = self._length(inputs)
        if fixed is None or length == fixed or self.free:
            return ""
        if length > fixed and self.no_states:
            return (f"longer than the graph's {fixed} steps, and state cannot be carried across windows: "
                    f"{self.no_states}")
        if self.opened.structure.bidirectional:
            return f"a bidirectional graph is only ground truth at its own length {fixed}"
        # With a sequence_length input the final state is read at each row's true length, so
        # padding serves every length; without one only whole windows do.
        if self.opened.layout == "last step" and length % fixed and not self.opened.structure.lengths_input:
            return (f"the graph returns only its last step, so lengths that are not multiples of {fixed} have no "
                    "ground truth")
        return ""

    def method(self, inputs: Mapping[str, np.ndarray]) -> str:
        fixed = self.opened.fixed_length
        length = self._length(inputs)
        batch = self.opened.fixed_batch
        per_row = f", {batch} row(s) at a time" if batch else ""
        if fixed is not None and length != fixed and self.free:
            return f"source, fed at '{self.free[1]}' with its {fixed} steps freed{per_row}"
        if fixed is None or length == fixed:
            return f"source{per_row}"
        if length < fixed:
            fed = " with the true lengths" if self.opened.structure.lengths_input else ""
            return f"source, padded from {length} to {fixed} steps{fed}{per_row}"
        windows = -(-length // fixed)
        return f"source in {windows} windows of {fixed} steps, state carried{per_row}"

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        output, _ = self._run(inputs)
        return {self.opened.info.outputs[0].name: output}

    def final_state(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """The final value of each cell's state tensors the graph has, named as the export's states are."""
        if not self.finals:
            raise UnsupportedModelError(self.no_states)
        fixed, length = self.opened.fixed_length, self._length(inputs)
        if fixed and length % fixed and not (self.free or self.opened.structure.lengths_input):
            raise UnsupportedModelError(f"the graph's final state after {length} steps would include the padding "
                                        f"to {fixed}-step windows")
        _, finals = self._run(inputs)
        return {name: finals[tensor] for name, tensor in self.finals.items()}

    def _run(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The output and the final states, the graph run on as many rows at a time as it takes."""
        reason = self.serves(inputs)
        if reason:
            raise UnsupportedModelError(reason)
        batch = next(iter(inputs.values())).shape[0]
        fixed_batch = self.opened.fixed_batch or batch
        chunks = []
        for start in range(0, batch, fixed_batch):
            chunk = {k: v[start:start + fixed_batch] for k, v in inputs.items()}
            rows = next(iter(chunk.values())).shape[0]
            if rows < fixed_batch:
                chunk = {k: np.concatenate([v, np.zeros((fixed_batch - rows, *v.shape[1:]), v.dtype)])
                         for k, v in chunk.items()}
            output, finals = self._run_rows(chunk)
            chunks.append((output[:rows], {name: value[:rows] for name, value in finals.items()}))
        return (np.concatenate([c[0] for c in chunks]),
                {name: np.concatenate([c[1][name] for c in chunks]) for name in chunks[0][1]})

    def _run_free(self, inputs: Mapping[str, np.ndarray], finals: list[str]) -> tuple[np.ndarray, Arrays]:
        session, entry, placeholder = self.free
        opened = self.opened
        feed = {placeholder: inputs[opened.names[opened.data_input]]}
        if opened.structure.lengths_input:
            feed[opened.structure.lengths_input] = inputs[opened.names[opened.structure.lengths_input]]
        out, *values = session.run([opened.output, *finals], feed)
        return tf1_model.from_layout(out, opened.layout, feed[placeholder].shape[0]), dict(zip(finals, values))

    def _run_rows(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Arrays]:
        """The output, and the final-state tensors the graph has keyed by tensor name."""
        opened = self.opened
        fixed = opened.fixed_length
        data = opened.names[opened.data_input]
        length = self._length(inputs)
        batch = inputs[data].shape[0]
        finals = [t for cell in self.states for t in cell[1] if t is not None]
        if fixed is None or length == fixed:
            if finals:
                out, *values = opened.run_graph(inputs, self.session, fetch=tuple(finals))
            else:
                out, values = opened.run_graph(inputs, self.session), []
            return tf1_model.from_layout(out, opened.layout, batch), dict(zip(finals, values))
        if self.free:
            return self._run_free(inputs, finals)
        lengths_name = opened.names.get(opened.structure.lengths_input or "")
        outputs, feeds, values = [], {}, []
        for start in range(0, length, fixed):
            window = {data: _pad_time(inputs[data][:, start:start + fixed], fixed)}
            if lengths_name:
                window[lengths_name] = np.clip(inputs[lengths_name] - start, 0, fixed).astype(np.int32)
            results = opened.run_graph(window, self.session, feeds, tuple(finals))
            out, values = results[0], results[1:]
            outputs.append(tf1_model.from_layout(out, opened.layout, batch))
            initials = [t for cell in self.states for t in cell[0]]
            feeds = dict(zip(initials, values))
        if opened.layout == "last step":
            return outputs[-1], dict(zip(finals, values))
        return np.concatenate(outputs, axis=1)[:, :length], dict(zip(finals, values))


def _pad_time(array: np.ndarray, length: int) -> np.ndarray:
    missing = length - array.shape[1]
    if missing <= 0:
        return array
    return np.concatenate([array, np.zeros((array.shape[0], missing, *array.shape[2:]), array.dtype)], axis=1)


def _state_tensors(view: tf1_graph.GraphView, cell: tf1_graph.Cell) -> tuple[list[str], list[str | None]]:
    """(initial state tensors to feed, final state tensors to fetch) of a cell; a final state that
    freezing pruned from a loop is None."""
    if not cell.looped:
        return list(cell.steps[0].state_in), list(cell.steps[-1].state_out)
    initials, finals = [], []
    for name in cell.steps[0].state_in:
        tensor = view.tensor(name)
        while tensor.op.type == "Identity":
            tensor = tensor.op.inputs[0]
        switch = tensor.op
        merge = switch.inputs[0].op
        if switch.type != "Switch" or merge.type != "Merge":
            raise UnsupportedModelError(f"cannot find the loop variable that carries state '{name}'")
        initials.append(view.through(merge.inputs[0]).name)
        # The final state is rarely part of the output's graph: look beyond its scope.
        exits = [u for u in view.consumers.get(switch.outputs[0].name, []) if u.type == "Exit"]
        if len(exits) > 1:
            raise UnsupportedModelError(f"state '{name}' leaves its loop more than once")
        finals.append(exits[0].outputs[0].name if exits else None)
    return initials, finals
