"""The reference for a checkpoint saved without a graph: what loading it as the oldest advice
says does. A TF1 graph of the named cells is built over variables of the checkpoint's shapes, a
Saver restores them by their checkpoint names, and the graph runs in a `tf.compat.v1.Session`.

The TF1 cell classes (`tf.compat.v1.nn.rnn_cell.*`) need tf-keras under Keras 3, which
rnnexport does not require, so each cell's `call` is written here as TF1 wrote it: one MatMul of
concat([x, h]) by the kernel, the bias added, the gates split in TF1's order (LSTM i, j, f, o
with the forget bias added at run time, peepholes, clips and projection as `LSTMCell` applies
them; GRU r, u and a candidate over concat([x, r * h])). The
tests check it against the real classes, which the fixtures run under tf-keras. Time is a
`while` loop (`tf.scan`), so one graph serves every length, as `dynamic_rnn` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnexport_converters.tf1 import equivalent as tf1_equivalent
from rnnexport_converters.tf1.cellspec import CellSpec
from rnnexport.device import Device
from rnnexport.model import next_name, state_name
from rnnexport.runner import Arrays, Closable
from rnnexport.tf import tensorflow

if TYPE_CHECKING:
    from rnnexport_converters.tf1.graphless_source import OpenedGraphless


def _activation(tf: Any, name: str) -> Any:
    return {"tanh": tf.tanh, "relu": tf.nn.relu, "sigmoid": tf.sigmoid, "linear": tf.identity,
            "softmax": tf.nn.softmax}[name]


def _lstm(tf: Any, spec: CellSpec, w: dict[str, Any], x: Any, c: Any, h: Any) -> list[Any]:
    """`LSTMCell.call` (`BasicLSTMCell` and `LSTMBlockCell` compute it without peepholes,
    projection or clips)."""
    act = _activation(tf, spec.activation)
    gates = tf.nn.bias_add(tf.matmul(tf.concat([x, h], 1), w["kernel"]), w["bias"])
    i, j, f, o = tf.split(gates, 4, axis=1)
    if "w_i_diag" in w:
        c = tf.sigmoid(f + spec.forget_bias + w["w_f_diag"] * c) * c + tf.sigmoid(i + w["w_i_diag"] * c) * act(j)
    else:
        c = c * tf.sigmoid(f + spec.forget_bias) + tf.sigmoid(i) * act(j)
    if spec.cell_clip is not None:
        c = tf.clip_by_value(c, -spec.cell_clip, spec.cell_clip)
    h = tf.sigmoid(o + w["w_o_diag"] * c if "w_o_diag" in w else o) * act(c)
    if "projection" in w:
        h = tf.matmul(h, w["projection"])
        if spec.proj_clip is not None:
            h = tf.clip_by_value(h, -spec.proj_clip, spec.proj_clip)
    return [c, h]


def _step(tf: Any, spec: CellSpec, w: dict[str, Any], x: Any, state: list[Any]) -> list[Any]:
    """One TF1 cell step: the new states, (c, h) for an LSTM, (h,) otherwise; h is the output."""
    if spec.kind == "lstm":
        return _lstm(tf, spec, w, x, *state)
    act = _activation(tf, spec.activation)
    (h,) = state
    if spec.kind == "gru":
        gates = tf.sigmoid(tf.nn.bias_add(tf.matmul(tf.concat([x, h], 1), w["kernel"]), w["bias"]))
        r, u = tf.split(gates, 2, axis=1)
        candidate = tf.nn.bias_add(tf.matmul(tf.concat([x, r * h], 1), w["candidate_kernel"]), w["candidate_bias"])
        return [u * h + (1 - u) * act(candidate)]
    return [act(tf.nn.bias_add(tf.matmul(tf.concat([x, h], 1), w["kernel"]), w["bias"]))]


class GraphlessReference(Closable):
    """The named TF1 cells over the checkpoint's variables, in a Session, at any length."""

    name = "tf1-checkpoint"
    runs_as = "the rebuilt graph in a TF1 Session.run"

    def __init__(self, opened: OpenedGraphless, device: Device) -> None:
        tf = tensorflow()
        v1 = tf.compat.v1
        self.opened = opened
        self.device = f"{device.label} (TF1 Session)"
        self.graph = tf.Graph()
        layers = opened.mapping.layers
        with self.graph.as_default():
            shapes = opened.variables.shapes
            restored = {name: v1.get_variable(f"v{i}", shapes[name], tf.float32)
                        for i, name in enumerate(sorted(opened.values))}
            self.input = opened.info.inputs[0].name
            if opened.mapping.embedding:
                self.x = v1.placeholder(tf.int32, [None, None], name=self.input)
                x = tf.nn.embedding_lookup(restored[opened.mapping.embedding], self.x)
            else:
                x = self.x = v1.placeholder(tf.float32, [None, None, opened.features], name=self.input)
            batch = tf.shape(self.x)[0]
            starts = []
            for layer in layers:
                roles = ("c", "h") if layer.spec.kind == "lstm" else ("h",)
                sizes = {"c": layer.spec.units, "h": layer.output_size}
                if "ch" in layer.initial:
                    # An LSTMStateTuple saved as one vector holds (c, h).
                    both = tf.reshape(restored[layer.initial["ch"]], [-1])
                    vectors = {"c": both[:sizes["c"]], "h": both[sizes["c"]:]}
                else:
                    vectors = {role: tf.reshape(restored[name], [-1]) for role, name in layer.initial.items()}
                starts.append([tf.tile(vectors[r][None], [batch, 1]) if r in vectors else tf.zeros([batch, sizes[r]])
                               for r in roles])

            def step(states: tuple, x: Any) -> tuple:
                new = []
                for layer, state in zip(layers, states[:-1]):
                    weights = {role: restored[name] for role, name in layer.names.items()}
                    state = _step(tf, layer.spec, weights, x, list(state))
                    new.append(tuple(state))
                    x = state[-1]
                return (*new, x)

            first = (*[tuple(s) for s in starts], tf.zeros([batch, layers[-1].output_size]))
            scanned = tf.scan(step, tf.transpose(x, [1, 0, 2]), initializer=first)
            y = tf.transpose(scanned[-1], [1, 0, 2])
            if opened.architecture.last_step:
                y = y[:, -1]
            if opened.mapping.head:
                kernel, bias = (restored[n] for n in opened.mapping.head)
                y = tf.tensordot(y, kernel, 1) + bias
                y = _activation(tf, opened.architecture.head_activation)(y)
            self.y = y
            self.finals: dict[str, Any] = {}
            for index, (layer, states) in enumerate(zip(layers, scanned[:-1])):
                roles = ("c", "h") if layer.spec.kind == "lstm" else ("h",)
                for role, value in zip(roles, states):
                    self.finals[next_name(state_name(tf1_equivalent.layer_name(index), role))] = value[-1]
            saver = v1.train.Saver(var_list=restored)
        self.session = v1.Session(graph=self.graph)
        try:
            with self.graph.as_default():
                saver.restore(self.session, str(opened.prefix))
        except BaseException:
            self.session.close()
            raise

    def close(self) -> None:
        self.session.close()

    def serves(self, inputs: Mapping[str, np.ndarray]) -> str:
        return ""

    def method(self, inputs: Mapping[str, np.ndarray]) -> str:
        return "TF1 cells rebuilt over the checkpoint's variables, any length"

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        return {self.opened.info.outputs[0].name: self.session.run(self.y, {self.x: inputs[self.input]})}

    def final_state(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Every layer's state after the whole sequence, named as the export's states are."""
        return self.session.run(self.finals, {self.x: inputs[self.input]})
