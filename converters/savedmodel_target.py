"""Target plugin for TensorFlow SavedModel directories with a variable-length `serving_default`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.device import Device
from rnnexport.errors import ExportError
from rnnexport.model import RecurrentModel
from rnnexport.options import FLOAT32_TOLERANCE, ExportOptions, Tolerance
from rnnexport.plugins import Target
from rnnexport.runner import Arrays
from rnnexport.tf import tensorflow

SIGNATURE = "serving_default"


class SavedModelTarget(Target):
    name = "savedmodel"
    description = "TensorFlow SavedModel directory, serving_default takes [batch, time, ...]"
    suffix = ".savedmodel"

    def export(self, model: RecurrentModel, path: Path, options: ExportOptions) -> None:
        tf = tensorflow()
        concrete = model.sequence.get_concrete_function()
        tf.saved_model.save(model.module, str(path), signatures={SIGNATURE: concrete})

    def detect(self, path: Path) -> bool:
        return path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file())

    def runner(self, path: Path, device: Device) -> SavedModelRunner:
        return SavedModelRunner(path, device)

    def default_tolerance(self, device: Device, path: Path) -> Tolerance:
        return FLOAT32_TOLERANCE[device.kind]


class SavedModelRunner:
    name = "savedmodel"

    def __init__(self, path: Path, device: Device) -> None:
        tf = tensorflow()
        self.tf_device = device.tf_name
        self.device = f"{device.label} (TensorFlow)"
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises many kinds for a bad directory
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{path}: cannot load the SavedModel: {first}") from None
        if SIGNATURE not in loaded.signatures:
            raise ExportError(f"{path}: no '{SIGNATURE}' signature; found: {', '.join(loaded.signatures) or 'none'}")
        self._loaded: Any = loaded
        self._fn = loaded.signatures[SIGNATURE]
        self.input_dtypes = {name: spec.dtype for name, spec in self._fn.structured_input_signature[1].items()}

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        tf = tensorflow()
        with tf.device(self.tf_device):
            feed = {name: tf.constant(inputs[name], dtype=dtype) for name, dtype in self.input_dtypes.items()}
            outputs = self._fn(**feed)
        return {name: value.numpy() for name, value in outputs.items()}
