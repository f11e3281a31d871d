"""Writes Keras recurrent models frozen into TF1 GraphDefs, as Keras 2.x on the TensorFlow backend
froze them ("keras to tensorflow" scripts): the layers built by tf-keras in TF1 graph mode, where
`K.rnn` traces the recurrence as a `tf.while_loop` over TensorArrays (or, with `unroll=True`, as
static copies of the step), then every variable turned into a constant.

Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process:

    write DIR [NAME ...]    write DIR/NAME.pb (all of them, or the named ones) and DIR/manifest.json

Every graph reads `x` [batch, 6, 3] floats (`ids` [batch, 6] token ids fed as floats to an
Embedding, which casts them, where the name says so) and returns the Dense layer's output `y`;
`keras22_written` holds the forms of Keras 2.0-2.3 that tf-keras no longer traces (see `keras22`).
"""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

LENGTH, FEATURES, VOCAB = 6, 3, 20

# name: (layers, each (class, units, options), embedded ids?). Every layer but the last returns
# sequences; units equal to the width read make both kernels square, as in the corpus's LM.
MODELS = {
    # The corpus model's shape: an Embedding of float ids, per-gate LSTMs with hard_sigmoid gates,
    # the last step projected.
    "lstm_lm": ([("LSTM", 3, {"implementation": 1, "recurrent_activation": "hard_sigmoid"}),
                 ("LSTM", 4, {"implementation": 1, "recurrent_activation": "hard_sigmoid"})], True),
    # Every GRU form, an LSTM without biases and SimpleRNNs, each in K.rnn's while loop.
    "loop_stack": ([("GRU", 3, {"implementation": 1, "reset_after": False, "recurrent_activation": "hard_sigmoid"}),
                    ("GRU", 4, {"implementation": 2, "reset_after": True, "use_bias": False,
                                "recurrent_activation": "hard_sigmoid"}),
                    ("GRU", 4, {"implementation": 1, "reset_after": True}),
                    ("GRU", 3, {"implementation": 2, "reset_after": False}),
                    ("LSTM", 5, {"implementation": 2, "use_bias": False}),
                    ("SimpleRNN", 3, {}),
                    ("SimpleRNN", 3, {"activation": "relu"})], False),
    # unroll=True: static copies of each step.
    "unrolled": ([("LSTM", 3, {"implementation": 1, "recurrent_activation": "hard_sigmoid", "unroll": True}),
                  ("GRU", 3, {"implementation": 2, "reset_after": False, "unroll": True}),
                  ("SimpleRNN", 3, {"unroll": True})], False),
}


def build(name):
    import tf_keras as keras

    specs, embedded = MODELS[name]
    keras.utils.set_random_seed(7)
    if embedded:
        inputs = keras.Input((LENGTH,), name="ids", dtype="float32")
        y = keras.layers.Embedding(VOCAB, FEATURES)(inputs)
    else:
        inputs = keras.Input((LENGTH, FEATURES), name="x")
        y = inputs
    for index, (kind, units, options) in enumerate(specs):
        sequences = index < len(specs) - 1 or not embedded
        layer = getattr(keras.layers, kind)(units, bias_initializer="random_normal", return_sequences=sequences,
                                            **options)
        y = layer(y)
    return keras.Model(inputs, keras.layers.Dense(2, name="y")(y))


def write(out, names):
    v1 = tf.compat.v1
    # TF1 behaviour, as Keras 2.x had it: while loops of Enter/Merge/Switch over TensorArrayV3, and
    # tf-keras's v1 layers (its LSTM and GRU without the cuDNN-selecting functions).
    v1.disable_v2_behavior()
    manifest = {}
    for name in names:
        graph = tf.Graph()
        with graph.as_default():
            model = build(name)
            session = v1.keras.backend.get_session()
            output = model.outputs[0].op.name
            frozen = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), [output])
        (out / f"{name}.pb").write_bytes(frozen.SerializeToString())
        manifest[name] = {"input": model.inputs[0].name, "output": f"{output}:0"}
    (out / f"{WRITTEN}.pb").write_bytes(keras22().SerializeToString())
    manifest[WRITTEN] = {"input": "x:0", "output": "y:0"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


# Keras 2.0-2.3's own forms, which tf-keras no longer traces: weights sliced once before the loop,
# implementation=2's gate product cut by strided slices (z[:, :units]), the initial state
# tile(expand_dims(sum(zeros_like(x)))), hard_sigmoid by clip_by_value. Written out op by op as
# keras/backend/tensorflow_backend.py's K.rnn and keras/layers/recurrent.py's cells (2.2.4) emit them.
WRITTEN = "keras22_written"


def _hard_sigmoid(x):
    return tf.clip_by_value(x * 0.2 + 0.5, 0.0, 1.0)


def _k_rnn(step, x, states):
    """K.rnn: time-major TensorArrays read and written in a while loop, the outputs restacked."""
    steps = tf.transpose(x, [1, 0, 2])
    count = tf.shape(steps)[0]
    inputs = tf.TensorArray(tf.float32, count).unstack(steps)

    def body(time, outputs, *state):
        output, state = step(inputs.read(time), list(state))
        return (time + 1, outputs.write(time, output), *state)

    loop = tf.compat.v1.while_loop(lambda time, *_: time < count, body,
                                   (tf.constant(0), tf.TensorArray(tf.float32, count), *states))
    return tf.transpose(loop[1].stack(), [1, 0, 2])


def _zero_state(x, units):
    return tf.tile(tf.expand_dims(tf.reduce_sum(tf.zeros_like(x), axis=(1, 2)), -1), [1, units])


def keras22():
    """x [batch, 6, 3] -> LSTM(3, implementation=2) -> GRU(3, implementation=2, reset_after=False)
    -> per-step MatMul `y`, hard_sigmoid gates, weights as constants."""
    rng = np.random.default_rng(1)
    units = 3

    def weights(width):
        return [tf.constant(rng.standard_normal(shape).astype(np.float32), name=name)
                for name, shape in (("kernel", (FEATURES, width)), ("recurrent_kernel", (units, width)),
                                    ("bias", (width,)))]

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, LENGTH, FEATURES], name="x")
        with tf.name_scope("lstm_1"):
            kernel, recurrent, bias = weights(4 * units)

            def lstm(inputs, state):
                h, c = state
                z = tf.nn.bias_add(tf.matmul(inputs, kernel) + tf.matmul(h, recurrent), bias)
                i, f, o = (_hard_sigmoid(z[:, g * units:(g + 1) * units]) for g in (0, 1, 3))
                c = f * c + i * tf.tanh(z[:, 2 * units:3 * units])
                h = o * tf.tanh(c)
                return h, [h, c]

            y = _k_rnn(lstm, x, [_zero_state(x, units), _zero_state(x, units)])
        with tf.name_scope("gru_1"):
            kernel, recurrent, bias = weights(3 * units)
            recurrent_zr, recurrent_h = recurrent[:, :2 * units], recurrent[:, 2 * units:]

            def gru(inputs, state):
                h, = state
                matrix_x = tf.nn.bias_add(tf.matmul(inputs, kernel), bias)
                matrix_inner = tf.matmul(h, recurrent_zr)
                z = _hard_sigmoid(matrix_x[:, :units] + matrix_inner[:, :units])
                r = _hard_sigmoid(matrix_x[:, units:2 * units] + matrix_inner[:, units:2 * units])
                hh = tf.tanh(matrix_x[:, 2 * units:] + tf.matmul(r * h, recurrent_h))
                h = z * h + (1 - z) * hh
                return h, [h]

            y = _k_rnn(gru, y, [_zero_state(y, units)])
        dense = tf.constant(rng.standard_normal((units, 2)).astype(np.float32))
        tf.identity(tf.matmul(tf.reshape(y, [-1, units]), dense), name="y")
    return graph.as_graph_def()


if __name__ == "__main__":
    command, directory, *chosen = sys.argv[1:]
    assert command == "write", command
    write(Path(directory), chosen or list(MODELS))
