"""Writes Saver checkpoints of cell variables only, as the oldest advice saved RNNs: no meta
graph, the unrolled graph to be rebuilt at load time. Runs under tf-keras
(TF_USE_LEGACY_KERAS=1) in a subprocess:

    write DIR    DIR/NAME/model.ckpt for every fixture, and DIR/NAME/expected.npz with what the
                 real TF1 cell classes (dynamic_rnn over the same variables) compute: `x<T>` and
                 `y<T>` for T in LENGTHS, batch 3

The input has 5 features; `manifest.json` in DIR lists each checkpoint's variables and shapes.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from tf1_helper import LSTMBlockCell

v1 = tf.compat.v1
rnn_cell = v1.nn.rnn_cell
FEATURES, UNITS, CLASSES = 5, 8, 4
LENGTHS = (1, 2, 7, 33)


def _run(cell, x, **kwargs):
    outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32, **kwargs)
    return outputs


def basic_lstm(x):
    return _run(rnn_cell.BasicLSTMCell(UNITS), x), None


def lstm_cell(x):
    return _run(rnn_cell.LSTMCell(UNITS, forget_bias=0.4), x), None


def lstm_peephole_projection(x):
    cell = rnn_cell.LSTMCell(UNITS, use_peepholes=True, num_proj=6, cell_clip=0.8, proj_clip=0.5, forget_bias=0.6)
    return _run(cell, x), None


def gru(x):
    return _run(rnn_cell.GRUCell(UNITS), x), None


def basic_rnn(x):
    return _run(rnn_cell.BasicRNNCell(UNITS, activation=tf.nn.relu), x), None


def lstm_block(x):
    return _run(LSTMBlockCell(UNITS), x), None


def gru_stack(x):
    return _run(rnn_cell.MultiRNNCell([rnn_cell.GRUCell(UNITS), rnn_cell.GRUCell(6)]), x), None


def same_shape_stack(x):
    """Two LSTM layers of 5 units over 5 features: both kernels [10, 20], told apart by cell_0, cell_1."""
    return _run(rnn_cell.MultiRNNCell([rnn_cell.BasicLSTMCell(FEATURES) for _ in range(2)]), x), None


def initial_state(x):
    """A GRU that starts from a trained state, one [1, units] variable tiled over the batch."""
    start = v1.get_variable("initial_state", [1, UNITS], initializer=v1.random_normal_initializer(0, 0.5))
    return _run(rnn_cell.GRUCell(UNITS), x, initial_state=tf.tile(start, [tf.shape(x)[0], 1])), None


def lstm_start_and_head(x):
    """An LSTM from trained (c, h) vectors c0, h0, then a PTB-style softmax_w/softmax_b head
    (logits: the softmax is in the loss)."""
    c0 = v1.get_variable("c0", [UNITS], initializer=v1.random_normal_initializer(0, 0.5))
    h0 = v1.get_variable("h0", [UNITS], initializer=v1.random_normal_initializer(0, 0.5))
    batch = tf.shape(x)[0]
    state = rnn_cell.LSTMStateTuple(tf.tile(c0[None], [batch, 1]), tf.tile(h0[None], [batch, 1]))
    outputs = _run(rnn_cell.BasicLSTMCell(UNITS), x, initial_state=state)
    w = v1.get_variable("softmax_w", [UNITS, CLASSES])
    b = v1.get_variable("softmax_b", [CLASSES], initializer=v1.random_normal_initializer(0, 0.3))
    return tf.tensordot(outputs, w, 1) + b, None


def stack_start_states(x):
    """An LSTM over a GRU, each from its own trained state: `init_state_0` [1, 16] holds the
    LSTM's (c, h) as an LSTMStateTuple flattens, `init_state_1` [6] the GRU's."""
    batch = tf.shape(x)[0]
    lstm = v1.get_variable("init_state_0", [1, 2 * UNITS], initializer=v1.random_normal_initializer(0, 0.5))
    gru = v1.get_variable("init_state_1", [6], initializer=v1.random_normal_initializer(0, 0.5))
    c, h = tf.split(tf.tile(lstm, [batch, 1]), 2, axis=1)
    state = (rnn_cell.LSTMStateTuple(c, h), tf.tile(gru[None], [batch, 1]))
    cell = rnn_cell.MultiRNNCell([rnn_cell.BasicLSTMCell(UNITS), rnn_cell.GRUCell(6)])
    return _run(cell, x, initial_state=state), None


def tf10_names(x):
    """A two-layer BasicLSTMCell stack saved under TF 1.0's names (`rnn_cell/cell_0/.../weights`)."""
    cell = rnn_cell.MultiRNNCell([rnn_cell.BasicLSTMCell(UNITS), rnn_cell.BasicLSTMCell(6)])
    outputs = _run(cell, x)
    old = {}
    for variable in v1.trainable_variables():
        layer = variable.name.split("/")[2]
        role = "weights" if "kernel" in variable.name else "biases"
        old[f"rnn/multi_rnn_cell/{layer}/basic_lstm_cell/{role}"] = variable
    return outputs, old


def tf0_names(x):
    """A GRUCell saved under TF 0.x's names (`RNN/GRUCell/Gates/Linear/Matrix`)."""
    outputs = _run(rnn_cell.GRUCell(UNITS), x)
    spell = {"gates": "Gates", "candidate": "Candidate"}
    old = {}
    for variable in v1.trainable_variables():
        part = variable.name.split("/")[2]
        role = "Matrix" if "kernel" in variable.name else "Bias"
        old[f"RNN/GRUCell/{spell[part]}/Linear/{role}"] = variable
    return outputs, old


def tf0_lstm_cell(x):
    """An LSTMCell with peepholes and a projection saved under TF 0.x's names (`LSTMCell/W_0`,
    `B`, `W_F_diag`, `W_P_0`)."""
    outputs = _run(rnn_cell.LSTMCell(UNITS, use_peepholes=True, num_proj=6, forget_bias=0.6), x)
    spell = {"kernel": "W_0", "bias": "B", "w_f_diag": "W_F_diag", "w_i_diag": "W_I_diag", "w_o_diag": "W_O_diag",
             "projection": "W_P_0"}
    return outputs, {f"RNN/LSTMCell/{spell[v.name.split('/')[2].split(':')[0]]}": v for v in v1.trainable_variables()}


def two_candidates(x):
    """The two cells of a bidirectional layer: two LSTM kernels of one shape, no layer number."""
    (forward, backward), _ = v1.nn.bidirectional_dynamic_rnn(
        rnn_cell.BasicLSTMCell(UNITS), rnn_cell.BasicLSTMCell(UNITS), x, dtype=tf.float32)
    return tf.concat([forward, backward], 2), None


FIXTURES = {fn.__name__: fn for fn in (
    basic_lstm, lstm_cell, lstm_peephole_projection, gru, basic_rnn, lstm_block, gru_stack, same_shape_stack,
    initial_state, lstm_start_and_head, stack_start_states, tf10_names, tf0_names, tf0_lstm_cell, two_candidates,
)}


def write_one(out: Path, name: str) -> dict:
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(11)
        x = v1.placeholder(tf.float32, [None, None, FEATURES], name="x")
        y, var_list = FIXTURES[name](x)
        saver = v1.train.Saver(var_list if var_list is not None else v1.global_variables())
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            # Every weight random, biases included (TF1 starts most at zero), so each one counts.
            weights = np.random.default_rng(5)
            for variable in v1.global_variables():
                variable.load(weights.normal(0, 0.4, variable.shape).astype(np.float32), session)
            (out / name).mkdir(parents=True)
            saver.save(session, str(out / name / "model.ckpt"), write_meta_graph=False)
            rng = np.random.default_rng(3)
            arrays = {}
            for length in LENGTHS:
                arrays[f"x{length}"] = rng.standard_normal((3, length, FEATURES)).astype(np.float32)
                arrays[f"y{length}"] = session.run(y, {x: arrays[f"x{length}"]})
            np.savez(out / name / "expected.npz", **arrays)
    return dict(v1.train.list_variables(str(out / name / "model.ckpt")))


if __name__ == "__main__":
    v1.disable_v2_behavior()
    target = Path(sys.argv[2])
    manifest = {name: write_one(target, name) for name in FIXTURES}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
