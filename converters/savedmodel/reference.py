"""The reference for TF2 SavedModel sources: the SavedModel's own serving signature, loaded with
`tf.saved_model.load` and run eagerly. A signature traced with a fixed time dimension is ground
truth at that length; at the others the same signature lowered with its time axis freed
(`freed`) serves, once it reproduces the signature there. Where it does not, the report says why
and which lengths have no reference rather than inventing one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport_converters.savedmodel.freed import FreedSignature
from rnnexport.device import Device
from rnnexport.errors import SourceError, UnsupportedModelError, one_line
from rnnexport.model import TensorInfo
from rnnexport.runner import Arrays, Closable
from rnnexport.tf import tensorflow


def load_signature(path: Path, name: str) -> tuple[Any, Any]:
    """The loaded SavedModel (which must stay alive while its signature runs) and the signature."""
    tf = tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types for bad SavedModels
        raise SourceError(f"{path}: TensorFlow cannot load this SavedModel: {one_line(exc, typed=False)}") from None
    return loaded, loaded.signatures[name]


def signature_specs(signature: Any) -> dict[str, Any]:
    """The signature's inputs by name, as `tf.TensorSpec`s."""
    return dict(signature.structured_input_signature[1])


def fixed_time(signature: Any) -> int | None:
    """The time dimension every sequence input of the signature fixes (None: it takes any)."""
    lengths = {spec.shape[1] for spec in signature_specs(signature).values() if spec.shape.rank and
               spec.shape.rank >= 3}
    return lengths.pop() if len(lengths) == 1 else None


def probe_inputs(inputs: Sequence[TensorInfo], length: int) -> dict[str, np.ndarray]:
    """Random inputs of batch 3 and `length` steps, by the export's input names."""
    rng = np.random.default_rng(0)
    arrays = {}
    for tensor in inputs:
        shape = (3, *[length if axis == tensor.time_axis else d or 1 for axis, d in enumerate(tensor.shape)][1:])
        if tensor.role == "lengths":
            arrays[tensor.name] = np.full(3, length, np.int32)
        elif tensor.vocab_size:
            arrays[tensor.name] = rng.integers(0, tensor.vocab_size, shape).astype(np.int32)
        else:
            arrays[tensor.name] = rng.standard_normal(shape).astype(tensor.dtype)
    return arrays


class SignatureReference(Closable):
    """The SavedModel's serving signature. `inputs` and `outputs` pair the export's names (in
    order) with the signature's; `fixed` is the length a fixed-length signature is traced for.
    Other lengths are served by the freed signature where it reproduces the signature on `probe`
    (inputs at `fixed` steps); else, with `pads` (a causal model returning every step), a shorter
    sequence is padded to `fixed` and the first steps of the outputs kept, and only `fixed` steps
    are served otherwise."""

    name = "tf2-savedmodel"
    runs_as = "the signature's traced function"

    def __init__(self, path: Path, signature: str, device: Device, inputs: Sequence[tuple[str, str]],
                 outputs: Sequence[tuple[str, str]], fixed: int | None, pads: bool,
                 probe: Mapping[str, np.ndarray] | None = None, min_length: int = 1) -> None:
        self.loaded, self.signature = load_signature(path, signature)
        self.signature_name = signature
        self.tf_device = device.tf_name
        self.device = f"{device.label} (TensorFlow eager)"
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.fixed = fixed
        self.pads = pads
        self.specs = signature_specs(self.signature)
        self.freed: FreedSignature | None = None
        self.not_freed = ""
        if fixed is not None and probe is not None:
            freed = FreedSignature(self.signature, self.inputs, self.outputs, fixed, min_length, self.tf_device)
            self.not_freed = freed.check(self._run_signature, probe)
            if self.not_freed:
                freed.close()
            else:
                self.freed = freed

    def close(self) -> None:
        if self.freed is not None:
            self.freed.close()
        self.loaded = self.signature = self.freed = None

    def serves(self, inputs: Mapping[str, np.ndarray]) -> str:
        for ours, theirs in self.inputs:
            shape = self.specs[theirs].shape
            array = inputs[ours]
            if self.fixed is not None and array.ndim >= 2 and array.shape[1] != self.fixed and not self.freed and not (
                    self.pads and array.shape[1] < self.fixed):
                served = "that length and shorter ones" if self.pads else "that length"
                why = f" (its lowered graph cannot serve other lengths: {self.not_freed})" if self.not_freed else ""
                return (f"the SavedModel's signature '{self.signature_name}' is traced for {self.fixed} steps; it is "
                        f"ground truth at {served} only{why}")
            if shape.rank and shape[0] is not None and array.shape[0] != shape[0]:
                return f"the SavedModel's signature '{self.signature_name}' fixes the batch at {shape[0]}"
        return ""

    def _length(self, inputs: Mapping[str, np.ndarray]) -> int | None:
        return next((inputs[ours].shape[1] for ours, _ in self.inputs if inputs[ours].ndim >= 2), None)

    def method(self, inputs: Mapping[str, np.ndarray]) -> str:
        length = self._length(inputs)
        if self.freed and length != self.fixed:
            return f"source (signature '{self.signature_name}' frozen and lowered, its {self.fixed} steps freed)"
        if self.fixed is not None and length is not None and length < self.fixed:
            return f"source (signature '{self.signature_name}'), padded from {length} to {self.fixed} steps"
        return f"source (signature '{self.signature_name}')"

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        reason = self.serves(inputs)
        if reason:
            raise UnsupportedModelError(reason)
        if self.freed and self._length(inputs) != self.fixed:
            return self.freed.run(inputs)
        return self._run_signature(inputs)

    def _run_signature(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        tf = tensorflow()
        length = self._length(inputs)
        feed = {}
        for ours, theirs in self.inputs:
            array = inputs[ours].astype(self.specs[theirs].dtype.as_numpy_dtype)
            if self.fixed is not None and array.ndim >= 2 and length < self.fixed:
                padding = np.zeros((array.shape[0], self.fixed - length, *array.shape[2:]), array.dtype)
                array = np.concatenate([array, padding], axis=1)
            feed[theirs] = tf.constant(array)
        with tf.device(self.tf_device):
            results = self.signature(**feed)
        # A causal model's first steps do not depend on the padding after them.
        return {ours: np.asarray(results[theirs])[:, :length] if self.pads else np.asarray(results[theirs])
                for ours, theirs in self.outputs}

    def final_state(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        raise UnsupportedModelError(f"the SavedModel's signature '{self.signature_name}' returns no recurrent state")
