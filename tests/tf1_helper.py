"""Writes TF1 Saver checkpoints with the real TF1 cell classes and runners.

Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process:

    write DIR [NAME ...]    write the checkpoints (all of them, or the named ones) into DIR/NAME/
    freeze DIR [NAME ...]   write frozen GraphDefs (weights as constants) DIR/NAME.pb of the
                            unrolled builders (FROZEN, all of them or the named ones)
    both DIR                all the checkpoints into DIR/ckpt/ and all the frozen graphs into DIR/frozen/

Each checkpoint's graph has a float input `x` [batch, 10, 5] (token ids `ids` [batch, 10] where
named so) and one output `y`; `manifest.json` in DIR lists what each one holds. DIR/steps/ holds
`gru_static` saved at global steps 5 and 9.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
rnn_cell = v1.nn.rnn_cell
LENGTH, FEATURES, UNITS, CLASSES, VOCAB = 10, 5, 8, 4, 30


class LSTMBlockCell(rnn_cell.RNNCell):
    """tf.contrib.rnn.LSTMBlockCell (removed with contrib) over the `LSTMBlockCell` op it wrapped,
    with the variables it created: `kernel`, `bias` and with peepholes `w_i_diag`, `w_f_diag`,
    `w_o_diag`."""

    def __init__(self, num_units, forget_bias=1.0, cell_clip=None, use_peephole=False, name="lstm_cell"):
        super().__init__(name=name)
        self._num_units, self._forget_bias, self._use_peephole = num_units, forget_bias, use_peephole
        self._cell_clip = cell_clip if cell_clip is not None else -1

    @property
    def state_size(self):
        return rnn_cell.LSTMStateTuple(self._num_units, self._num_units)

    @property
    def output_size(self):
        return self._num_units

    def build(self, input_shape):
        depth = input_shape[-1] + self._num_units
        self._kernel = self.add_weight("kernel", [depth, 4 * self._num_units])
        self._bias = self.add_weight("bias", [4 * self._num_units], initializer=v1.random_normal_initializer(0, 0.3))
        if self._use_peephole:
            self._w = [self.add_weight(n, [self._num_units]) for n in ("w_i_diag", "w_f_diag", "w_o_diag")]
        else:
            self._w = [tf.zeros([self._num_units])] * 3
        self.built = True

    def call(self, inputs, state):
        c, h = state
        _, cs, _, _, _, _, h = tf.raw_ops.LSTMBlockCell(
            x=inputs, cs_prev=c, h_prev=h, w=self._kernel, wci=self._w[0], wcf=self._w[1], wco=self._w[2],
            b=self._bias, forget_bias=self._forget_bias, cell_clip=self._cell_clip, use_peephole=self._use_peephole)
        return h, rnn_cell.LSTMStateTuple(cs, h)


def dense(outputs, units, activation=None, name="dense"):
    """The projection TF1 code put after an RNN: flatten time into batch, matmul, add a bias."""
    w = v1.get_variable(f"{name}_w", [outputs.shape[-1], units])
    b = v1.get_variable(f"{name}_b", [units], initializer=v1.random_normal_initializer(0, 0.3))
    logits = tf.matmul(outputs, w) + b
    return activation(logits) if activation else logits


def flat(outputs):
    """static_rnn's list of steps as one [batch * time, units] tensor, batch-major."""
    return tf.reshape(tf.concat(outputs, 1), [-1, outputs[0].shape[-1]])


def steps(x):
    return tf.unstack(x, LENGTH, axis=1)


def basic_lstm_static(x):
    cell = rnn_cell.BasicLSTMCell(UNITS)
    outputs, _ = v1.nn.static_rnn(cell, steps(x), dtype=tf.float32)
    return dense(flat(outputs), CLASSES, tf.nn.softmax)


def basic_lstm_forget_bias_dynamic(x):
    cell = rnn_cell.BasicLSTMCell(UNITS, forget_bias=0.3)
    outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
    return outputs


def lstm_peephole_projection_time_major(x):
    cell = rnn_cell.LSTMCell(UNITS, use_peepholes=True, num_proj=6, cell_clip=0.8, proj_clip=0.5, forget_bias=0.6)
    outputs, _ = v1.nn.dynamic_rnn(cell, tf.transpose(x, [1, 0, 2]), dtype=tf.float32, time_major=True)
    return tf.transpose(outputs, [1, 0, 2])


def lstm_cell_static_last(x):
    cell = rnn_cell.LSTMCell(UNITS, activation=tf.nn.relu)
    outputs, _ = v1.nn.static_rnn(cell, steps(x), dtype=tf.float32)
    return dense(outputs[-1], CLASSES, tf.nn.softmax)


def gru_static(x):
    cell = rnn_cell.GRUCell(UNITS)
    outputs, _ = v1.nn.static_rnn(cell, steps(x), dtype=tf.float32)
    return tf.stack(outputs, axis=1)


def gru_dynamic_sequence_length(x, lengths):
    cell = rnn_cell.GRUCell(UNITS)
    outputs, _ = v1.nn.dynamic_rnn(cell, x, sequence_length=lengths, dtype=tf.float32)
    return outputs


def basic_rnn_dynamic(x):
    cell = rnn_cell.BasicRNNCell(UNITS)
    outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
    return dense(tf.reshape(outputs, [-1, UNITS]), CLASSES)


def multi_lstm_custom_scope(x):
    with v1.variable_scope("encoder/stack_of_three"):
        cell = rnn_cell.MultiRNNCell([rnn_cell.BasicLSTMCell(UNITS, name=f"layer{i}") for i in range(3)])
        outputs, _ = v1.nn.static_rnn(cell, steps(x), dtype=tf.float32, scope="unrolled")
    with v1.variable_scope("decoder"):
        return dense(flat(outputs), CLASSES, tf.nn.softmax, name="proj")


def lstm_block_dynamic(x):
    cell = LSTMBlockCell(UNITS, forget_bias=0.5, cell_clip=2.0, use_peephole=True)
    outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
    return outputs


def bidirectional_static(x):
    outputs, _, _ = v1.nn.static_bidirectional_rnn(
        rnn_cell.BasicLSTMCell(UNITS), rnn_cell.BasicLSTMCell(UNITS), steps(x), dtype=tf.float32)
    return dense(flat(outputs), CLASSES, tf.nn.softmax)


def bidirectional_dynamic(x):
    (forward, backward), _ = v1.nn.bidirectional_dynamic_rnn(
        rnn_cell.GRUCell(UNITS), rnn_cell.GRUCell(UNITS), x, dtype=tf.float32)
    return tf.concat([forward, backward], axis=2)


def embedded_multi_lstm(ids):
    embedding = v1.get_variable("embedding", [VOCAB, FEATURES])
    x = tf.nn.embedding_lookup(embedding, ids)
    cell = rnn_cell.MultiRNNCell([rnn_cell.BasicLSTMCell(UNITS) for _ in range(2)])
    outputs, _ = v1.nn.static_rnn(cell, steps(x), dtype=tf.float32)
    return dense(flat(outputs), CLASSES, tf.nn.softmax)


def basic_rnn_static(x):
    outputs, _ = v1.nn.static_rnn(rnn_cell.BasicRNNCell(UNITS), steps(x), dtype=tf.float32)
    return tf.stack(outputs, axis=1)


def two_layer_gru_static(x):
    cell = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(UNITS), rnn_cell.GRUCell(6)])
    outputs, _ = v1.nn.static_rnn(cell, steps(x), dtype=tf.float32)
    return dense(flat(outputs), CLASSES, tf.nn.softmax)


def hand_unrolled_lstm(x):
    """A Python loop over a cell, as people wrote before static_rnn: slices in, stack out."""
    cell = rnn_cell.LSTMCell(UNITS, forget_bias=0.7)
    state = cell.zero_state(tf.shape(x)[0], tf.float32)
    outputs = []
    with v1.variable_scope("loop") as scope:
        for t in range(LENGTH):
            if t:
                scope.reuse_variables()
            output, state = cell(x[:, t, :], state)
            outputs.append(output)
    return tf.stack(outputs, axis=1)


def altered_step(x):
    """hand_unrolled_lstm, except that step 3 runs on a kernel nudged by 0.01: not a repetition."""
    cell = rnn_cell.BasicLSTMCell(UNITS)
    state = cell.zero_state(tf.shape(x)[0], tf.float32)
    cell.build(tf.TensorShape([None, FEATURES]))
    kernel, bias = cell.weights
    outputs = []
    for t in range(LENGTH):
        c, h = state
        w = kernel + 0.01 if t == 3 else kernel
        i, j, f, o = tf.split(tf.nn.bias_add(tf.matmul(tf.concat([x[:, t, :], h], 1), w), bias), 4, axis=1)
        c = c * tf.sigmoid(f + 1.0) + tf.sigmoid(i) * tf.tanh(j)
        h = tf.tanh(c) * tf.sigmoid(o)
        state = (c, h)
        outputs.append(h)
    return tf.stack(outputs, axis=1)


def padded_gru_classifier(x, lengths):
    """The padded deployment: inputs padded to LENGTH, the class read from the state at the true length."""
    _, state = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), x, sequence_length=lengths, dtype=tf.float32)
    return dense(state, CLASSES, tf.nn.softmax)


def trained_initial_state(x):
    """A GRU that starts from a trained state, one variable tiled over the batch."""
    start = v1.get_variable("initial_state", [1, UNITS], initializer=v1.random_normal_initializer(0, 0.5))
    state = tf.tile(start, [tf.shape(x)[0], 1])
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), x, initial_state=state)
    return outputs


def unsupported_op(x):
    """A cell followed by an op rnnexport does not place (sin)."""
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.BasicLSTMCell(UNITS), x, dtype=tf.float32)
    return tf.sin(outputs)


FIXTURES = {fn.__name__: fn for fn in (
    basic_lstm_static, basic_lstm_forget_bias_dynamic, lstm_peephole_projection_time_major, lstm_cell_static_last,
    gru_static, gru_dynamic_sequence_length, basic_rnn_dynamic, multi_lstm_custom_scope, lstm_block_dynamic,
    bidirectional_static, bidirectional_dynamic, embedded_multi_lstm, unsupported_op, basic_rnn_static,
    two_layer_gru_static, hand_unrolled_lstm, altered_step, padded_gru_classifier, trained_initial_state,
)}
# Written frozen by `freeze`: every static runner, the loops of a cell, and a padded deployment.
FROZEN = ("basic_lstm_static", "gru_static", "basic_rnn_static", "bidirectional_static", "two_layer_gru_static",
          "embedded_multi_lstm", "hand_unrolled_lstm", "altered_step", "padded_gru_classifier")
CHECKPOINTED = tuple(name for name in FIXTURES if name not in FROZEN or name in (
    "basic_lstm_static", "gru_static", "bidirectional_static", "embedded_multi_lstm"))


def write_one(out: Path, name: str, frozen: bool) -> dict:
    build = FIXTURES[name]
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(7)
        if name.startswith("embedded"):
            inputs = [v1.placeholder(tf.int32, [None, LENGTH], name="ids")]
        else:
            inputs = [v1.placeholder(tf.float32, [None, LENGTH, FEATURES], name="x")]
        if "sequence_length" in name or name.startswith("padded"):
            inputs.append(v1.placeholder(tf.int32, [None], name="lengths"))
        y = tf.identity(build(*inputs), name="y")
        saver = v1.train.Saver()
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            if frozen:
                graph_def = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["y"])
                (out / f"{name}.pb").write_bytes(graph_def.SerializeToString())
            else:
                (out / name).mkdir(parents=True, exist_ok=True)
                saver.save(session, str(out / name / "model.ckpt"))
            if name == "gru_static" and not frozen:
                for step in (5, 9):
                    saver.save(session, str(out / "steps" / "model.ckpt"), global_step=step)
    return {"inputs": [t.name for t in inputs], "output": y.name, "length": LENGTH}


def write(out: Path, names: list[str], frozen: bool) -> None:
    manifest = {name: write_one(out, name, frozen) for name in names or (FROZEN if frozen else CHECKPOINTED)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    np.random.seed(0)
    v1.disable_v2_behavior()
    if sys.argv[1] == "both":
        for folder, frozen in (("ckpt", False), ("frozen", True)):
            (Path(sys.argv[2]) / folder).mkdir(parents=True, exist_ok=True)
            write(Path(sys.argv[2]) / folder, [], frozen)
    else:
        write(Path(sys.argv[2]), sys.argv[3:], sys.argv[1] == "freeze")
