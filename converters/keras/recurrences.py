"""Keras recurrent layers described in the RecurrentModel's canonical terms, and traced with
a replacement so that targets can emit fused ops."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from rnnexport.model import DirectionWeights, Recurrence, Replacement

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
        if layer.merge_mode not in MERGE_MODES:
            reasons.append(f"merge_mode={layer.merge_mode} returns the directions separately")
        if layer.return_state:
            reasons.append("a bidirectional layer with return_state")
    elif first.go_backwards:
        reasons.append("go_backwards=True returns the outputs in reverse order")
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
        unfusable="; ".join(reasons),
    )


@contextlib.contextmanager
def replaced(layers: Iterable[Any], replacement: Replacement, left: dict[str, str]) -> Iterator[None]:
    """While tracing, compute each layer with `replacement` where it can be; record in `left`
    why the others keep their own computation."""
    patched = []
    for layer in layers:
        recurrence = describe(layer)
        original = layer.call

        def call(inputs: Any, *args: Any, _rec: Recurrence = recurrence, _orig: Any = original, **kwargs: Any) -> Any:
            reason = _rec.unfusable
            if not reason and kwargs.get("mask") is not None:
                reason = ("its input is masked: a fused op only models trailing padding, the loop keeps "
                          "Keras's masking exactly")
            if not reason and (args or kwargs.get("initial_state") is not None):
                reason = "it is given an initial state"
            if reason:
                left[_rec.name] = reason
                return _orig(inputs, *args, **kwargs)
            outputs = replacement(_rec, inputs)
            return _orig(inputs, *args, **kwargs) if outputs is None else outputs

        # An instance attribute shadows the class's call for this tracing only.
        layer.call = call
        patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.call
