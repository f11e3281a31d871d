"""Writes TF1 graphs of the constructs published models use beside the common ones, with the real
TF1 classes: one cell object given to both directions of a bidirectional runner (the two share
its weights), and cells whose state is one concatenated tensor (`state_is_tuple=False`).

Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process:

    write DIR     every fixture into DIR: FROZEN as DIR/NAME.pb, CHECKPOINTED as DIR/NAME/model.ckpt,
                  and DIR/iterator_savedmodel, a TF1 SavedModel fed by a dataset iterator

`manifest.json` in DIR lists each one's inputs and output. Every graph's output is `y`.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf1_dynamic_helper import per_step
from tf1_helper import dense

v1 = tf.compat.v1
rnn_cell = v1.nn.rnn_cell
LENGTH, FEATURES, UNITS, CLASSES = 6, 5, 8, 3


def shared_gru_bidirectional(x, lengths):
    """sertis's tagger in small: bidirectional_dynamic_rnn given the same GRUCell twice, with lengths."""
    cell = rnn_cell.GRUCell(UNITS)
    (forward, backward), _ = v1.nn.bidirectional_dynamic_rnn(cell, cell, x, sequence_length=lengths,
                                                             dtype=tf.float32)
    return per_step(tf.concat([forward, backward], axis=2), CLASSES)


def shared_lstm_bidirectional(x):
    cell = rnn_cell.LSTMCell(UNITS)
    (forward, backward), _ = v1.nn.bidirectional_dynamic_rnn(cell, cell, x, dtype=tf.float32)
    return tf.concat([forward, backward], axis=2)


def shared_static_bidirectional(x):
    """static_bidirectional_rnn given the same BasicLSTMCell twice, over LENGTH unstacked steps."""
    cell = rnn_cell.BasicLSTMCell(UNITS)
    outputs, _, _ = v1.nn.static_bidirectional_rnn(cell, cell, tf.unstack(x, LENGTH, axis=1), dtype=tf.float32)
    return tf.stack(outputs, axis=1)


def concat_state_static(x):
    """aplain's regression in small: static_rnn over BasicLSTMCell(state_is_tuple=False) from an
    initial-state placeholder [batch, 2u] (c and h side by side), a dense layer on the last output."""
    state = v1.placeholder(tf.float32, [None, 2 * UNITS], name="istate")
    cell = rnn_cell.BasicLSTMCell(UNITS, state_is_tuple=False)
    steps = [tf.reshape(step, [-1, FEATURES]) for step in tf.split(x, LENGTH, axis=1)]
    outputs, _ = v1.nn.static_rnn(cell, steps, initial_state=state)
    return dense(outputs[-1], 1)


def concat_state_stack(x):
    """MultiRNNCell(state_is_tuple=False) under dynamic_rnn: an LSTM with a concatenated state and a
    GRU, their states one [batch, 2u + 6] tensor, which starts from a placeholder."""
    state = v1.placeholder(tf.float32, [None, 2 * UNITS + 6], name="stack_state")
    cells = [rnn_cell.BasicLSTMCell(UNITS, state_is_tuple=False), rnn_cell.GRUCell(6)]
    outputs, _ = v1.nn.dynamic_rnn(rnn_cell.MultiRNNCell(cells, state_is_tuple=False), x, initial_state=state)
    return outputs


# name -> (builder, takes lengths, fixed length)
FIXTURES = {
    "shared_gru_bidirectional": (shared_gru_bidirectional, True, False),
    "shared_lstm_bidirectional": (shared_lstm_bidirectional, False, False),
    "shared_static_bidirectional": (shared_static_bidirectional, False, True),
    "concat_state_static": (concat_state_static, False, True),
    "concat_state_stack": (concat_state_stack, False, False),
}
FROZEN = tuple(FIXTURES)
CHECKPOINTED = ("shared_gru_bidirectional", "concat_state_static", "concat_state_stack")


def write_one(out: Path, name: str, frozen: bool) -> dict:
    build, lengths, fixed = FIXTURES[name]
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(7)
        inputs = [v1.placeholder(tf.float32, [None, LENGTH if fixed else None, FEATURES], name="x")]
        if lengths:
            inputs.append(v1.placeholder(tf.int32, [None], name="lengths"))
        y = tf.identity(build(*inputs), name="y")
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            if frozen:
                graph_def = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["y"])
                (out / f"{name}.pb").write_bytes(graph_def.SerializeToString())
            else:
                (out / name).mkdir(parents=True, exist_ok=True)
                v1.train.Saver().save(session, str(out / name / "model.ckpt"))
    return {"inputs": [t.name for t in inputs], "output": y.name}


def iterator_savedmodel(out: Path) -> None:
    """sertis's SavedModel in small (TF1 builder, no Keras): the sequence and its int64 lengths come
    from a dataset iterator, which the serving signature maps as `inputs` and `lengths`; one GRUCell
    serves both directions; the signature returns the argmax labels of the unpadded steps, flat."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(7)
        shapes = (tf.TensorShape([None, None, FEATURES]), tf.TensorShape([None]))
        data = tf.data.Dataset.from_generator(lambda: iter(()), (tf.float32, tf.int64), shapes)
        x, lengths = v1.data.make_one_shot_iterator(data).get_next()
        cell = rnn_cell.GRUCell(UNITS)
        (forward, backward), _ = v1.nn.bidirectional_dynamic_rnn(cell, cell, x, sequence_length=lengths,
                                                                 dtype=tf.float32)
        scores = per_step(tf.concat([forward, backward], axis=2), CLASSES)
        labels = tf.boolean_mask(tf.argmax(scores, axis=2), tf.sequence_mask(lengths))
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.builder.SavedModelBuilder(str(out / "iterator_savedmodel"))
            signature = v1.saved_model.signature_def_utils.predict_signature_def(
                {"inputs": x, "lengths": lengths}, {"outputs": labels})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()


if __name__ == "__main__":
    np.random.seed(0)
    v1.disable_v2_behavior()
    target = Path(sys.argv[2])
    manifest = {f"{name}.pb": write_one(target, name, True) for name in FROZEN}
    manifest.update({name: write_one(target, name, False) for name in CHECKPOINTED})
    iterator_savedmodel(target)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
