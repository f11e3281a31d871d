"""Keras recurrent layers described in the RecurrentModel's canonical terms, and traced with
a replacement so that targets can emit fused ops."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from rnnexport.model import DirectionWeights, LayerCall, Recurrence, Replacement
from rnnexport.tf import tensorflow

# By the class of the layer's cell: the recurrence's cell kind and its number of gates.
CELLS = {"LSTMCell": ("lstm", 4), "PeepholeLSTMCell": ("lstm", 4), "GRUCell": ("gru", 3), "SimpleRNNCell": ("rnn", 1)}
LAYERS = ("LSTM", "GRU", "SimpleRNN", "RNN")
MERGE_MODES = ("concat", "sum", "mul", "ave")


def _is_rnn(layer: Any) -> bool:
    return type(layer).__name__ in LAYERS and type(layer.cell).__name__ in CELLS


def is_recurrent(layer: Any) -> bool:
    return _is_rnn(layer) or (type(layer).__name__ == "Bidirectional" and _is_rnn(layer.forward_layer))


def states_reversed(layer: Any) -> bool:
    """True when the layer's cell keeps its states as (c, h), not Keras's LSTM order (h, c)."""
    inner = layer.forward_layer if type(layer).__name__ == "Bidirectional" else layer
    return type(inner.cell).__name__ == "PeepholeLSTMCell"


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
    if getattr(cell, "use_bias", True):
        bias = ops.convert_to_numpy(cell.bias)
        if bias.ndim == 2:  # GRU reset_after: input and recurrent biases stacked
            input_bias, recurrent_bias = bias[0], bias[1]
        else:
            input_bias = bias
    peepholes = ops.convert_to_numpy(cell.peephole) if getattr(cell, "peepholes", False) else None
    projection = ops.convert_to_numpy(cell.projection) if getattr(cell, "num_proj", None) else None
    return DirectionWeights(kernel, recurrent, input_bias, recurrent_bias, peepholes, projection)


def keras_sigmoid() -> Any:
    import keras

    return keras.activations.sigmoid


def describe(layer: Any) -> Recurrence:
    """The canonical description of an LSTM, GRU, SimpleRNN or Bidirectional layer."""
    bidirectional = type(layer).__name__ == "Bidirectional"
    layers = (layer.forward_layer, layer.backward_layer) if bidirectional else (layer,)
    first = layers[0]
    cell, gates = CELLS[type(first.cell).__name__]
    activation = _activation_name(first.cell.activation)
    # TF1's LSTMCell (PeepholeLSTMCell here) has sigmoid gates whatever its activation.
    default_gates = keras_sigmoid() if cell == "lstm" else first.cell.activation
    recurrent_activation = _activation_name(getattr(first.cell, "recurrent_activation", default_gates))
    reasons = []
    if activation is None or recurrent_activation is None:
        reasons.append("its activation has no ONNX equivalent")
    if bidirectional:
        forward, backward = layers
        if type(forward.cell) is not type(backward.cell) or forward.cell.units != backward.cell.units:
            reasons.append("its backward layer differs from its forward layer")
        if layer.merge_mode not in (*MERGE_MODES, None):
            reasons.append(f"merge_mode={layer.merge_mode} is not one Keras defines")
        if forward.go_backwards or not backward.go_backwards:
            reasons.append("its directions do not read the sequence forwards, then backwards")
    return Recurrence(
        name=layer.name,
        cell=cell,
        units=first.cell.units,
        directions=tuple(_weights(each, gates) for each in layers),
        activation=activation or "?",
        recurrent_activation=recurrent_activation or "?",
        return_sequences=first.return_sequences,
        return_state=bool(getattr(layer, "return_state", False)),
        merge_mode=layer.merge_mode if bidirectional else None,
        reset_after=bool(getattr(first.cell, "reset_after", False)),
        go_backwards=bool(first.go_backwards) and not bidirectional,
        zero_output_for_mask=bool(first.zero_output_for_mask),
        cell_clip=getattr(first.cell, "cell_clip", None),
        proj_clip=getattr(first.cell, "proj_clip", None),
        unfusable="; ".join(reasons),
    )


def leading_lengths(mask: Any) -> Any:
    """Per row of a bool [batch, time] mask, the count of its leading True steps (int32 [batch])."""
    tf = tensorflow()
    masked_so_far = tf.cumsum(tf.cast(tf.logical_not(mask), tf.int32), axis=1)
    return tf.reduce_sum(tf.cast(tf.equal(masked_so_far, 0), tf.int32), axis=1)


def layer_call(args: tuple[Any, ...], kwargs: dict[str, Any], reverse_states: bool,
               own: Callable[[], Any] | None = None) -> LayerCall:
    """The `LayerCall` of a Keras RNN or Bidirectional `call(sequences, initial_state, mask, ...)`;
    states in the order `LayerCall` documents, (h, c), when the cell keeps (c, h)."""
    mask = kwargs.get("mask")
    given = kwargs.get("initial_state", args[0] if args else None)
    if given is not None and not isinstance(given, (list, tuple)):
        given = [given]
    if given is not None and reverse_states:
        given = _swap_pairs(list(given))
    return LayerCall(lengths=None if mask is None else leading_lengths(mask), mask=mask,
                     initial_state=None if given is None else tuple(given), own=own)


def _swap_pairs(states: list[Any]) -> list[Any]:
    """(c, h) pairs as (h, c), or back: each direction's two states swapped."""
    return [states[i + 1 - 2 * (i % 2)] for i in range(len(states))]


def _in_keras_order(outputs: Any, recurrence: Recurrence, reverse_states: bool) -> Any:
    """A replacement's outputs with each LSTM direction's (h, c) states as the cell orders them."""
    if not (reverse_states and recurrence.return_state):
        return outputs
    first = 2 if recurrence.bidirectional and recurrence.merge_mode is None else 1
    return [*outputs[:first], *_swap_pairs(list(outputs[first:]))]


@contextlib.contextmanager
def replaced(layers: Iterable[Any], replacement: Replacement, left: dict[str, str]) -> Iterator[None]:
    """While tracing, compute each layer with `replacement` where it can be; record in `left`
    why the others keep their own computation (the recurrence's `unfusable`, or the reason the
    replacement returned). Each call returns the states if the layer does at that call (streaming
    turns `return_state` on for its trace)."""
    patched = []
    for layer in layers:
        original = layer.call
        reverse_states = states_reversed(layer)
        # Weights are read here: inside the trace they are symbolic.
        described = describe(layer)

        def call(inputs: Any, *args: Any, _layer: Any = layer, _orig: Any = original, _reverse: bool = reverse_states,
                 _described: Recurrence = described, **kwargs: Any) -> Any:
            recurrence = dataclasses.replace(_described, return_state=bool(getattr(_layer, "return_state", False)))

            def own() -> Any:
                return _in_keras_order(_orig(inputs, *args, **kwargs), recurrence, _reverse)

            outputs = recurrence.unfusable or replacement(recurrence, inputs,
                                                          layer_call(args, kwargs, _reverse, own))
            if isinstance(outputs, str):
                left[recurrence.name] = outputs
            if outputs is None or isinstance(outputs, str):
                return _orig(inputs, *args, **kwargs)
            return _in_keras_order(outputs, recurrence, _reverse)

        # An instance attribute shadows the class's call for this tracing only.
        layer.call = call
        patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.call
