"""Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process.

    write DIR    write TF2 SavedModels as tf.keras 2.x users have them into DIR/<name>/

Keras models go through `model.save(dir)` (with `keras_metadata.pb`); the others through
`tf.saved_model.save` (no Keras metadata, only functions and variables). TF2 frozen graphs
(`convert_variables_to_constants_v2` of a model's concrete function, as TF2 serving and TFLite
pipelines write them) go to DIR/<name>.pb, with their loops lowered to TF1 control flow over
TensorLists or kept as functional While ops.
"""

import sys
from pathlib import Path

import tensorflow as tf

layers = tf.keras.layers


def keras_models() -> dict:
    """name -> model, saved with model.save (keras_metadata.pb holds each config)."""
    inputs = tf.keras.Input((None, 3), name="signal")
    x = layers.LSTM(6, return_sequences=True, name="lstm")(inputs)
    lstm = tf.keras.Model(inputs, layers.Dense(2, name="head")(x))
    stacked = tf.keras.Sequential([
        tf.keras.Input((6, 4)),
        layers.GRU(5, return_sequences=True, reset_after=True),
        layers.GRU(4, return_sequences=True, reset_after=False),
        layers.SimpleRNN(3, return_sequences=True),
        layers.Dense(3, activation="relu"),
        layers.Dense(1),
    ], name="stacked")
    inputs = tf.keras.Input((None, 3), name="tokens")
    x = layers.Bidirectional(layers.LSTM(4, return_sequences=True), name="bilstm")(inputs)
    bidirectional = tf.keras.Model(inputs, layers.Dense(2, name="tag")(x))
    return {"lstm": lstm, "stacked_fixed": stacked, "bidirectional": bidirectional}


class RecurrentModule(tf.Module):
    """tf.functions around Keras recurrent layers: no Keras metadata, only the function. Every
    loop body kind: GRU with reset_after True then False, SimpleRNN, LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.stack = [layers.GRU(5, return_sequences=True, reset_after=True),
                      layers.GRU(4, return_sequences=True, reset_after=False),
                      layers.SimpleRNN(3, return_sequences=True),
                      layers.LSTM(4, return_sequences=True),
                      layers.Dense(2)]
        tf.keras.Sequential([tf.keras.Input((None, 3)), *self.stack])

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32, name="x")])
    def __call__(self, x):
        for layer in self.stack:
            x = layer(x)
        return {"y": x}


class ReadsFiles(RecurrentModule):
    """A loop model that also reads a file when it runs: never to be run on a file from elsewhere."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32, name="x")])
    def __call__(self, x):
        size = tf.cast(tf.strings.length(tf.io.read_file("/etc/hostname")), tf.float32)
        return {"y": self.stack[-1](self.stack[-2](x)) * size}


class Accumulates(tf.Module):
    """A While loop that is no recurrent layer: a running sum over time (tf.scan)."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.transpose(tf.scan(lambda total, step: total + step, tf.transpose(x, [1, 0, 2])), [1, 0, 2])}


class StatefulCall(tf.keras.Model):
    """A subclassed model whose call takes the initial state as a second input."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = layers.GRU(4, return_sequences=True, return_state=True)
        self.dense = layers.Dense(2)

    def call(self, inputs):
        x, state = inputs
        sequence, final = self.gru(x, initial_state=state)
        return self.dense(sequence), final


def frozen_models() -> dict:
    """name -> (model, lower_control_flow) for the TF2 frozen graphs."""
    inputs = tf.keras.Input((None, 3), name="x")
    x = layers.LSTM(4, return_sequences=True)(inputs)
    lstm = tf.keras.Model(inputs, layers.Dense(2)(x))
    inputs = tf.keras.Input((None, 3), name="x")
    gru = tf.keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.GRU(5)(inputs)))
    inputs = tf.keras.Input((6, 3), name="x")
    fixed = tf.keras.Model(inputs, layers.Dense(2)(layers.LSTM(4)(inputs)))
    # A Flatten over every step ties the model to its 6 steps.
    inputs = tf.keras.Input((6, 3), name="x")
    x = layers.Flatten()(layers.LSTM(4, return_sequences=True)(inputs))
    flatten = tf.keras.Model(inputs, layers.Dense(2)(x))
    return {"frozen_lstm_lowered": (lstm, True), "frozen_gru_while": (gru, False),
            "frozen_lstm_fixed": (fixed, True), "frozen_flatten": (flatten, True)}


def freeze(out: Path) -> None:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    for name, (model, lower) in frozen_models().items():
        function = tf.function(model).get_concrete_function(tf.TensorSpec(model.input.shape, tf.float32, name="x"))
        frozen = convert_variables_to_constants_v2(function, lower_control_flow=lower)
        (out / f"{name}.pb").write_bytes(frozen.graph.as_graph_def().SerializeToString())


def write(out: Path) -> None:
    tf.keras.utils.set_random_seed(5)
    for name, model in keras_models().items():
        model.save(out / name)
    for name, cls in (("module_stack", RecurrentModule), ("reads_files", ReadsFiles), ("running_sum", Accumulates)):
        module = cls()
        tf.saved_model.save(module, str(out / name), signatures=module.__call__)
    model = StatefulCall()
    spec = [tf.TensorSpec([None, None, 3], tf.float32, name="x"), tf.TensorSpec([None, 4], tf.float32, name="h")]
    model(*[[tf.zeros([1, 2, 3]), tf.zeros([1, 4])]])
    serve = tf.function(lambda x, h: model([x, h]), input_signature=spec)
    model.save(out / "subclassed_state", signatures=serve)
    # A signature that reads only the steps it was traced for: its graph cannot serve others.
    inputs = tf.keras.Input((6, 3), name="steps")
    bound = tf.keras.Model(inputs, layers.GRU(3, return_sequences=True)(inputs))
    serve = tf.function(lambda steps: bound(steps[:, :6]), input_signature=[tf.TensorSpec([None, 6, 3], name="steps")])
    bound.save(out / "bound_signature", signatures=serve)
    freeze(out)


if __name__ == "__main__":
    write(Path(sys.argv[2]))
