"""Layers the rebuilt Keras model uses in place of ones that break when time is dynamic."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnnexport")
def legacy_hard_sigmoid(x: Any) -> Any:
    """Keras 2's hard sigmoid, clip(0.2 x + 0.5, 0, 1); Keras 3's has slope 1/6 instead."""
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="rnnexport")
class VariableTimeDistributed(keras.layers.TimeDistributed):
    """TimeDistributed that folds time into the batch instead of mapping over steps.

    Keras 3.15's TimeDistributed, traced with both batch and time dynamic, maps over
    `arange(batch)` instead of `arange(time)` and returns the wrong number of steps. Folding
    time into batch computes the same per-step function with one call of the wrapped layer.
    """

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        inner_shape = tuple(inputs.shape[2:])
        if None in inner_shape:
            return super().call(inputs, training=training, mask=mask)
        shape = ops.shape(inputs)
        batch, time = shape[0], shape[1]
        kwargs = {}
        if self.layer._call_has_training_arg:
            kwargs["training"] = training
        if mask is not None and self.layer._call_has_mask_arg:
            kwargs["mask"] = ops.reshape(mask, (-1, *mask.shape[2:]))
        outputs = self.layer.call(ops.reshape(inputs, (-1, *inner_shape)), **kwargs)
        return ops.reshape(outputs, (batch, time, *outputs.shape[1:]))


@keras.saving.register_keras_serializable(package="rnnexport")
class PeepholeLSTMCell(keras.layers.Layer):
    """TF1's `LSTMCell` beyond what Keras's LSTM computes: peepholes, a projection of the output
    and clipped cell and projected states. Gates in Keras order (i, f, c, o), forget bias folded
    into the bias; states (c, h) where h has `num_proj` units when projected."""

    def __init__(self, units: int, num_proj: int | None = None, peepholes: bool = False,
                 cell_clip: float | None = None, proj_clip: float | None = None, activation: str = "tanh",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units, self.num_proj, self.peepholes = units, num_proj, peepholes
        self.cell_clip, self.proj_clip = cell_clip, proj_clip
        self.activation = keras.activations.get(activation)
        self.output_size = num_proj or units
        self.state_size = [units, self.output_size]

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], 4 * self.units))
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(self.output_size, 4 * self.units))
        self.bias = self.add_weight(name="bias", shape=(4 * self.units,), initializer="zeros")
        if self.peepholes:
            self.peephole = self.add_weight(name="peephole", shape=(3, self.units), initializer="zeros")
        if self.num_proj:
            self.projection = self.add_weight(name="projection", shape=(self.units, self.num_proj))

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        c, h = states
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h, self.recurrent_kernel) + self.bias
        i, f, g, o = ops.split(z, 4, axis=-1)
        if self.peepholes:
            i, f = i + self.peephole[0] * c, f + self.peephole[1] * c
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * self.activation(g)
        if self.cell_clip is not None:
            c = ops.clip(c, -self.cell_clip, self.cell_clip)
        if self.peepholes:
            o = o + self.peephole[2] * c
        h = ops.sigmoid(o) * self.activation(c)
        if self.num_proj:
            h = ops.matmul(h, self.projection)
            if self.proj_clip is not None:
                h = ops.clip(h, -self.proj_clip, self.proj_clip)
        return h, [c, h]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "num_proj": self.num_proj, "peepholes": self.peepholes,
                "cell_clip": self.cell_clip, "proj_clip": self.proj_clip,
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="rnnexport")
class TrainedState(keras.layers.Layer):
    """A state a recurrent layer starts from that was learned rather than zero: one vector of
    `size`, the same for every row of the batch its input has."""

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = size

    def build(self, input_shape: Any) -> None:
        self.value = self.add_weight(name="value", shape=(self.size,), initializer="zeros")

    def call(self, inputs: Any) -> Any:
        return ops.broadcast_to(self.value, (ops.shape(inputs)[0], self.size))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="rnnexport")
class SequenceMask(keras.layers.Layer):
    """The mask of `dynamic_rnn(sequence_length=...)`: step t of row b is valid while t < length[b]."""

    def call(self, inputs: Any) -> Any:
        sequence, lengths = inputs
        steps = ops.arange(ops.shape(sequence)[1], dtype=lengths.dtype)
        return ops.expand_dims(steps, 0) < ops.expand_dims(lengths, 1)
