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
