"""The reference for Keras sources: the model run eagerly, as loaded where it can serve the
inputs, else rebuilt for any length."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnexport_converters.keras import streaming as keras_streaming
from rnnexport.device import Device
from rnnexport.runner import Arrays, Closable
from rnnexport.tf import tensorflow

if TYPE_CHECKING:
    from rnnexport_converters.keras.source import OpenedKeras


class KerasReference(Closable):
    """The Keras model run eagerly: as loaded where it can serve the inputs, else rebuilt. It opens
    no session, so closing it has nothing to release."""

    name = "keras"

    def __init__(self, opened: OpenedKeras, device: Device) -> None:
        self.opened = opened
        self.tf_device = device.tf_name
        self.device = f"{device.label} (TensorFlow eager)"

    def serves(self, inputs: Mapping[str, np.ndarray]) -> str:
        """Why the source cannot run `inputs` (too few steps for its convolutions), or ""."""
        shortest = self.opened.info.min_length
        steps = [inputs[spec.name].shape[spec.time_axis] for spec in self.opened.info.inputs
                 if spec.time_axis is not None and spec.name in inputs]
        if steps and min(steps) < shortest:
            return f"the source needs at least {shortest} steps, this case has {min(steps)}"
        return ""

    def _serves_as_is(self, inputs: Mapping[str, np.ndarray]) -> bool:
        if self.opened.stateful:
            return False  # its state would carry over from one case to the next
        fixed = self.opened.fixed_length
        return fixed is None or all(a.ndim < 2 or a.shape[1] == fixed for a in inputs.values())

    def method(self, inputs: Mapping[str, np.ndarray]) -> str:
        return "source" if self._serves_as_is(inputs) else "source rebuilt for any length"

    def _model(self, inputs: Mapping[str, np.ndarray]) -> tuple[Any, list[np.ndarray]]:
        original = self._serves_as_is(inputs)
        model = self.opened.original if original else self.opened.rebuilt()
        arrays = [inputs[spec.name] for spec in self.opened.info.inputs]
        if original:
            arrays = [a.astype(str(t.dtype)) for a, t in zip(arrays, model.inputs)]
        return model, arrays

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        tf = tensorflow()
        model, arrays = self._model(inputs)
        with tf.device(self.tf_device):
            outputs = model(arrays[0] if len(arrays) == 1 else arrays, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {name: np.asarray(out) for name, out in zip(self.opened.output_names, outputs)}

    def final_state(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Each recurrent layer's state after the whole sequence, from the state it starts from,
        keyed by the step entry point's `next_name`s."""
        tf = tensorflow()
        model, arrays = self._model(inputs)
        start = keras_streaming.start_state(model, arrays[0].shape[0])
        with tf.device(self.tf_device):
            _, finals = keras_streaming.run_chunk(model, arrays, start)
        return {name: np.asarray(value) for name, value in finals.items()}
