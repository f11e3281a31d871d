"""The reference for TF1 sources: the graph itself in a `tf.compat.v1.Session`, served at other
lengths by prefix padding (shorter, causal graphs) and by state-carrying windows (longer), or fed
at a free length where the graph allows it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnexport_converters.tf1 import equivalent as tf1_equivalent
from rnnexport_converters.tf1 import frontends
from rnnexport_converters.tf1.chains import state_columns, state_tensors
from rnnexport.device import Device
from rnnexport.errors import UnsupportedModelError
from rnnexport.model import next_name, state_name
from rnnexport.runner import Arrays, Closable
from rnnexport.tf import tensorflow

if TYPE_CHECKING:
    from rnnexport_converters.tf1.opened import OpenedTf1


class Tf1Reference(Closable):
    """The TF1 graph in a Session. It runs at its own length; shorter sequences are padded to it
    (causal graphs), longer ones run in windows that carry each cell's final state into the
    next window's initial state. A bidirectional graph only serves its own length."""

    name = "tf1-checkpoint"
    runs_as = "the graph in a TF1 Session.run"

    def __init__(self, opened: OpenedTf1, device: Device) -> None:
        self.opened = opened
        self.device = f"{device.label} (TF1 Session)"
        self.session = opened.source.session()
        try:
            # A graph with a sequence_length input is run as it is deployed: padded, true lengths fed.
            self.free = None if opened.structure.lengths_input else free_graph(opened)
        except BaseException:
            self.session.close()
            raise
        self.states: list[tuple[list[str], list[str | None]]] = []
        self.no_states = ""
        try:
            self.states = [state_tensors(opened.source.view, cell) for cell in opened.cells]
        except UnsupportedModelError as exc:
            self.no_states = str(exc)
        # The final-state tensors the graph has, fetched with the output, by the export's state names,
        # with the columns each state takes of a concatenated one (None: all).
        self.finals: dict[str, tuple[str, tuple[int, int] | None]] = {}
        by_cell = {id(cell): states for cell, states in zip(opened.cells, self.states)}
        for index, layer in enumerate(opened.structure.layers):
            initials, finals = by_cell.get(id(layer.forward), ([], []))
            columns = state_columns(opened.source.view, layer.forward) if initials else []
            for role, initial, final, where in zip(layer.forward.match.state_roles, initials, finals, columns):
                if final is None:
                    self.no_states = self.no_states or (f"the graph has no final value of state '{initial}' (pruned "
                                                        "when it was frozen?)")
                else:
                    self.finals[next_name(state_name(tf1_equivalent.layer_name(index), role))] = (final, where)

    def close(self) -> None:
        self.session.close()
        if self.free:
            self.free[0].close()

    def _length(self, inputs: Mapping[str, np.ndarray]) -> int:
        return inputs[self.opened.names[self.opened.data_input]].shape[1]

    def serves(self, inputs: Mapping[str, np.ndarray]) -> str:
        fixed = self.opened.fixed_length
        length = self._length(inputs)
        unserved = frontends.unserved(self.opened.structure.frontend, length, fixed, bool(self.free))
        if unserved:
            return unserved
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
        return {name: finals[tensor] if where is None else finals[tensor][..., where[0]:where[1]]
                for name, (tensor, where) in self.finals.items()}

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
        data = inputs[opened.names[opened.data_input]]
        feed = {**opened.feeds.arrays(data.shape[0]), placeholder: data}
        if opened.structure.lengths_input:
            feed[opened.structure.lengths_input] = inputs[opened.names[opened.structure.lengths_input]]
        out, *values = session.run([opened.output, *finals], feed)
        return tf1_equivalent.from_layout(out, opened.layout, feed[placeholder].shape[0]), dict(zip(finals, values))

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
            return tf1_equivalent.from_layout(out, opened.layout, batch), dict(zip(finals, values))
        if self.free:
            return self._run_free(inputs, finals)
        lengths_name = opened.names.get(opened.structure.lengths_input or "")
        outputs, feeds, values = [], {}, []
        for start in range(0, length, fixed):
            window = {data: _pad_time(inputs[data][:, start:start + fixed], fixed)}
            if lengths_name:
                window[lengths_name] = np.clip(inputs[lengths_name] - start, 0, fixed).astype(np.int32)
            # Without final states to fetch, run_graph returns the output alone, not a list.
            results = opened.run_graph(window, self.session, feeds, tuple(finals)) if finals else [
                opened.run_graph(window, self.session, feeds)]
            out, values = results[0], results[1:]
            outputs.append(tf1_equivalent.from_layout(out, opened.layout, batch))
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


def free_graph(opened: OpenedTf1) -> tuple[Any, str, str] | None:
    """(session, entry, placeholder) for a loop graph whose length is fixed only by static
    shapes and reshapes between the input and the loop: the same graph imported with a
    placeholder of free length at `entry`, the batch-major tensor the loop reads."""
    graph_def = getattr(opened.source, "graph_def", None)
    # A front end is freed by frontends.free_graph, which freezes a checkpoint's graph first.
    if ((graph_def is None and not opened.structure.frontend) or opened.fixed_length is None
            or not all(c.looped for c in opened.cells)):
        return None
    view = opened.source.view
    read = view.through(view.tensor(opened.cells[0].steps[0].x))
    if read.op.type != "TensorArrayReadV3" or opened.structure.embedding is not None:
        return None
    value = view.through(read.op.inputs[2]).op.inputs[2]
    if value.op.type != "Transpose":
        return None
    entry = value.op.inputs[0]
    if opened.structure.frontend:
        return frontends.free_graph(opened, graph_def, entry)
    tensor, reshaped = entry, False
    while tensor.name != opened.data_input:
        if tensor.op.type not in ("Reshape", "Identity", "ExpandDims", "Squeeze"):
            return None
        reshaped = reshaped or tensor.op.type != "Identity"
        tensor = tensor.op.inputs[0]
    shape = view.tensor(opened.data_input).shape.as_list()
    if entry.shape.rank != len(shape) or opened.time_axis != 1 or any(
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
        if not reshaped:
            # The input itself is freed too where other ops read it (Keras sizes its zero state by it).
            mapping[opened.data_input] = placeholder
        tf.compat.v1.import_graph_def(graph_def, input_map=mapping, name="")
    session = tf.compat.v1.Session(graph=graph)
    probe = opened._probe_inputs()
    data = probe[opened.names[opened.data_input]]
    feed = {**opened.feeds.arrays(data.shape[0]), placeholder.name: data}
    if opened.structure.lengths_input:
        feed[opened.structure.lengths_input] = probe[opened.names[opened.structure.lengths_input]]
    if not np.allclose(session.run(opened.output, feed), opened.run_graph(probe), rtol=0, atol=1e-6):
        session.close()
        return None
    return session, entry.name, placeholder.name
