"""The reference for TF2 SavedModel sources: the SavedModel's own serving signature, loaded with
`tf.saved_model.load` and run eagerly. A signature traced with a fixed time dimension is ground
truth at that length only; the report says so rather than inventing a reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.device import Device
from rnnexport.errors import SourceError, UnsupportedModelError, one_line
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


class SignatureReference(Closable):
    """The SavedModel's serving signature. `inputs` and `outputs` pair the export's names (in
    order) with the signature's; `fixed` is the only length a fixed-length signature serves."""

    name = "tf2-savedmodel"

    def __init__(self, path: Path, signature: str, device: Device, inputs: Sequence[tuple[str, str]],
                 outputs: Sequence[tuple[str, str]], fixed: int | None) -> None:
        self.loaded, self.signature = load_signature(path, signature)
        self.signature_name = signature
        self.tf_device = device.tf_name
        self.device = f"{device.label} (TensorFlow eager)"
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.fixed = fixed
        self.specs = signature_specs(self.signature)

    def close(self) -> None:
        self.loaded = self.signature = None

    def serves(self, inputs: Mapping[str, np.ndarray]) -> str:
        for ours, theirs in self.inputs:
            shape = self.specs[theirs].shape
            array = inputs[ours]
            if self.fixed is not None and array.ndim >= 2 and array.shape[1] != self.fixed:
                return (f"the SavedModel's signature '{self.signature_name}' is traced for {self.fixed} steps; it is "
                        f"ground truth at that length only")
            if shape.rank and shape[0] is not None and array.shape[0] != shape[0]:
                return f"the SavedModel's signature '{self.signature_name}' fixes the batch at {shape[0]}"
        return ""

    def method(self, inputs: Mapping[str, np.ndarray]) -> str:
        return f"source (signature '{self.signature_name}')"

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        reason = self.serves(inputs)
        if reason:
            raise UnsupportedModelError(reason)
        tf = tensorflow()
        feed = {theirs: tf.constant(inputs[ours].astype(self.specs[theirs].dtype.as_numpy_dtype))
                for ours, theirs in self.inputs}
        with tf.device(self.tf_device):
            results = self.signature(**feed)
        return {ours: np.asarray(results[theirs]) for ours, theirs in self.outputs}

    def final_state(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        raise UnsupportedModelError(f"the SavedModel's signature '{self.signature_name}' returns no recurrent state")
