"""A TF1 graph opened as a source: the output and inputs chosen, the cells recognised and
layered, the Keras equivalent built and checked against the graph at its own length, and what
`inspect` shows. The checkpoint and the unrolled-graph sources both open their graphs as this.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport_converters.keras import equivalent as keras_equivalent
from rnnexport_converters.keras.equivalent import KerasEquivalent
from rnnexport_converters.keras.source import signature_name
from rnnexport_converters.tf1 import equivalent as tf1_equivalent
from rnnexport_converters.tf1 import feeds as tf1_feeds
from rnnexport_converters.tf1 import frontends
from rnnexport_converters.tf1 import graph as tf1_graph
from rnnexport_converters.tf1 import safety
from rnnexport_converters.tf1 import structure as tf1_structure
from rnnexport_converters.tf1.cells import Cell
from rnnexport_converters.tf1.chains import find_cells, state_columns, state_tensors
from rnnexport_converters.tf1.heads import head_of
from rnnexport_converters.tf1.outputs import output_candidates, scores_behind
from rnnexport_converters.tf1.reference import Tf1Reference
from rnnexport.device import Device
from rnnexport.errors import SourceError, UnsupportedModelError
from rnnexport.model import LayerInfo, RecurrentModel, SourceInfo, TensorInfo
from rnnexport.options import SourceOptions
from rnnexport.plugins import OpenedSource
from rnnexport.tolerance import Tolerance

# A recognised graph must reproduce its source this closely at the source's own length.
RECOGNITION_ATOL = 1e-4
# TF1 cells compute all gates as one MatMul of concat([x, h]) and add the forget bias at run
# time; every export computes x.W + h.U with the bias folded in, as fused kernels require. The
# float32 sums are reassociated: on the deepnlp tagger (2 x 128 units, 44 logits) that differs
# by up to 3.3e-5 at any length up to 300 steps, from step 2 on (step 1, h = 0, is exact).
TF1_FLOAT32_ATOL = 5e-5


def _export_name(name: str) -> str:
    return signature_name(re.sub(r"[^A-Za-z0-9_]", "_", name))


def _sanitise(names: list[str]) -> dict[str, str]:
    """Export names for tensors: the last scope component where that is unambiguous."""
    short = {n: _export_name(n.split(":")[0].rsplit("/", 1)[-1]) for n in names}
    if len(set(short.values())) == len(short):
        return short
    return {n: f"{_export_name(n.split(':')[0])}_{i}" for i, n in enumerate(names)}


def _nearest(produced: np.ndarray, expected: np.ndarray) -> tuple[str | None, float]:
    """The layout of the per-step outputs `produced` nearest to a graph's output, and how near."""
    best: tuple[str | None, float] = (None, float("inf"))
    for layout in tf1_equivalent.LAYOUTS:
        candidate = tf1_equivalent.to_layout(produced, layout)
        if candidate.shape == expected.shape:
            diff = float(np.max(np.abs(candidate - expected))) if candidate.size else 0.0
            if best[0] is None or diff < best[1]:
                best = (layout, diff)
    return best


class OpenedTf1(OpenedSource):
    def __init__(self, label: Path, source: Any, options: SourceOptions) -> None:
        """`source` is a loaded graph: `graph`, `view`, `session()`, `path`, `kind`, `title`, `note`."""
        self.label = str(label)
        self.options = options
        self.source = source
        self.output_note = ""  # how the output differs from what a signature declares
        try:
            self._recognise(source.view, source.path)
        finally:
            # Recognition read the computed weights through a session; nothing reads them after.
            source.view.close()
        self.initial = self._trained_initial_states()
        self.layout, self.keras = self._equivalent()
        self.info = self._describe()

    def _recognise(self, view: tf1_graph.GraphView, path: Any) -> None:
        """Choose the output and inputs, find the cells between them and lay them out as layers."""
        self.output = self._output(view)
        output = view.tensor(self.output)
        chosen = self._chosen_inputs(view)
        # Recognition reads computed weights through a session: the graph is judged before.
        safety.check(path, view.graph.as_graph_def(), [self.output], self.options.unsafe,
                     f"computing '{self.output}'", fed=chosen)
        scope = tf1_graph.ancestors([output], stop={view.tensor(n).op.name for n in chosen})
        view.scope = scope
        for name in chosen:
            if not any(op.name in scope for op in view.consumers.get(name, [])):
                raise SourceError(f"{self.label}: '{name}' is not an input of '{self.output}'")
        try:
            cells = find_cells(view, scope)
            if not cells:
                raise UnsupportedModelError(f"no recurrent cell feeds '{self.output}'")
            tracer = tf1_structure.Tracer(view, cells, set(chosen))
            layers, origins = tf1_structure.layers_of(view, cells, tracer)
            head, head_ops = head_of(view, output, tracer, layers[-1])
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
        extra = sorted(t for t in feeds | tracer.gates if t != self.data_input and t not in lengths[:1])
        try:
            initials = [t for c in cells for t in state_tensors(view, c)[0]] if set(extra) - tracer.gates else []
            self.feeds = tf1_feeds.classify(view, self.output, extra, tracer.gates, initials)
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"{path}: {exc}") from None
        embedding = view.value(origin.embedding) if origin.embedding else None
        self.structure = tf1_structure.Structure(self.data_input, lengths[0] if lengths else None, embedding, layers, head,
                                                 origin.frontend)
        if self.structure.lengths_input and frontends.masking_refused(origin.frontend):
            raise UnsupportedModelError(f"{path}: {frontends.masking_refused(origin.frontend)}")
        claimed = tf1_structure.claimed_ops(layers) | head_ops | tracer.claimed
        stray = next(tf1_graph.unclaimed(view, scope, claimed), None)
        if stray is not None:
            raise UnsupportedModelError(f"{path}: op '{stray.name}' ({stray.type}) computes part of '{self.output}' "
                                        "but belongs to no recognised cell, embedding or projection")
        self.cells = [c for layer in layers for c in layer.cells]
        shape = self._data_shape(view.tensor(self.data_input), path)
        self.fixed_batch = shape[1 - self.time_axis] if len(shape) >= 2 else None
        steps = len(self.cells[0].steps)
        self.fixed_length = steps if steps > 1 else shape[self.time_axis]
        # A signature's own input names are what its deployers already feed.
        declared = getattr(self.source, "signature_inputs", {})
        self.names = {name: _export_name(declared[name]) if name in declared else short for name, short
                      in _sanitise([self.data_input] + ([self.structure.lengths_input] if lengths else [])).items()}
        self.features = None if embedding is not None else shape[-1]

    def _twice(self, gates: Mapping[str, float]) -> list[np.ndarray]:
        """The output on the probe inputs, twice in one session, with dropout's gates fed `gates`."""
        session, probe = self.source.session(), self._probe_inputs()
        try:
            return [self.run_graph(probe, session, gates) for _ in range(2)]
        finally:
            session.close()

    def _data_shape(self, data: Any, path: Any) -> list[int | None]:
        """The data input's shape; a placeholder of unknown rank (old frozen graphs) holds
        [batch, time] ids or [batch, time, F] features, F being what the first cell reads."""
        if data.shape.rank is not None:
            return data.shape.as_list()
        if self.structure.frontend:
            raise UnsupportedModelError(f"{path}: input '{data.name}' has no known shape, and layers before the "
                                        "recurrent ones leave its width unknown")
        return [None, None] if self.structure.embedding is not None else [None, None, self.cells[0].input_size]

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
            scores = scores_behind(view, candidates[0]) if declared else None
            if scores is None:
                return candidates[0]
            key = next(k for k, t in declared.items() if t == candidates[0])
            self.output_note = (f"the signature's output '{key}' is computed by {' -> '.join(scores[1])} from the "
                                f"per-step scores '{scores[0]}'; the export returns those scores (their argmax "
                                "gives the labels)")
            return scores[0]
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
        with_sequences = tf1_equivalent.keras_model(self.structure, self.names, self.features, False, self.initial)
        inputs = self._probe_inputs()
        batch = next(iter(inputs.values())).shape[0]
        produced = np.asarray(with_sequences([inputs[n] for n in self._input_names()], training=False))
        self.feeds = tf1_feeds.switched_off(self.label, self.feeds, self._twice, lambda out: _nearest(produced, out)[1])
        expected = self.run_graph(inputs)
        out_shape = expected.shape
        best = _nearest(produced, expected)
        if best[0] is None:
            raise UnsupportedModelError(f"{self.label}: output '{self.output}' has shape {out_shape}, which no layout "
                                        f"of the recognised layers' outputs {produced.shape} gives")
        layout, _ = best
        model = with_sequences
        if layout == "last step":
            model = tf1_equivalent.keras_model(self.structure, self.names, self.features, True, self.initial)
        check = np.asarray(model([inputs[n] for n in self._input_names()], training=False))
        expected = tf1_equivalent.from_layout(expected, layout, batch)
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
            tensors = [state_tensors(self.source.view, layer.forward)[0] for layer in self.structure.layers]
            columns = [state_columns(self.source.view, layer.forward) for layer in self.structure.layers]
        except UnsupportedModelError:
            return {}
        values = self.run_graph(self._probe_inputs(), fetch=tuple(t for each in tensors for t in each))[1:]
        initial = {}
        for index, names in enumerate(tensors):
            vectors, values = values[:len(names)], values[len(names):]
            vectors = [v if where is None else v[..., where[0]:where[1]] for v, where in zip(vectors, columns[index])]
            if not any(np.any(v) for v in vectors):
                continue
            if any(v.ndim != 2 or not np.array_equal(v, np.broadcast_to(v[:1], v.shape)) for v in vectors):
                raise UnsupportedModelError(
                    f"{self.label}: cell '{self.structure.layers[index].forward.scope}' starts from a state that "
                    f"differs from row to row ('{names[0]}'); rnnexport reproduces cells that start from zero or "
                    "from one trained state")
            initial[index] = [v[0] for v in vectors]
        return initial

    def _cells(self) -> list[Cell]:
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
            feed = {**self.feeds.arrays(inputs[self.names[self.data_input]].shape[0]), **dict(feeds)}
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
        layers += [LayerInfo(f"frontend_{i}", stage.describe()) for i, stage in enumerate(self.structure.frontend)]
        for index, layer in enumerate(self.structure.layers):
            layers += [LayerInfo(f"between_{index}_{i}", stage.describe()) for i, stage in enumerate(layer.between)]
            for cell in layer.cells:
                direction = "backward" if cell is layer.backward else "forward"
                runner = "dynamic_rnn" if cell.looped else f"{cell.match.unrolled_by} ({len(cell.steps)} steps)"
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
            shortest = frontends.minimum(self.structure.frontend)
            notes.append(f"the graph is built for {self.fixed_length} steps; the export accepts any length"
                         + (f" of {shortest} steps or more" if shortest > 1 else ""))
        for index in self.initial:
            notes.append(f"cell '{self.structure.layers[index].forward.scope}' starts from a trained state, which "
                         "the export starts from too (and a streaming export's initial_state returns)")
        if self.time_axis == 0:
            notes.append("the graph's input is time-major; the export takes [batch, time, ...]")
        if self.fixed_batch:
            notes.append(f"the graph fixes the batch at {self.fixed_batch}; the export accepts any batch")
        notes.extend(frontends.notes(self.structure.frontend))
        notes += self.feeds.describe()
        notes += [self.output_note] if self.output_note else []
        notes.append(self.source.note)
        causal = not self.structure.bidirectional
        title = f"{self.source.title} ({len(cells)} cell{'s' if len(cells) != 1 else ''})"
        return SourceInfo(self.label, self.source.kind, title, tuple(inputs), tuple(outputs), tuple(layers),
                          self.fixed_length, causal, tuple(notes), min_length=frontends.minimum(self.structure.frontend))

    @functools.cached_property
    def equivalent(self) -> KerasEquivalent:
        """The Keras equivalent under the graph's names. A bidirectional layer cannot stream."""
        bidirectional = next(((index, layer) for index, layer in enumerate(self.structure.layers)
                              if layer.backward is not None), None)
        blocked = ""
        if bidirectional is not None:
            index, layer = bidirectional
            blocked = (f"layer {index} is bidirectional: its backward cell '{layer.backward.scope}' reads each "
                       "sequence from the end, so it needs the whole sequence")
        return KerasEquivalent(self.keras, self.info, blocked or frontends.not_streamable(self.structure.frontend))

    def recurrent_model(self) -> RecurrentModel:
        return keras_equivalent.recurrent_model(self.equivalent)

    def reference(self, device: Device) -> Tf1Reference:
        return Tf1Reference(self, device)

    def layer_outputs(self, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
        """The layers of the Keras equivalent every target exports (recurrent layer `i` is named
        `tf1_equivalent.layer_name(i)`)."""
        return keras_equivalent.layer_outputs(self.equivalent, inputs)

    def tolerance_floor(self, device: Device) -> Tolerance | None:
        if all(cell.match.separate_matmuls for cell in self.cells):
            return None  # a traced Keras cell already computes x.W + h.U, as the exports do
        return Tolerance(atol=TF1_FLOAT32_ATOL, rtol=0.0)
