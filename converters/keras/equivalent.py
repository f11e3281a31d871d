"""The step every source ends with: a variable-length Keras model that computes what the source
computes, turned into the RecurrentModel targets export.

A Keras file is rebuilt for any length; a TF1 graph is rebuilt as the Keras layers its cells are.
Either way the source describes its equivalent with a `KerasEquivalent` and leaves the rest here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport_converters.keras import recurrences as keras_recurrences
from rnnexport_converters.keras import streaming as keras_streaming
from rnnexport.model import RecurrentModel, Replacement, SourceInfo
from rnnexport.tf import function as tf_function, tensorflow


@dataclass(frozen=True)
class KerasEquivalent:
    """A Keras model that takes any length, under the names the source's `info` gives.

    `not_streamable` is a reason the source itself gives for refusing step entry points (a TF1
    bidirectional layer); it takes precedence over what the Keras model would say.
    """

    model: Any
    info: SourceInfo
    not_streamable: str = ""

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.info.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.info.outputs)


def sequence(equivalent: KerasEquivalent, batch: int | None = None) -> Any:
    """The model as a tf.function of dynamic time (and batch unless fixed), outputs keyed by name."""
    tf = tensorflow()
    model = equivalent.model
    specs = [tf.TensorSpec((batch, *spec.shape[1:]), spec.dtype, name=spec.name) for spec in equivalent.info.inputs]
    output_names = equivalent.output_names

    def function(*tensors: Any) -> dict[str, Any]:
        outputs = model(tensors[0] if len(tensors) == 1 else list(tensors), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {name: tf.identity(out, name=name) for name, out in zip(output_names, outputs)}

    traced = tf_function(function, input_signature=specs)
    traced.get_concrete_function()
    return traced


def trace_with(equivalent: KerasEquivalent, replacement: Replacement | None,
               batch: int | None = None) -> tuple[Any, dict[str, str]]:
    """`sequence` with each recurrent layer computed by `replacement` where it can be, and why
    the others were kept, by layer name."""
    left: dict[str, str] = {}
    if replacement is None:
        return sequence(equivalent, batch), left
    layers = [layer for layer in equivalent.model.layers if keras_recurrences.is_recurrent(layer)]
    with keras_recurrences.replaced(layers, replacement, left):
        function = sequence(equivalent, batch)
    return function, left


def recurrent_model(equivalent: KerasEquivalent) -> RecurrentModel:
    """The RecurrentModel of the equivalent: a module tracking its variables, the sequence entry
    point, its recurrences, and the step entry points where it can stream."""
    tf = tensorflow()
    model = equivalent.model
    module = tf.Module(name="rnnexport")
    module.model_variables = [v.value for v in model.variables]
    module.sequence = sequence(equivalent)
    recurrences = tuple(keras_recurrences.describe(layer) for layer in model.layers
                        if keras_recurrences.is_recurrent(layer))
    blocked = equivalent.not_streamable or keras_streaming.not_streamable(model)
    streaming = None if blocked else functools.cache(
        lambda: keras_streaming.streaming(model, module, equivalent.info.inputs, equivalent.output_names))
    return RecurrentModel(equivalent.info, module, module.sequence, recurrences,
                          functools.partial(trace_with, equivalent), streaming, blocked)


def layer_outputs(equivalent: KerasEquivalent, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
    """Every layer's (first) output, from the model the targets export. A layer called more than
    once has no single output and is left out."""
    import keras

    model = equivalent.model
    layers = [layer for layer in model.layers
              if type(layer).__name__ != "InputLayer" and len(layer._inbound_nodes) == 1]
    outputs = [layer.output[0] if isinstance(layer.output, (list, tuple)) else layer.output for layer in layers]
    probe = keras.Model(model.inputs, outputs)
    arrays = [inputs[name] for name in equivalent.input_names]
    values = probe(arrays[0] if len(arrays) == 1 else arrays, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    return [(layer.name, type(layer).__name__, np.asarray(value)) for layer, value in zip(layers, values)]
