"""Keras recurrent layers described in the RecurrentModel's canonical terms, and traced with
a replacement so that targets can emit fused ops."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from rnnexport.model import DirectionWeights, LayerCall, Recurrence, Replacement
from rnnexport.tf import tensorflow

CELLS = {"LSTM": ("lstm", 4), "GRU": ("gru", 3), "SimpleRNN": ("rnn", 1)}
MERGE_MODES = ("concat", "sum", "mul", "ave")


def is_recurrent(layer: Any) -> bool:
    kind = type(layer).__name__
    return kind in CELLS or (kind == "Bidirectional" and type(layer.forward_layer).__name__ in CELLS)


def _activation_name(fn: Any) -> str | None:
    import keras

    from rnnexport_converters.keras.layers import legacy_hard_sigmoid

    known = {
        keras.activations.tanh: "tanh",
        keras.activations.sigmoid: "sigmoid",
        keras.activations.relu: "relu",
        keras.activations.linear: "linear",
        keras.activations.hard_sigmoid: "hard_sigmoid",
        legacy_hard_sigmoid: "hard_sigmoid_keras2",
    }
    return known.get(fn)


def _weights(layer: Any, gates: int) -> DirectionWeights:
    from keras import ops

    cell = layer.cell
    size = gates * cell.units
    kernel = ops.convert_to_numpy(cell.kernel)
    recurrent = ops.convert_to_numpy(cell.recurrent_kernel)
    input_bias = recurrent_bias = np.zeros(size, dtype=kernel.dtype)
    if cell.use_bias:
        bias = ops.convert_to_numpy(cell.bias)
        if bias.ndim == 2:  # GRU reset_after: input and recurrent biases stacked
            input_bias, recurrent_bias = bias[0], bias[1]
        else:
            input_bias = bias
    return DirectionWeights(kernel, recurrent, input_bias, recurrent_bias)


def describe(layer: Any) -> Recurrence:
    """The canonical description of an LSTM, GRU, SimpleRNN or Bidirectional layer."""
    bidirectional = type(layer).__name__ == "Bidirectional"
    layers = (layer.forward_layer, layer.backward_layer) if bidirectional else (layer,)
    first = layers[0]
    cell, gates = CELLS[type(first).__name__]
    activation = _activation_name(first.cell.activation)
    recurrent_activation = _activation_name(getattr(first.cell, "recurrent_activation", first.cell.activation))
    reasons = []
    if activation is None or recurrent_activation is None:
        reasons.append("its activation has no ONNX equivalent")
    if bidirectional:
        forward, backward = layers
        if type(forward) is not type(backward) or forward.get_config()["units"] != backward.units:
            reasons.append("its backward layer differs from its forward layer")
        if layer.merge_mode not in (*MERGE_MODES, None):
            reasons.append(f"merge_mode={layer.merge_mode} is not one Keras defines")
        if forward.go_backwards or not backward.go_backwards:
            reasons.append("its directions do not read the sequence forwards, then backwards")
    return Recurrence(
        name=layer.name,
        cell=cell,
        units=first.units,
        directions=tuple(_weights(each, gates) for each in layers),
        activation=activation or "?",
        recurrent_activation=recurrent_activation or "?",
        return_sequences=first.return_sequences,
        return_state=bool(getattr(layer, "return_state", False)),
        merge_mode=layer.merge_mode if bidirectional else None,
        reset_after=bool(getattr(first.cell, "reset_after", False)),
        go_backwards=bool(first.go_backwards) and not bidirectional,
        unfusable="; ".join(reasons),
    )


def leading_lengths(mask: Any) -> Any:
    """Per row of a bool [batch, time] mask, the count of its leading True steps (int32 [batch])."""
    tf = tensorflow()
    masked_so_far = tf.cumsum(tf.cast(tf.logical_not(mask), tf.int32), axis=1)
    return tf.reduce_sum(tf.cast(tf.equal(masked_so_far, 0), tf.int32), axis=1)


def layer_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> LayerCall:
    """The `LayerCall` of a Keras RNN or Bidirectional `call(sequences, initial_state, mask, ...)`."""
    mask = kwargs.get("mask")
    given = kwargs.get("initial_state", args[0] if args else None)
    if given is not None and not isinstance(given, (list, tuple)):
        given = [given]
    return LayerCall(lengths=None if mask is None else leading_lengths(mask), mask=mask,
                     initial_state=None if given is None else tuple(given))


@contextlib.contextmanager
def replaced(layers: Iterable[Any], replacement: Replacement, left: dict[str, str]) -> Iterator[None]:
    """While tracing, compute each layer with `replacement` where it can be; record in `left`
    why the others keep their own computation (the recurrence's `unfusable`, or the reason the
    replacement returned)."""
    patched = []
    for layer in layers:
        recurrence = describe(layer)
        original = layer.call

        def call(inputs: Any, *args: Any, _rec: Recurrence = recurrence, _orig: Any = original, **kwargs: Any) -> Any:
            outputs = _rec.unfusable or replacement(_rec, inputs, layer_call(args, kwargs))
            if isinstance(outputs, str):
                left[_rec.name] = outputs
            if outputs is None or isinstance(outputs, str):
                return _orig(inputs, *args, **kwargs)
            return outputs

        # An instance attribute shadows the class's call for this tracing only.
        layer.call = call
        patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.call
