"""Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process.

    write DIR                   write the Keras 2 .h5 fixtures into DIR
    predict MODEL.h5 IN OUT ... load each MODEL.h5 with tf-keras, predict on its IN.npz, save its OUT.npz
"""

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

layers = tf.keras.layers


class Keras2GRU(layers.GRU):
    """Files written before GRU had `reset_after` computed reset_after=False."""

    def __init__(self, *args, reset_after=False, **kwargs):
        super().__init__(*args, reset_after=reset_after, **kwargs)


def write(out: Path) -> None:
    tf.keras.utils.set_random_seed(3)
    inputs = tf.keras.Input((30, 6), name="frames")
    x = layers.LSTM(12, return_sequences=True, name="lstm")(inputs)
    outputs = layers.TimeDistributed(layers.Dense(3), name="scores")(x)
    tf.keras.Model(inputs, outputs).save(out / "fixed_lstm.h5")

    inputs = tf.keras.Input((None, 4), name="signal")
    x = layers.GRU(10, return_sequences=True, recurrent_activation="hard_sigmoid", reset_after=False, name="gru")(inputs)
    outputs = layers.Dense(2, activation="hard_sigmoid", name="gate")(x)
    tf.keras.Model(inputs, outputs).save(out / "hard_sigmoid_gru.h5")

    inputs = tf.keras.Input((None,), name="tokens")
    x = layers.Embedding(40, 8, mask_zero=True, name="embed")(inputs)
    x = layers.Bidirectional(layers.GRU(6, return_sequences=True), name="bigru")(x)
    x = layers.LSTM(5, name="lstm")(x)
    outputs = layers.Dense(3, activation="softmax", name="label")(x)
    tf.keras.Model(inputs, outputs).save(out / "masked_bidirectional.h5")

    model = tf.keras.Sequential([
        tf.keras.Input((None, 3)),
        layers.Masking(mask_value=0.0),
        layers.SimpleRNN(7, return_sequences=True, unroll=False),
        layers.Dense(2),
    ], name="sequential_rnn")
    model.save(out / "sequential_simplernn.h5")


def predict(model_path: Path, inputs_path: Path, out_path: Path) -> None:
    model = tf.keras.models.load_model(model_path, compile=False, custom_objects={"GRU": Keras2GRU})
    with np.load(inputs_path) as data:
        arrays = [data[name] for name in data.files]
    outputs = model(arrays[0] if len(arrays) == 1 else arrays, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    np.savez(out_path, *[np.asarray(o) for o in outputs])


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(Path(sys.argv[2]))
    else:
        paths = [Path(arg) for arg in sys.argv[2:]]
        for model_path, inputs_path, out_path in zip(paths[::3], paths[1::3], paths[2::3]):
            predict(model_path, inputs_path, out_path)
