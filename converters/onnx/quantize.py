"""Quantized ONNX files, made from the float file by onnxruntime's own tools.

- `dynamic-range`: `quantize_dynamic`, int8 weights, activations quantized at run time (LSTMs
  become onnxruntime's `DynamicQuantizeLSTM`).
- `int8`: `quantize_static` in the QDQ format (QuantizeLinear/DequantizeLinear around each
  quantized op), calibrated on the same samples as a TFLite int8 file (`rnnexport.calibration`).
- `float16`: every float tensor in float16, inputs and outputs kept float32.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import ExportError, one_line

# Op types that hold quantized arithmetic, for the report and the tests.
QUANTIZED_OPS = ("DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear",
                 "DequantizeLinear", "ConvInteger", "QLinearMatMul")


class _Samples:
    """onnxruntime's CalibrationDataReader protocol over one-row samples."""

    def __init__(self, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._samples = samples
        self._left = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._left, None)

    def rewind(self) -> None:
        self._left = iter(self._samples)


def quantize(path: Path, mode: str, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Replace the float file at `path` by its `mode` quantization, keeping its metadata."""
    import onnx

    float_model = onnx.load(str(path))
    kept = list(float_model.metadata_props)
    try:
        if mode == "float16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            quantized = convert_float_to_float16(float_model, keep_io_types=True)
        else:
            quantized = _integer(path, mode, samples)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's quantizer raises anything; one line for the user
        raise ExportError(f"onnxruntime cannot quantize this model to {mode}: {one_line(exc, typed=False)}") from None
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(kept)
    onnx.save(quantized, str(path))


def _integer(path: Path, mode: str, samples: Sequence[Mapping[str, np.ndarray]]) -> Any:
    import logging

    # The quantizer advises pre-processing on the root logger, with a message that fails to format.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return _quantized(path, mode, samples)
    finally:
        root.setLevel(level)


def _quantized(path: Path, mode: str, samples: Sequence[Mapping[str, np.ndarray]]) -> Any:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory(prefix="rnnexport-onnx-quantize-") as tmp:
        out = Path(tmp) / "quantized.onnx"
        if mode == "dynamic-range":
            quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
        else:
            quantize_static(str(path), str(out), _Samples(samples), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        return onnx.load(str(out))


def quantized_ops(proto: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type in QUANTIZED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
