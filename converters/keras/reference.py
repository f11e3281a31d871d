"""The reference for Keras sources: the model, as loaded where it can serve the inputs, else
rebuilt for any length, called in a `tf.function` traced once per model."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnexport_converters.keras import streaming as keras_streaming
from rnnexport.device import Device
from rnnexport.errors import one_line
from rnnexport.runner import Arrays, Closable, Timing
from rnnexport.tf import function, tensorflow

if TYPE_CHECKING:
    from rnnexport_converters.keras.source import OpenedKeras


class KerasReference(Closable):
    """The Keras model as loaded where it can serve the inputs, else rebuilt. It opens no session,
    so closing it has nothing to release.

    Keras runs a recurrent layer's loop in Python when called eagerly (one dispatch per op and
    step: 1.9 s of an LSTM(256)'s 11-case sweep); traced once with the batch and every length
    the model takes left open, as `model.predict` runs it, the same layers run as one graph. The
    trace is trusted only once it has matched the eager model on its first inputs."""

    name = "keras"
    TRACED_ONCE = "a tf.function traced once for any batch and length, as model.predict runs it"
    TRACED_PER_SHAPE = ("a tf.function traced for each shape timed (one trace for every shape does not reproduce "
                        "this model)")

    def __init__(self, opened: OpenedKeras, device: Device) -> None:
        self.opened = opened
        self.tf_device = device.tf_name
        self.device = f"{device.label} (TensorFlow)"
        # One traced function per (model, input dtypes); None where the model runs eagerly.
        self._functions: dict[tuple[int, tuple[str, ...]], Any] = {}

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

    def _outputs(self, model: Any, arrays: list[np.ndarray]) -> list[Any]:
        """The model's outputs on `arrays`: from one trace per model (batch and the lengths the
        model takes left open) where that trace agreed with the eager model on the first inputs
        it got and runs, else eagerly (a Keras 3 TimeDistributed traced so fails at a new batch)."""
        def eager() -> list[Any]:
            return _listed(model(arrays[0] if len(arrays) == 1 else arrays, training=False))

        key = (id(model), tuple(str(a.dtype) for a in arrays))
        if key not in self._functions:
            tf = tensorflow()
            specs = [tf.TensorSpec((None, *tensor.shape[1:]), a.dtype) for a, tensor in zip(arrays, model.inputs)]
            traced = function(lambda *xs: model(xs[0] if len(xs) == 1 else list(xs), training=False),
                              input_signature=specs)
            expected = eager()
            try:
                agrees = _agree(_listed(traced(*arrays)), expected)
            except Exception:  # noqa: BLE001 - a model that cannot be traced so runs eagerly
                agrees = False
            self._functions[key] = traced if agrees else None
            return expected
        traced = self._functions[key]
        if traced is not None:
            try:
                return _listed(traced(*arrays))
            except Exception:  # noqa: BLE001 - the eager model says whether the source runs these inputs
                self._functions[key] = None
        return eager()

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        tf = tensorflow()
        model, arrays = self._model(inputs)
        with tf.device(self.tf_device):
            outputs = self._outputs(model, arrays)
        return {name: np.asarray(out) for name, out in zip(self.opened.output_names, outputs)}

    def per_shape(self, inputs: Mapping[str, np.ndarray]) -> bool:
        """Whether no one trace serves these inputs, so timing them costs a trace of their own."""
        model, arrays = self._model(inputs)
        return self._functions.get((id(model), tuple(str(a.dtype) for a in arrays))) is None

    def timing(self, inputs: Mapping[str, np.ndarray], outputs: Arrays) -> Timing:
        """`run` where one trace serves every shape (the sweep's call warmed it up); else a trace
        for this shape alone, as `model.predict` without shape relaxation runs it, once it
        reproduced `outputs`; else the eager model, saying why."""
        if not self.per_shape(inputs):
            return Timing(lambda: self.run(inputs), self.TRACED_ONCE)
        model, arrays = self._model(inputs)
        tf = tensorflow()
        traced = function(lambda *xs: model(xs[0] if len(xs) == 1 else list(xs), training=False),
                          input_signature=[tf.TensorSpec(a.shape, a.dtype) for a in arrays])

        def call() -> list[np.ndarray]:
            with tf.device(self.tf_device):
                return [np.asarray(out) for out in _listed(traced(*arrays))]

        try:
            eager = "" if _agree(call(), [outputs[name] for name in self.opened.output_names]) else (
                "traced, it does not reproduce the eager model")
        except Exception as exc:  # noqa: BLE001 - a model that cannot be traced is timed eagerly, and says so
            eager = f"tracing it fails: {_failure(exc)}"
        if eager:
            return Timing(lambda: self.run(inputs), "the model called eagerly", eager=eager)
        return Timing(call, self.TRACED_PER_SHAPE)

    def final_state(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Each recurrent layer's state after the whole sequence, from the state it starts from,
        keyed by the step entry point's `next_name`s."""
        tf = tensorflow()
        model, arrays = self._model(inputs)
        start = keras_streaming.start_state(model, arrays[0].shape[0])
        with tf.device(self.tf_device):
            _, finals = keras_streaming.run_chunk(model, arrays, start)
        return {name: np.asarray(value) for name, value in finals.items()}


def _failure(exc: Exception) -> str:
    """What failed in a trace, in one line: Keras puts it in bold between the layer it failed in
    and the arguments, a tf.function last, after the user's code."""
    bold = re.search(r"\x1b\[1m(.*?)\x1b\[0m", str(exc), re.S)
    if bold:
        return " ".join(bold.group(1).split())
    said = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return said[-1] if said and said[0] == "in user code:" else one_line(exc)


def _listed(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _agree(traced: list[Any], eager: list[Any]) -> bool:
    """Whether the traced model's outputs are the eager model's, up to float32 rounding."""
    return len(traced) == len(eager) and all(
        np.shape(t) == np.shape(e) and np.allclose(np.asarray(t), np.asarray(e), rtol=1e-6, atol=1e-6, equal_nan=True)
        for t, e in zip(traced, eager))
