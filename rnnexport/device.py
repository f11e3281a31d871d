"""Where reference and export runs happen: `auto`, `cpu` or `gpu`."""

from __future__ import annotations

from dataclasses import dataclass

from rnnexport.errors import DeviceError
from rnnexport.tf import tensorflow

DEVICE_CHOICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Device:
    kind: str
    tf_name: str
    label: str


def resolve_device(request: str) -> Device:
    """Pick the device; a GPU run turns TF32 off so the reference is true float32."""
    if request not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device '{request}'; choose one of: {', '.join(DEVICE_CHOICES)}")
    if request == "cpu":
        return Device("cpu", "/CPU:0", "CPU")
    tf = tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        if request == "gpu":
            raise DeviceError("--device gpu: TensorFlow sees no GPU on this machine; use --device cpu or auto")
        return Device("cpu", "/CPU:0", "CPU")
    tf.config.experimental.enable_tensor_float_32_execution(False)
    details = tf.config.experimental.get_device_details(gpus[0])
    name = details.get("device_name", "GPU")
    return Device("gpu", "/GPU:0", f"GPU:0 ({name}, TF32 off)")
