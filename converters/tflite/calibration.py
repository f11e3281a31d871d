"""Full-integer TFLite files (`int8`, `int16x8`): the converter's calibration, run in a child process.

TF 2.21's calibrator can kill the process that runs it, so it runs in a child
(`python -m rnnexport_converters.tflite.calibration JOB`); a crash becomes a refusal that quotes
the child's last lines. A fault of that calibrator with the loop form's `WHILE` loops is worked
around in the float flatbuffer it is given:

- A loop input the body passes through unchanged (the projected sequence, the length) whose
  output nothing reads is freed by `WHILE`'s Prepare (the "read only input" case of
  `tensorflow/lite/kernels/while.cc`), after the calibrator listed it for logging: it then reads
  freed memory (SIGSEGV; tensorflow/tensorflow#75140). A `SHAPE` op reading each such output keeps
  it allocated; the quantizer drops it again. `RNNEXPORT_TFLITE_BARE_CALIBRATOR=1` in the
  environment leaves the float model as the converter made it: to see whether a TensorFlow release
  still needs the workaround, and for the test that a real crash becomes a refusal.

The child writes the stage it enters to `stage.txt` and, once crashed, Python's `faulthandler`
names the converter's function that died, so a refusal says where: `during calibration ... in
_feed_tensors (calibrator.py:152)`.

16x8 files are quantized by TF 2.21's older quantizer, whose faults with the loop form are worked
around in `int16x8`; there, with loops, ops it has no 16x8 form of stay float.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import ExportError

INTEGER_MODES = ("int8", "int16x8")
# The name of each SHAPE op `read_passed_through` adds starts so.
KEEPS = b"rnnexport_keeps_"
# How much of the child's stderr a refusal quotes.
LAST_WORDS = 3
BARE_CALIBRATOR = "RNNEXPORT_TFLITE_BARE_CALIBRATOR"
# The stages the child goes through, as a refusal names them.
CONVERTING, CALIBRATING = "conversion to a float model", "calibration and quantization"


class CalibratorCrash(ExportError):
    """The child converting and calibrating a full-integer file died of a signal."""


def _model(flatbuffer: bytes) -> tuple[Any, Any]:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer)), schema


def _bytes(model: Any) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _loops(model: Any, schema: Any) -> Iterable[tuple[Any, Any]]:
    """(subgraph, WHILE operator) of every loop in the model."""
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.WHILE:
                yield subgraph, op


def _opcode(model: Any, schema: Any, builtin: int) -> int:
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = builtin
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def read_passed_through(flatbuffer: bytes) -> bytes:
    """The float model with a `SHAPE` op reading every loop output that the body passes through
    unchanged and nothing else reads (see the module's docstring)."""
    model, schema = _model(flatbuffer)
    shape = None
    for subgraph, op in list(_loops(model, schema)):
        body = model.subgraphs[op.builtinOptions.bodySubgraphIndex]
        read = {t for other in subgraph.operators for t in other.inputs} | set(subgraph.outputs)
        for index, (given, returned) in enumerate(zip(body.inputs, body.outputs)):
            output = int(op.outputs[index])
            if given != returned or output < 0 or output in read:
                continue
            shape = _opcode(model, schema, schema.BuiltinOperator.SHAPE) if shape is None else shape
            tensor = schema.TensorT()
            tensor.name = KEEPS + str(output).encode()
            tensor.type = schema.TensorType.INT32
            tensor.shape = np.array([len(subgraph.tensors[output].shape)], np.int32)
            tensor.buffer = 0
            subgraph.tensors.append(tensor)
            reader = schema.OperatorT()
            reader.opcodeIndex = shape
            reader.inputs = np.array([output], np.int32)
            reader.outputs = np.array([len(subgraph.tensors) - 1], np.int32)
            reader.builtinOptionsType = schema.BuiltinOptions.ShapeOptions
            reader.builtinOptions = schema.ShapeOptionsT()
            reader.builtinOptions.outType = schema.TensorType.INT32
            subgraph.operators.append(reader)
    return _bytes(model)


def io_scales(flatbuffer: bytes) -> dict[str, dict[str, Any]]:
    """Each signature input and output: its type and, where it is an integer, its scale and zero
    point (real value = scale * (q - zero_point))."""
    model, schema = _model(flatbuffer)
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    signature = model.signatureDefs[0]
    subgraph = model.subgraphs[signature.subgraphIndex]
    found = {}
    for entry in (*signature.inputs, *signature.outputs):
        tensor = subgraph.tensors[entry.tensorIndex]
        described: dict[str, Any] = {"dtype": names[tensor.type].lower()}
        q = tensor.quantization
        if tensor.type != schema.TensorType.FLOAT32 and q is not None and q.scale is not None and len(q.scale):
            described.update(scale=float(q.scale[0]), zero_point=int(q.zeroPoint[0]))
        found[entry.name.decode()] = described
    return found


def _quantize(converter: Any, job: Path, bare: bool, int16: bool, stubs: Mapping[str, Any], batch: int) -> Any:
    """The converter's own `_quantize` step (given the float flatbuffer), with the loops' outputs
    kept unless `bare` and `stubs` replaced by fused kernels of `batch` it quantizes; for 16x8 (`int16`),
    `int16x8.quantize` in its place. The stage is recorded first."""
    from rnnexport_converters.tflite import int16x8
    from rnnexport_converters.tflite.surgery import replace_stubs

    original = converter._quantize

    def quantize(result: bytes, *rest: Any, **named: Any) -> bytes:
        (job / "stage.txt").write_text(CALIBRATING)
        if stubs:
            result = replace_stubs(result, stubs, calibrated_batch=batch)
        result = result if bare else read_passed_through(result)
        if not int16:
            return original(result, *rest, **named)
        return int16x8.quantize(converter, result, *rest)

    return quantize


def convert_in_child(saved_model: Path, mode: str, samples: Sequence[Mapping[str, np.ndarray]],
                     integer_io: bool, forms: Mapping[str, str], stubs: Mapping[str, Any], batch: int | None) -> bytes:
    """The full-integer flatbuffer of the SavedModel at `saved_model`, calibrated on `samples`
    in a child process, its `stubs` (of a trace at fixed `batch`) LiteRT's integer LSTM kernels; raise
    `ExportError` with the converter's reason or, `CalibratorCrash`, the stage it died in, the
    recurrent layers it was running (`forms`: name to form) and its last words."""
    with tempfile.TemporaryDirectory(prefix="rnnexport-calibration-") as tmp:
        job = Path(tmp)
        (job / "stubs.pickle").write_bytes(pickle.dumps((dict(stubs), batch)))
        np.savez(job / "samples.npz", **{f"{i}/{name}": value for i, sample in enumerate(samples)
                                         for name, value in sample.items()})
        (job / "job.json").write_text(json.dumps({"saved_model": str(saved_model), "mode": mode,
                                                  "samples": len(samples), "integer_io": integer_io,
                                                  "loops": "loop" in forms.values()}))
        child = subprocess.run([sys.executable, "-m", __name__, str(job)], capture_output=True, text=True)
        if child.returncode == 0 and (job / "model.tflite").is_file():
            return (job / "model.tflite").read_bytes()
        reason = (job / "error.txt").read_text().strip() if (job / "error.txt").is_file() else ""
        if child.returncode < 0:
            name = signal.Signals(-child.returncode).name
            stage = (job / "stage.txt").read_text() if (job / "stage.txt").is_file() else "starting"
            layers = ", ".join(f"'{layer}' ({form} form)" for layer, form in forms.items()) or "none"
            raise CalibratorCrash(f"the TFLite converter crashed ({name}) during {stage} for {mode} (recurrent "
                                  f"layers: {layers}); its last words: {last_words(child.stderr)}", log=child.stderr)
        raise ExportError(f"the TFLite converter cannot quantize this model to {mode}: "
                          f"{reason or last_words(child.stderr)}", log=child.stderr)


def last_words(stderr: str) -> str:
    """The child's last meaningful lines, in one line: after a fatal signal, `faulthandler`'s
    verdict and the innermost frame (where the converter died)."""
    fatal = re.search(r"^Fatal Python error: (.*)$", stderr, re.MULTILINE)
    frame = re.search(r'most recent call first\):\n\s*File "([^"]+)", line (\d+) in (\S+)', stderr[fatal.end():]) \
        if fatal else None
    if fatal and frame:
        return f"{fatal.group(1)} in {frame.group(3)} ({Path(frame.group(1)).name}:{frame.group(2)})"
    noise = re.compile(r"^(WARNING: All log messages|[IW]\d{4} |E\d{4} .*cuInit|To enable the following)")
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not noise.match(line.strip())]
    return " | ".join(lines[-LAST_WORDS:]) or "nothing on stderr"


def _one_line_reason(exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"(Max and min for dynamic tensors[^\n]*|Failed for tensor [^\n]*|Quantization not yet "
                      r"supported for op: [^\n]*|[^\n]*not supported[^\n]*)", text)
    return (found.group(0) if found else (text.strip().splitlines() or ["unknown error"])[-1]).strip()


def _child(job: Path) -> int:
    import faulthandler

    faulthandler.enable()
    (job / "stage.txt").write_text(CONVERTING)
    import tensorflow as tf

    spec = json.loads((job / "job.json").read_text())
    with np.load(job / "samples.npz") as stored:
        samples = [{key.split("/", 1)[1]: stored[key] for key in stored.files if key.split("/", 1)[0] == str(i)}
                   for i in range(spec["samples"])]
    mode = spec["mode"]
    converter = tf.lite.TFLiteConverter.from_saved_model(spec["saved_model"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(samples)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8"
        else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if mode == "int16x8" and spec["loops"]:
        # The loops' WHILE, LESS, SELECT_V2 and DYNAMIC_UPDATE_SLICE have no 16x8 form (see `int16x8`).
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    if spec["integer_io"]:
        converter.inference_input_type = converter.inference_output_type = tf.int8 if mode == "int8" else tf.int16
    stubs, batch = pickle.loads((job / "stubs.pickle").read_bytes())
    converter._quantize = _quantize(converter, job, os.environ.get(BARE_CALIBRATOR) == "1", mode == "int16x8", stubs,
                                    batch)
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the parent turns the reason into one line
        (job / "error.txt").write_text(_one_line_reason(exc))
        return 1
    (job / "model.tflite").write_bytes(flatbuffer)
    return 0


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
