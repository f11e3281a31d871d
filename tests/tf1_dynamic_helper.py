"""Writes TF1 `dynamic_rnn` graphs as people published them, with the real TF1 classes: inputs of
unknown time and batch, dropout gated by a placeholder, sequence lengths, initial-state
placeholders, time-major tensors and bidirectional runners with lengths.

Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process:

    write DIR     every fixture into DIR: FROZEN as DIR/NAME.pb, CHECKPOINTED as DIR/NAME/model.ckpt

`manifest.json` in DIR lists each one's inputs and output. Every graph's output is `y`.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf1_helper import dense

v1 = tf.compat.v1
rnn_cell = v1.nn.rnn_cell
FEATURES, UNITS, CLASSES, VOCAB = 5, 8, 4, 30


def old_dropout(x, keep_prob):
    """The dropout TF 1.x wrote (and DropoutWrapper inside cutkum): x / keep_prob * floor(keep_prob + U[0, 1))."""
    with v1.name_scope("dropout"):
        noise = keep_prob + v1.random_uniform(tf.shape(x), dtype=x.dtype)
        return v1.div(x, keep_prob) * tf.floor(noise)


def per_step(outputs, units, activation=None):
    """A projection of every step as TF 1.x code wrote it: [batch * time, units] through a dense
    layer, then back to [batch, time, units] by the outputs' dynamic shape."""
    flat = dense(tf.reshape(outputs, [-1, outputs.shape[-1]]), units, activation)
    return tf.reshape(flat, tf.concat([tf.shape(outputs)[:2], [units]], 0))


def scaled_dropout(x, keep_prob):
    """The dropout of TF 1.13 to 1.15: x * (1 / keep_prob) * cast(U[0, 1) >= 1 - keep_prob)."""
    with v1.name_scope("dropout"):
        keep = tf.cast(v1.random_uniform(tf.shape(x), dtype=x.dtype) >= 1.0 - keep_prob, x.dtype)
        return x * (1.0 / keep_prob) * keep


def free_lstm(x):
    """Batch-major input of unknown batch and time; per-step softmax."""
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.BasicLSTMCell(UNITS), x, dtype=tf.float32)
    return per_step(outputs, CLASSES, tf.nn.softmax)


def free_gru_time_major(x):
    """Time-major input [time, batch, F] of unknown sizes, time-major output."""
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), x, dtype=tf.float32, time_major=True)
    return outputs


def dropout_keep_prob(x, keep_prob):
    """DropoutWrapper on every layer of a stack and dropout before the projection, all gated by keep_prob."""
    cells = [rnn_cell.DropoutWrapper(rnn_cell.GRUCell(n), input_keep_prob=keep_prob, output_keep_prob=keep_prob)
             for n in (UNITS, 6)]
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.MultiRNNCell(cells), x, dtype=tf.float32)
    return per_step(v1.nn.dropout(outputs, keep_prob=keep_prob), CLASSES, tf.nn.softmax)


def dropout_with_default(x):
    """Dropout in TF 1.13's and TF 1.0's spellings, gated by a PlaceholderWithDefault named `dropout`."""
    keep_prob = v1.placeholder_with_default(1.0, [], name="dropout")
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.BasicLSTMCell(UNITS), scaled_dropout(x, keep_prob), dtype=tf.float32)
    return per_step(old_dropout(outputs, keep_prob), CLASSES)


def dropout_rate(x):
    """Dropout gated by a rate placeholder, which inference feeds 0 (1 would divide by zero)."""
    rate = v1.placeholder(tf.float32, [], name="dropout_rate")
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), v1.nn.dropout(x, rate=rate), dtype=tf.float32)
    return outputs


def training_flag_dropout(x):
    """tf.layers.dropout before and after the RNN, switched by a training flag (tf.cond)."""
    training = v1.placeholder_with_default(False, [], name="is_training")
    dropped = v1.layers.dropout(x, 0.3, training=training)
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), dropped, dtype=tf.float32)
    return per_step(v1.layers.dropout(outputs, 0.3, training=training), CLASSES, tf.nn.softmax)


def training_flag_keep_prob(x):
    """DropoutWrapper whose keep_prob is computed from a bool training flag, 1 - rate * cast(training)."""
    training = v1.placeholder(tf.bool, [], name="training")
    keep_prob = 1.0 - 0.3 * tf.cast(training, tf.float32)
    cell = rnn_cell.DropoutWrapper(rnn_cell.GRUCell(UNITS), input_keep_prob=keep_prob, output_keep_prob=keep_prob)
    outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
    return per_step(outputs, CLASSES, tf.nn.softmax)


def free_lengths_lstm(x, lengths):
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.LSTMCell(UNITS), x, sequence_length=lengths, dtype=tf.float32)
    return per_step(outputs, CLASSES, tf.nn.softmax)


def initial_state_tuple(x):
    """An LSTM whose (c, h) initial state is two placeholders."""
    c = v1.placeholder(tf.float32, [None, UNITS], name="c_in")
    h = v1.placeholder(tf.float32, [None, UNITS], name="h_in")
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.BasicLSTMCell(UNITS), x, initial_state=rnn_cell.LSTMStateTuple(c, h))
    return outputs


def initial_state_concat(x, lengths):
    """cutkum's graph in small: a time-major stack of two GRUs in DropoutWrapper gated by keep_prob, one
    concatenated initial-state placeholder [1, batch, 8 + 6], sequence lengths and a head mapped over time."""
    keep_prob = v1.placeholder(tf.float32, name="keep_prob")
    state = v1.placeholder(tf.float32, [1, None, UNITS + 6], name="fw_state")
    initial = (state[0, :, :UNITS], state[0, :, UNITS:])
    cells = [rnn_cell.DropoutWrapper(rnn_cell.GRUCell(n), output_keep_prob=keep_prob) for n in (UNITS, 6)]
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.MultiRNNCell(cells), x, sequence_length=lengths, initial_state=initial,
                                   time_major=True)
    w = v1.get_variable("head_w", [6, CLASSES])
    b = v1.get_variable("head_b", [CLASSES], initializer=v1.random_normal_initializer(0, 0.3))
    logits = tf.map_fn(lambda step: tf.sigmoid(tf.matmul(step, w) + b), outputs)
    return tf.nn.softmax(logits)


def bidirectional_lengths(ids, lengths):
    """A character BiLSTM tagger: embedding, bidirectional_dynamic_rnn with lengths (ReverseSequence), logits."""
    embedding = v1.get_variable("chars", [VOCAB, FEATURES])
    x = tf.nn.embedding_lookup(embedding, ids)
    (forward, backward), _ = v1.nn.bidirectional_dynamic_rnn(
        rnn_cell.LSTMCell(UNITS), rnn_cell.LSTMCell(UNITS), x, sequence_length=lengths, dtype=tf.float32)
    return per_step(tf.concat([forward, backward], axis=2), CLASSES)


def fixed_rate_dropout(x):
    """Dropout at a constant rate, which no placeholder switches off: refused."""
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), v1.nn.dropout(x, rate=0.5), dtype=tf.float32)
    return outputs


def trained_tagger(x):
    """A graph saved mid-training: a loss, an optimizer, summaries and argmax predictions beside the
    probabilities, and the final state as a second output."""
    outputs, state = v1.nn.dynamic_rnn(rnn_cell.GRUCell(UNITS), x, dtype=tf.float32)
    logits = per_step(outputs, CLASSES)
    labels = v1.placeholder(tf.int32, [None, None], name="labels")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
    v1.summary.scalar("loss", loss)
    v1.train.AdamOptimizer(0.01).minimize(loss)
    tf.argmax(logits, axis=2, name="predictions")
    tf.identity(state, name="state")
    return tf.nn.softmax(logits)


# name -> (builder, its inputs beyond the data: "lengths", "keep_prob"; time-major; token ids)
FIXTURES = {
    "free_lstm": (free_lstm, (), False, False),
    "free_gru_time_major": (free_gru_time_major, (), True, False),
    "dropout_keep_prob": (dropout_keep_prob, ("keep_prob",), False, False),
    "dropout_with_default": (dropout_with_default, (), False, False),
    "training_flag_dropout": (training_flag_dropout, (), False, False),
    "dropout_rate": (dropout_rate, (), False, False),
    "training_flag_keep_prob": (training_flag_keep_prob, (), False, False),
    "free_lengths_lstm": (free_lengths_lstm, ("lengths",), False, False),
    "initial_state_tuple": (initial_state_tuple, (), False, False),
    "initial_state_concat": (initial_state_concat, ("lengths",), True, False),
    "bidirectional_lengths": (bidirectional_lengths, ("lengths",), False, True),
    "fixed_rate_dropout": (fixed_rate_dropout, (), False, False),
    "trained_tagger": (trained_tagger, (), False, False),
}
FROZEN = ("free_lstm", "free_gru_time_major", "dropout_with_default", "initial_state_tuple", "initial_state_concat",
          "bidirectional_lengths", "fixed_rate_dropout", "training_flag_dropout",
          "dropout_rate", "training_flag_keep_prob")
CHECKPOINTED = ("free_lstm", "dropout_keep_prob", "free_lengths_lstm", "bidirectional_lengths", "trained_tagger")


def write_one(out: Path, name: str, frozen: bool) -> dict:
    build, extra, time_major, ids = FIXTURES[name]
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(7)
        if ids:
            inputs = [v1.placeholder(tf.int32, [None, None], name="ids")]
        else:
            inputs = [v1.placeholder(tf.float32, [None, None, FEATURES], name="x")]
        if "lengths" in extra:
            inputs.append(v1.placeholder(tf.int32, [None], name="lengths"))
        if "keep_prob" in extra:
            inputs.append(v1.placeholder(tf.float32, [], name="keep_prob"))
        y = tf.identity(build(*inputs), name="y")
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            if frozen:
                graph_def = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["y"])
                (out / f"{name}.pb").write_bytes(graph_def.SerializeToString())
            else:
                (out / name).mkdir(parents=True, exist_ok=True)
                v1.train.Saver().save(session, str(out / name / "model.ckpt"))
    return {"inputs": [t.name for t in inputs], "output": y.name, "time_major": time_major}


def unknown_rank(source: Path, target: Path) -> None:
    """A copy of a frozen graph whose input placeholder and TensorArrays have no shape, as graphs
    frozen by early TF 1.x often hold them."""
    graph_def = v1.GraphDef()
    graph_def.ParseFromString(source.read_bytes())
    for node in graph_def.node:
        for key in ("shape", "element_shape"):
            if key in node.attr and (node.op == "TensorArrayV3" or node.name == "x"):
                node.attr[key].shape.Clear()
                node.attr[key].shape.unknown_rank = True
    target.write_bytes(graph_def.SerializeToString())


if __name__ == "__main__":
    np.random.seed(0)
    v1.disable_v2_behavior()
    target = Path(sys.argv[2])
    manifest = {f"{name}.pb": write_one(target, name, True) for name in FROZEN}
    manifest.update({name: write_one(target, name, False) for name in CHECKPOINTED})
    unknown_rank(target / "free_lstm.pb", target / "unknown_rank_lstm.pb")
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
