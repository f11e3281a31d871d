"""Writes Keras recurrent models frozen into TF1 GraphDefs, as Keras 2.x on the TensorFlow backend
froze them ("keras to tensorflow" scripts): the layers built by tf-keras in TF1 graph mode, where
`K.rnn` traces the recurrence as a `tf.while_loop` over TensorArrays (or, with `unroll=True`, as
static copies of the step), then every variable turned into a constant.

Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process:

    write DIR [NAME ...]    write DIR/NAME.pb (all of them, or the named ones) and DIR/manifest.json

Every graph reads `x` [batch, 6, 3] floats (`ids` [batch, 6] token ids fed as floats to an
Embedding, which casts them, where the name says so) and returns the Dense layer's output `y`.
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
            feed = model.inputs[0]
            rng = np.random.default_rng(0)
            probe = (rng.integers(0, VOCAB, (2, LENGTH)) if MODELS[name][1]
                     else rng.standard_normal((2, LENGTH, FEATURES))).astype(np.float32)
            expected = session.run(model.outputs[0], {feed: probe})
        (out / f"{name}.pb").write_bytes(frozen.SerializeToString())
        manifest[name] = {"input": feed.name, "output": f"{output}:0", "shape": list(expected.shape)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    command, directory, *chosen = sys.argv[1:]
    assert command == "write", command
    write(Path(directory), chosen or list(MODELS))
