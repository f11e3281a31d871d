"""Writes TF1 graphs with the real TF1 cell classes for the cells and what surrounds them: the
projected, peephole and clipped `LSTMCell` under `dynamic_rnn`, front ends between the input and
the cells (a dense ReLU before `tf.split`, a Conv2D over (time, frequency) reshaped per step) and
heads after them (per-step dense layers on `static_rnn`'s list, stacked dense layers on a final
state).

Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process:

    write DIR    Saver checkpoints DIR/NAME/model.ckpt (CHECKPOINTED) and frozen GraphDefs
                 DIR/NAME.pb (FROZEN)

Every graph has a float input `x` [batch, 10, 5] and one output `y`.
"""

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from tf1_helper import CLASSES, FEATURES, LENGTH, UNITS, dense, steps

v1 = tf.compat.v1
rnn_cell = v1.nn.rnn_cell
# The Conv2D front end: kernel (time, frequency), strides and filters, as ML-KWS's CRNN has them.
KERNEL, STRIDES, FILTERS = (3, 2), (2, 1), 4


class GRUBlockCell(rnn_cell.RNNCell):
    """tf.contrib.rnn.GRUBlockCell (removed with contrib) over the `GRUBlockCell` op it wrapped,
    with the variables it created: `w_ru`, `w_c`, `b_ru`, `b_c`."""

    def __init__(self, num_units, name="gru_cell"):
        super().__init__(name=name)
        self._num_units = num_units

    @property
    def state_size(self):
        return self._num_units

    @property
    def output_size(self):
        return self._num_units

    def build(self, input_shape):
        depth, units = input_shape[-1] + self._num_units, self._num_units
        noise = v1.random_normal_initializer(0, 0.3)
        self._w_ru, self._w_c = self.add_weight("w_ru", [depth, 2 * units]), self.add_weight("w_c", [depth, units])
        self._b_ru = self.add_weight("b_ru", [2 * units], initializer=noise)
        self._b_c = self.add_weight("b_c", [units], initializer=noise)
        self.built = True

    def call(self, inputs, state):
        *_, h = tf.raw_ops.GRUBlockCell(x=inputs, h_prev=state, w_ru=self._w_ru, w_c=self._w_c, b_ru=self._b_ru,
                                        b_c=self._b_c)
        return h, h


def projected_lstm(**overrides):
    settings = dict(use_peepholes=True, num_proj=6, cell_clip=0.8, proj_clip=0.5, forget_bias=0.6)
    return rnn_cell.LSTMCell(UNITS, **{**settings, **overrides})


def lstm_projection_dynamic(x):
    """Batch-major dynamic_rnn; every step's projected output."""
    outputs, _ = v1.nn.dynamic_rnn(projected_lstm(), x, dtype=tf.float32)
    return outputs


def lstm_projection_final_state(x):
    """Time-major dynamic_rnn read through its final projected state, as ML-KWS's LSTM_S is."""
    _, state = v1.nn.dynamic_rnn(projected_lstm(proj_clip=None), tf.transpose(x, [1, 0, 2]), dtype=tf.float32,
                                 time_major=True)
    return dense(state.h, CLASSES, tf.nn.softmax)


def dense_relu_static(x):
    """A dense ReLU on every row before the steps are split out of one time-major matrix, as
    the UCI HAR LSTM does."""
    flat = tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, FEATURES])
    hidden = dense(flat, 7, tf.nn.relu, name="hidden")
    outputs, _ = v1.nn.static_rnn(rnn_cell.BasicLSTMCell(UNITS), tf.split(hidden, LENGTH, 0), dtype=tf.float32)
    return tf.stack(outputs, axis=1)


def conv_gru_dynamic(x):
    """ML-KWS's CRNN: Conv2D over (time, frequency), reshaped per time step, two GRUs, two dense
    layers on the last state."""
    image = tf.reshape(x, [-1, LENGTH, FEATURES, 1])
    w = v1.get_variable("W", [*KERNEL, 1, FILTERS])
    b = v1.get_variable("b", [FILTERS], initializer=v1.random_normal_initializer(0, 0.3))
    relu = tf.nn.relu(tf.nn.conv2d(image, w, [1, *STRIDES, 1], "VALID") + b)
    time, freq = relu.shape[1], relu.shape[2]
    flow = tf.reshape(relu, [-1, time, freq * FILTERS])
    cell = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(UNITS), rnn_cell.GRUCell(6)])
    _, last = v1.nn.dynamic_rnn(cell, flow, dtype=tf.float32)
    hidden = dense(last[-1], 9, tf.nn.relu, name="fc")
    return dense(hidden, CLASSES, tf.nn.softmax, name="out")


def conv1d_lstm_dynamic(x):
    """tf.nn.conv1d over time (the features as channels) before an LSTM; its every step."""
    w = v1.get_variable("conv1d_w", [3, FEATURES, 6])
    b = v1.get_variable("conv1d_b", [6], initializer=v1.random_normal_initializer(0, 0.3))
    hidden = tf.nn.relu(tf.nn.conv1d(x, w, stride=1, padding="VALID") + b)
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.LSTMCell(UNITS), hidden, dtype=tf.float32)
    return outputs


def conv_pool_stack_gru(x):
    """Two convolutions over (time, frequency) with max pooling between them, then a GRU's last state."""
    image = tf.reshape(x, [-1, LENGTH, FEATURES, 1])
    w1, w2 = v1.get_variable("W1", [3, 2, 1, 4]), v1.get_variable("W2", [2, 2, 4, 3])
    b1 = v1.get_variable("b1", [4], initializer=v1.random_normal_initializer(0, 0.3))
    conv = tf.nn.relu(tf.nn.conv2d(image, w1, [1, 1, 1, 1], "SAME") + b1)
    pool = tf.nn.max_pool2d(conv, [1, 2, 2, 1], [1, 2, 2, 1], "VALID")
    conv = tf.nn.tanh(tf.nn.bias_add(tf.nn.conv2d(pool, w2, [1, 1, 1, 1], "VALID"), tf.ones([3]) * 0.1))
    flow = tf.reshape(conv, [-1, conv.shape[1], conv.shape[2] * conv.shape[3]])
    _, state = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), flow, dtype=tf.float32)
    return dense(state, CLASSES, tf.nn.softmax)


def static_per_step_head(x):
    """The same dense layer applied to each of static_rnn's outputs, then stacked."""
    outputs, _ = v1.nn.static_rnn(rnn_cell.GRUCell(UNITS), steps(x), dtype=tf.float32)
    w = v1.get_variable("head_w", [UNITS, CLASSES])
    b = v1.get_variable("head_b", [CLASSES], initializer=v1.random_normal_initializer(0, 0.3))
    return tf.stack([tf.nn.tanh(tf.matmul(o, w) + b) for o in outputs], axis=1)


def layers_dense_dynamic(x):
    """tf.layers.dense on [batch, time, features] (a tensordot) before dynamic_rnn and after it."""
    hidden = v1.layers.dense(x, 7, activation=tf.nn.relu)
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), hidden, dtype=tf.float32)
    return v1.layers.dense(outputs, CLASSES)


def per_step_front_static(x):
    """The same dense ReLU on each step's slice, step by step, before static_rnn."""
    w = v1.get_variable("front_w", [FEATURES, 7])
    b = v1.get_variable("front_b", [7], initializer=v1.random_normal_initializer(0, 0.3))
    inputs = [tf.nn.relu(tf.matmul(step, w) + b) for step in steps(x)]
    outputs, _ = v1.nn.static_rnn(rnn_cell.BasicLSTMCell(UNITS), inputs, dtype=tf.float32)
    return tf.stack(outputs, axis=1)


def dense_between_layers(x):
    """tf.layers.dense between two dynamic_rnn layers."""
    with v1.variable_scope("lower"):
        lower, _ = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), x, dtype=tf.float32)
    middle = v1.layers.dense(lower, 7, activation=tf.nn.tanh)
    with v1.variable_scope("upper"):
        upper, _ = v1.nn.dynamic_rnn(rnn_cell.LSTMCell(6), middle, dtype=tf.float32)
    return upper


def gru_block_dynamic(x):
    """GRUBlockCell, one fused op per step, under dynamic_rnn."""
    outputs, _ = v1.nn.dynamic_rnn(GRUBlockCell(UNITS), x, dtype=tf.float32)
    return outputs


def static_mixed_heads(x):
    """Each step projected by a dense layer of its own: no one head for every step."""
    outputs, _ = v1.nn.static_rnn(rnn_cell.GRUCell(UNITS), steps(x), dtype=tf.float32)
    return tf.stack([dense(o, CLASSES, name=f"head_{t}") for t, o in enumerate(outputs)], axis=1)


def relu_without_weights(x):
    """A ReLU straight on the input: no dense layer or convolution for it to belong to."""
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), tf.nn.relu(x), dtype=tf.float32)
    return outputs


FIXTURES = {fn.__name__: fn for fn in (
    lstm_projection_dynamic, lstm_projection_final_state, dense_relu_static, conv_gru_dynamic, conv1d_lstm_dynamic,
    conv_pool_stack_gru, static_per_step_head, layers_dense_dynamic, gru_block_dynamic, dense_between_layers, per_step_front_static, static_mixed_heads, relu_without_weights)}
FROZEN = tuple(name for name in FIXTURES if name != "per_step_front_static")
CHECKPOINTED = ("lstm_projection_dynamic", "lstm_projection_final_state", "dense_relu_static", "conv_gru_dynamic",
                "per_step_front_static")


def write_one(out: Path, name: str, frozen: bool) -> None:
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(11)
        x = v1.placeholder(tf.float32, [None, LENGTH, FEATURES], name="x")
        tf.identity(FIXTURES[name](x), name="y")
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            if frozen:
                graph_def = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["y"])
                (out / f"{name}.pb").write_bytes(graph_def.SerializeToString())
            else:
                (out / name).mkdir(parents=True, exist_ok=True)
                v1.train.Saver().save(session, str(out / name / "model.ckpt"))


if __name__ == "__main__":
    np.random.seed(0)
    v1.disable_v2_behavior()
    target = Path(sys.argv[2])
    for fixture in FROZEN:
        write_one(target, fixture, True)
    for fixture in CHECKPOINTED:
        write_one(target, fixture, False)
