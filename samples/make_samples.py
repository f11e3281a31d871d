"""Write the bundled sample models. Run from the repository root with the test extra installed:

    .venv/bin/python samples/make_samples.py

The Keras 3 samples are built in this process; the Keras 2 `.h5` sample is written by tf-keras in
a subprocess (TF_USE_LEGACY_KERAS=1), exactly as a model saved with tf.keras before TF 2.16 is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def keras3_samples() -> None:
    import keras

    keras.utils.set_random_seed(7)
    layers = keras.layers

    inputs = keras.Input((None, 8), name="features")
    x = layers.LSTM(24, return_sequences=True, name="lstm")(inputs)
    outputs = layers.TimeDistributed(layers.Dense(5), name="scores")(x)
    keras.Model(inputs, outputs, name="lstm_variable").save(HERE / "lstm_variable.keras")

    inputs = keras.Input((50, 6), name="sensor")
    x = layers.GRU(16, return_sequences=True, name="gru_1")(inputs)
    x = layers.GRU(16, name="gru_2")(x)
    outputs = layers.Dense(3, activation="softmax", name="label")(x)
    keras.Model(inputs, outputs, name="gru_fixed").save(HERE / "gru_fixed.keras")

    inputs = keras.Input((20, 4), name="signal")
    x = layers.LSTM(12, return_sequences=True, unroll=True, name="lstm")(inputs)
    x = layers.SimpleRNN(8, return_sequences=True, unroll=True, name="rnn")(x)
    outputs = layers.Dense(2, name="out")(x)
    keras.Model(inputs, outputs, name="lstm_unrolled").save(HERE / "lstm_unrolled.keras")


def keyword_spotter_sample() -> None:
    """A keyword spotter's shape: causal convolutions over 10 MFCCs per frame (the second dilated),
    a GRU, a score per keyword and frame; it streams frame by frame with each window as state."""
    import keras

    keras.utils.set_random_seed(5)
    layers = keras.layers
    inputs = keras.Input((None, 10), name="mfcc")
    x = layers.Conv1D(16, 3, padding="causal", activation="relu", name="conv1d")(inputs)
    x = layers.Conv1D(16, 3, padding="causal", dilation_rate=2, activation="relu", name="conv1d_dilated")(x)
    x = layers.GRU(24, return_sequences=True, name="gru")(x)
    outputs = layers.Dense(4, activation="softmax", name="keyword")(x)
    keras.Model(inputs, outputs, name="kws_conv_gru").save(HERE / "kws_conv_gru.keras")


def tf_keras_samples() -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(11)
    layers = tf.keras.layers
    inputs = tf.keras.Input((None,), dtype="int32", name="tokens")
    x = layers.Embedding(100, 16, mask_zero=True, name="embed")(inputs)
    x = layers.Bidirectional(layers.LSTM(16, return_sequences=True), name="bilstm")(x)
    x = layers.Bidirectional(layers.GRU(8, return_sequences=True), name="bigru")(x)
    outputs = layers.TimeDistributed(layers.Dense(4), name="tags")(x)
    tf.keras.Model(inputs, outputs, name="bidirectional_stack").save(HERE / "bidirectional_stack.h5")


if __name__ == "__main__":
    if "--tf-keras" in sys.argv:
        tf_keras_samples()
    else:
        keras3_samples()
        keyword_spotter_sample()
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
        subprocess.run([sys.executable, __file__, "--tf-keras"], check=True, env=env)
