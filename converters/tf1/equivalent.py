"""The Keras model that computes what a recognised TF1 graph computes, for any length: each
cell becomes the Keras layer its pattern names (recurrent layer `i` is `layer_name(i)`), with
its weights converted to Keras's conventions; and the layouts in which a graph's output may hold
the per-step outputs."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from rnnexport_converters.tf1 import frontend_layers, heads
from rnnexport_converters.tf1.cells import Cell
from rnnexport_converters.tf1.structure import Structure

# How a source output holds the per-step outputs Y[batch, time, C] the export returns.
LAYOUTS = ("batch-major", "time-major", "flat batch-major", "flat time-major", "last step")


def layer_name(index: int) -> str:
    """The name of recurrent layer `index` in the equivalent, and so of its states in a
    streaming export."""
    return f"rnn_{index}"


def keras_layer(cell: Cell, name: str, return_sequences: bool, go_backwards: bool, masked: bool) -> tuple[Any, list]:
    """The Keras layer of `cell` and the weights to set on it once it is built."""
    common = {"return_sequences": return_sequences, "go_backwards": go_backwards, "name": name}
    layer, weights = cell.match.keras_layer(cell, common)
    layer.zero_output_for_mask = masked
    return layer, weights


def _trained_states(cell: Cell, vectors: list[np.ndarray], name: str, x: Any) -> list[Any]:
    """The states a layer starts from, from TF1's (c, h) vectors, in the order its Keras layer takes them."""
    from rnnexport_converters.keras.layers import TrainedState

    roles = dict(zip(cell.match.state_roles, vectors))
    states = []
    for role in (r for r in cell.match.keras_state_order(cell) if r in roles):
        layer = TrainedState(roles[role].shape[-1], name=f"{name}_initial_{role}")
        states.append(layer(x))
        layer.set_weights([roles[role]])
    return states


def keras_model(structure: Structure, names: dict[str, str], features: int | None, last_step: bool,
                initial: Mapping[int, list[np.ndarray]] = MappingProxyType({})) -> Any:
    """The Keras equivalent of `structure`, taking and returning batch-major tensors. `initial`
    holds, by layer index, the (c, h) or (h,) vectors a layer's forward cell starts from where
    they are not zero."""
    import keras

    from rnnexport_converters.keras.layers import SequenceMask

    if structure.embedding is not None:
        data = keras.Input((None,), dtype="int32", name=names[structure.data_input])
        embed = keras.layers.Embedding(*structure.embedding.shape, name="embedding")
        x = embed(data)
        embed.set_weights([structure.embedding])
    else:
        data = keras.Input((None, features), name=names[structure.data_input])
        x = data
    x = frontend_layers.apply(structure.frontend, x)
    inputs = [data]
    mask = None
    if structure.lengths_input:
        lengths = keras.Input((), dtype="int32", name=names[structure.lengths_input])
        inputs.append(lengths)
        mask = SequenceMask(name="sequence_mask")([x, lengths])
    for index, layer in enumerate(structure.layers):
        x = frontend_layers.apply(layer.between, x, f"between_{index}")
        sequences = not (last_step and index == len(structure.layers) - 1)
        name = layer_name(index)
        # A last step read from masked sequences is the state at each row's true length, as a
        # TF1 final state with sequence_length is.
        forward, weights = keras_layer(layer.forward, name, sequences, False, mask is not None and sequences)
        if layer.backward is None:
            states = _trained_states(layer.forward, initial[index], name, x) if index in initial else None
            x = forward(x, mask=mask, initial_state=states)
            forward.set_weights(weights)
            continue
        backward, back_weights = keras_layer(layer.backward, f"{name}_backward", sequences, True,
                                             mask is not None and sequences)
        bidirectional = keras.layers.Bidirectional(forward, backward_layer=backward, merge_mode="concat",
                                                   name=f"bidirectional_{index}")
        x = bidirectional(x, mask=mask)
        bidirectional.forward_layer.set_weights(weights)
        bidirectional.backward_layer.set_weights(back_weights)
    dense_layers = heads.blocks(structure.head)
    for index, (kernel, bias, activation) in enumerate(dense_layers):
        single = len(dense_layers) == 1
        if kernel is None:
            x = keras.layers.Activation(activation, name="activation" if single else f"activation_{index}")(x)
            continue
        name = "projection" if single else f"projection_{index}"
        dense = keras.layers.Dense(kernel.shape[1], activation=activation, use_bias=bias is not None, name=name)
        x = dense(x)
        dense.set_weights([kernel] + ([bias] if bias is not None else []))
    return keras.Model(inputs, x, name="tf1_equivalent")


def to_layout(y: np.ndarray, layout: str) -> np.ndarray:
    """Per-step outputs Y[batch, time, C] in a source output's layout."""
    if layout == "batch-major":
        return y
    if layout == "time-major":
        return np.swapaxes(y, 0, 1)
    if layout == "flat batch-major":
        return y.reshape(-1, *y.shape[2:])
    if layout == "flat time-major":
        return np.swapaxes(y, 0, 1).reshape(-1, *y.shape[2:])
    return y[:, -1]


def from_layout(out: np.ndarray, layout: str, batch: int) -> np.ndarray:
    """A source output back in the export's layout: [batch, time, C], or [batch, C] for the last step."""
    if layout == "batch-major" or layout == "last step":
        return out
    if layout == "time-major":
        return np.swapaxes(out, 0, 1)
    if layout == "flat batch-major":
        return out.reshape(batch, -1, *out.shape[1:])
    return np.swapaxes(out.reshape(-1, batch, *out.shape[1:]), 0, 1)

