"""Keras 3 models for every layer kind the Keras source supports, built with seeded weights."""

from __future__ import annotations

from collections.abc import Callable

import keras

L = keras.layers


def _model(inputs, outputs, name: str) -> keras.Model:
    return keras.Model(inputs, outputs, name=name)


def lstm():
    i = keras.Input((None, 5), name="x")
    return _model(i, L.LSTM(8, return_sequences=True, name="lstm")(i), "lstm")


def gru_reset_after():
    i = keras.Input((None, 5), name="x")
    return _model(i, L.GRU(8, return_sequences=True, reset_after=True, name="gru")(i), "gru_reset_after")


def gru_reset_before():
    i = keras.Input((None, 5), name="x")
    return _model(i, L.GRU(8, return_sequences=True, reset_after=False, name="gru")(i), "gru_reset_before")


def simple_rnn():
    i = keras.Input((None, 5), name="x")
    return _model(i, L.SimpleRNN(8, return_sequences=True, name="rnn")(i), "simple_rnn")


def bidirectional_stack():
    i = keras.Input((None, 5), name="x")
    x = L.Bidirectional(L.LSTM(6, return_sequences=True), name="bilstm")(i)
    x = L.Bidirectional(L.GRU(5), merge_mode="sum", name="bigru")(x)
    return _model(i, L.Dense(3, name="out")(x), "bidirectional_stack")


def stacked():
    i = keras.Input((None, 5), name="x")
    x = L.LSTM(8, return_sequences=True, name="lstm")(i)
    x = L.GRU(8, return_sequences=True, name="gru")(x)
    return _model(i, L.SimpleRNN(4, name="rnn")(x), "stacked")


def last_step():
    i = keras.Input((None, 5), name="x")
    x = L.LSTM(8, name="lstm")(i)
    return _model(i, L.Dense(3, activation="softmax", name="probs")(x), "last_step")


def return_state():
    i = keras.Input((None, 5), name="x")
    seq, h, c = L.LSTM(8, return_sequences=True, return_state=True, name="lstm")(i)
    return _model(i, [seq, h, c], "return_state")


def masking():
    i = keras.Input((None, 5), name="x")
    x = L.Masking(mask_value=0.0, name="mask")(i)
    x = L.LSTM(8, return_sequences=True, name="lstm")(x)
    return _model(i, L.Dense(2, name="out")(x), "masking")


def embedding():
    i = keras.Input((None,), dtype="int32", name="tokens")
    x = L.Embedding(50, 8, name="embed")(i)
    x = L.GRU(8, return_sequences=True, name="gru")(x)
    return _model(i, L.TimeDistributed(L.Dense(4), name="tags")(x), "embedding")


def embedding_mask_zero():
    i = keras.Input((None,), dtype="int32", name="tokens")
    x = L.Embedding(50, 8, mask_zero=True, name="embed")(i)
    x = L.LSTM(8, name="lstm")(x)
    return _model(i, L.Dense(2, name="out")(x), "embedding_mask_zero")


def time_distributed():
    i = keras.Input((None, 5), name="x")
    x = L.TimeDistributed(L.Dense(6, activation="relu"), name="td_in")(i)
    x = L.SimpleRNN(6, return_sequences=True, name="rnn")(x)
    return _model(i, L.TimeDistributed(L.Dense(2), name="td_out")(x), "time_distributed")


def fixed_length():
    i = keras.Input((12, 5), name="x")
    x = L.GRU(8, return_sequences=True, name="gru")(i)
    return _model(i, L.Dense(2, name="out")(x), "fixed_length")


def unrolled():
    i = keras.Input((10, 5), name="x")
    x = L.LSTM(8, return_sequences=True, unroll=True, name="lstm")(i)
    return _model(i, L.SimpleRNN(4, unroll=True, name="rnn")(x), "unrolled")


def multi_input():
    """Features and token ids in, a per-step and a per-sequence output."""
    audio = keras.Input((None, 4), name="audio")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = L.Concatenate(name="cat")([audio, L.Embedding(20, 4, name="embed")(tokens)])
    x = L.GRU(6, return_sequences=True, name="gru")(x)
    return _model([audio, tokens], [L.Dense(3, name="frame")(x), L.LSTM(5, name="summary")(x)], "multi_input")


def sequential():
    return keras.Sequential([keras.Input((None, 5)), L.LSTM(6, return_sequences=True), L.Dense(2)], name="sequential")


KINDS: dict[str, Callable[[], keras.Model]] = {
    f.__name__: f
    for f in (
        lstm, gru_reset_after, gru_reset_before, simple_rnn, bidirectional_stack, stacked, last_step,
        return_state, masking, embedding, embedding_mask_zero, time_distributed, fixed_length, unrolled,
        multi_input, sequential,
    )
}


def build(kind: str) -> keras.Model:
    keras.utils.set_random_seed(1)
    return KINDS[kind]()


@keras.saving.register_keras_serializable(package="rnnexport_tests")
def running_product(x):
    """A TensorFlow op TFLite has only as a Flex op (Cumprod): exporting it needs select ops."""
    import tensorflow as tf

    return tf.math.cumprod(x, axis=1)


def flex_op():
    """Not in KINDS: a Lambda layer needs --unsafe, and its op needs TFLite's Flex delegate."""
    i = keras.Input((None, 3), name="x")
    x = L.Lambda(running_product, name="cumprod")(i)
    return _model(i, L.GRU(4, return_sequences=True, name="gru")(x), "flex_op")
