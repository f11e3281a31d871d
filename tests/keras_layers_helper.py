"""Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process.

    write DIR    write one `.h5` fixture per layer construct into DIR, each with `<name>.npz` holding
                 inputs `x` and what tf-keras itself predicts on them from the file (`y0`, ...)

The constructs: Flatten after an RNN that returns its last step (nothing to fold), Flatten after
an RNN that returns every step (folds time into features), Conv2D over (time, frequency) followed
by the three ways to bring each step back to a vector (Reshape, TimeDistributed(Flatten), a custom
squeeze layer), valid Conv2D and MaxPooling2D (a minimum length), a per-step Reshape spelled with
the fixed length, and a model saved under the `mixed_float16` policy.
"""

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

keras = tf.keras
layers = keras.layers


class Squeeze(layers.Layer):
    """A custom layer, like crema's SqueezeLayer: drops one axis of size 1."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        return tf.squeeze(inputs, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def record(path, x, **extra):
    """What tf-keras computes from the file as written."""
    model = keras.models.load_model(path, compile=False, custom_objects={"Squeeze": Squeeze})
    outputs = model(x, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    np.savez(path.with_suffix(".npz"), x=x, **{f"y{i}": np.asarray(o) for i, o in enumerate(outputs)}, **extra)


def _moved_statistics(model):
    """Batch-normalisation statistics away from (0, 1), so reading them wrong shows."""
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in layer.get_weights()])


def conv_over_frequency():
    x = keras.Input((None, 8, 2), name="spectrum")
    h = layers.BatchNormalization(name="bn_in")(x)
    h = layers.Conv2D(3, (3, 3), padding="same", activation="relu", name="conv_same")(h)
    h = layers.BatchNormalization(name="bn_conv")(h)
    by_reshape = layers.Reshape((-1, 24), name="per_step")(h)
    by_flatten = layers.TimeDistributed(layers.Flatten(), name="td_flatten")(h)
    by_squeeze = Squeeze(axis=2, name="squeeze")(layers.Conv2D(4, (1, 8), name="conv_freq")(h))
    h = layers.Concatenate(name="concat")([by_reshape, by_flatten, by_squeeze])
    h = layers.Bidirectional(layers.GRU(4, return_sequences=True, name="gru"), name="bigru")(h)
    tags = layers.TimeDistributed(layers.Dense(2), name="tags")(h)
    chords = layers.Dense(3, activation="softmax", name="chords")(h)
    model = keras.Model(x, [tags, chords])
    _moved_statistics(model)
    return model


def write(out):
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)

    model = keras.Sequential([keras.Input((6, 3), name="prices"), layers.LSTM(5, name="lstm"),
                              layers.Flatten(name="flatten"), layers.Dense(2, name="dense")])
    model.save(out / "flatten_last_step.h5")
    record(out / "flatten_last_step.h5", rng.normal(size=(2, 6, 3)).astype("float32"))

    model = keras.Sequential([keras.Input((6, 3), name="prices"), layers.LSTM(5, return_sequences=True, name="lstm"),
                              layers.Flatten(name="flatten"), layers.Dense(2, name="dense")])
    model.save(out / "flatten_every_step.h5")

    conv_over_frequency().save(out / "conv_same.h5")
    record(out / "conv_same.h5", rng.normal(size=(2, 7, 8, 2)).astype("float32"))

    model = keras.Sequential([
        keras.Input((None, 8, 1), name="spectrum"),
        layers.Conv2D(2, (3, 3), padding="valid", name="conv_valid"),
        layers.MaxPooling2D((2, 2), name="pool"),
        layers.Reshape((-1, 6), name="per_step"),
        layers.LSTM(4, name="lstm"),
        layers.Dense(1, name="dense"),
    ])
    model.save(out / "conv_valid_pool.h5")
    record(out / "conv_valid_pool.h5", rng.normal(size=(2, 9, 8, 1)).astype("float32"))

    model = keras.Sequential([
        keras.Input((6, 4, 2), name="spectrum"),
        layers.Conv2D(3, (1, 3), padding="same", name="conv"),
        layers.Reshape((6, 12), name="per_step"),
        layers.GRU(4, return_sequences=True, name="gru"),
    ])
    model.save(out / "reshape_fixed.h5")
    record(out / "reshape_fixed.h5", rng.normal(size=(2, 6, 4, 2)).astype("float32"))

    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential([keras.Input((None, 4), name="x"), layers.LSTM(8, return_sequences=True, name="lstm"),
                              layers.Dense(3, name="dense"), layers.Activation("linear", dtype="float32", name="out")])
    keras.mixed_precision.set_global_policy("float32")
    model.save(out / "mixed_float16.h5")
    # The same layers computing in float32, which is what the rebuilt model must compute.
    exact = keras.Sequential([keras.Input((None, 4), name="x"), layers.LSTM(8, return_sequences=True, name="lstm"),
                              layers.Dense(3, name="dense"), layers.Activation("linear", name="out")])
    exact.set_weights(model.get_weights())
    x = rng.normal(size=(2, 9, 4)).astype("float32")
    record(out / "mixed_float16.h5", x, float32=np.asarray(exact(x)))


if __name__ == "__main__":
    write(Path(sys.argv[2]))
