"""Writing a TFLite export: the RecurrentModel traced at any batch with its recurrent layers in the
forms of `layers`, converted with builtin ops from a SavedModel (the converter keeps the fused-kernel
stubs only on that path), the stubs replaced by LiteRT's kernels, and rnnexport's metadata added."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any


from rnnexport.version import __version__
from rnnexport.calibration import Calibration, calibration
from rnnexport.errors import ExportError, UserError
from rnnexport.exported import Interface
from rnnexport.model import RecurrentModel
from rnnexport.tf import tensorflow
from rnnexport_converters.tflite.calibration import INTEGER_MODES, CalibratorCrash, convert_in_child, io_scales
from rnnexport_converters.tflite.files import KERNELS, step_file, with_metadata
from rnnexport_converters.tflite.layers import Layers
from rnnexport_converters.tflite.surgery import replace_stubs, reset_quantized_states
from rnnexport_converters.tflite.target import TfliteOptions


def _blocking_message(log: str, options: TfliteOptions) -> str:
    """One line naming what stopped the converter and the option that gets past it."""
    ops = sorted(set(re.findall(r"'tf\.([A-Za-z0-9_]+)' op", log)))
    if ops and not options.select_ops:
        return (f"the TFLite converter has no builtin op for {', '.join(ops)}; pass --tflite-select-ops to "
                "allow TensorFlow (Flex) ops, which need a runtime with the Flex delegate")
    if ops:
        return (f"TFLite has neither a builtin nor a Flex op for {', '.join(ops)}; "
                "this model cannot be exported to TFLite (try --to onnx)")
    lines = [line.strip() for line in log.splitlines() if "error" in line.lower()]
    return f"the TFLite converter failed: {(lines or log.strip().splitlines() or ['unknown error'])[0]}"


def _converter(converter: Any, options: TfliteOptions) -> bytes:
    tf = tensorflow()
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if options.select_ops:
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    if options.quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if options.quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as exc:  # noqa: BLE001 - ConverterError and friends; the full text goes to --debug
        raise ExportError(_blocking_message(str(exc), options), log=str(exc)) from None


def _convert(functions: list[Any], model: RecurrentModel, options: TfliteOptions) -> bytes:
    return _converter(tensorflow().lite.TFLiteConverter.from_concrete_functions(functions, model.module), options)


def _convert_saved(function: Any, model: RecurrentModel, options: TfliteOptions,
                   calibrated: Calibration | None, layers: Layers, batch: int | None) -> bytes:
    """Convert through a SavedModel: only there does the converter keep `tfl_fusable_op` stubs.
    Full-integer files are calibrated and converted in a child process (see `calibration`)."""
    tf = tensorflow()
    holder = tf.Module()
    holder.model_variables = list(model.module.variables)
    with tempfile.TemporaryDirectory(prefix="rnnexport-tflite-") as tmp:
        tf.saved_model.save(holder, tmp, signatures={"serving_default": function.get_concrete_function()})
        if calibrated is not None:
            return convert_in_child(Path(tmp), options.quantize, calibrated.samples, options.integer_io, layers.forms,
                                    layers.stubs, batch)
        return _converter(tf.lite.TFLiteConverter.from_saved_model(tmp), options)


CONVERTER_FUSES_AT_A_FIXED_BATCH = "the converter fuses a quantized LSTM kernel only at a fixed batch"
INTEGER_KERNEL_AT_A_FIXED_BATCH = "LiteRT's integer LSTM kernel is calibrated and quantized with states of a fixed batch"
# Why a layer of a file gets no fused kernel whatever it computes.
QUANTIZED = "the export is quantized, and the converter quantizes the loop form's weights, not a fused kernel's"
STEP_FILE = "a streaming step file takes its state from its inputs, which the loop form does"


def _refused(options: TfliteOptions) -> str:
    if options.form == "loop":
        return "--tflite-form loop"
    # int8 files choose their own integer kernels (`Layers(integer=True)`).
    return QUANTIZED if options.quantize not in (None, "int8") else ""


def _sequence_file(model: RecurrentModel, options: TfliteOptions,
                   calibrated: Calibration | None) -> tuple[bytes, dict[str, Any]]:
    """The full-sequence flatbuffer and what its metadata says about each recurrent layer.

    At any batch unless `--batch` fixes one. Where the converter cannot convert the model at any
    batch (a layer the source keeps as its own loop, a TimeDistributed layer: their tensor lists
    are only lowered at a fixed batch), the batch is fixed at 1 and the metadata says why."""
    integer = options.quantize == "int8"
    layers = Layers(_refused(options), integer)
    function, kept = model.trace_with(layers, options.batch)
    batch, fixed_because = options.batch, ""
    kernels = [*layers.converter_fused, *(stub.recurrence.name for stub in layers.stubs.values())] if integer else []
    if kernels and batch not in (None, 1):
        raise UserError(f"--batch {batch} with --quantize int8: the integer LSTM kernels of "
                        f"{', '.join(f'layer {name!r}' for name in dict.fromkeys(kernels))} are calibrated one sample at a time, at batch 1; "
                        "leave --batch out (the file then runs larger batches row by row)")
    if kernels and batch is None:
        fixed_because = CONVERTER_FUSES_AT_A_FIXED_BATCH if layers.converter_fused else INTEGER_KERNEL_AT_A_FIXED_BATCH
        layers = Layers(_refused(options), integer)
        function, kept = model.trace_with(layers, 1)
        batch = 1
    try:
        flatbuffer = _convert_saved(function, model, options, calibrated, layers, batch)
    except ExportError as exc:
        # A crash is no reason the converter gave: at batch 1 it would crash again.
        if batch is not None or isinstance(exc, CalibratorCrash):
            raise
        layers = Layers(_refused(options), integer)
        function, kept = model.trace_with(layers, 1)
        batch, fixed_because = 1, str(exc)
        flatbuffer = _convert_saved(function, model, options, calibrated, layers, batch)
    if integer and (layers.converter_fused or layers.stubs):
        flatbuffer = reset_quantized_states(flatbuffer)
    fused = {stub.recurrence.name: KERNELS[stub.recurrence.cell] for stub in layers.stubs.values()}
    fused.update({name: KERNELS["lstm"] for name in layers.converter_fused})
    not_fused = {**{name: reason for name, reason in layers.reasons.items() if name not in fused}, **kept}
    for recurrence in model.recurrences:
        if recurrence.name not in fused and recurrence.name not in not_fused:
            not_fused[recurrence.name] = "not replaced while tracing"
    meta = {
        "batch": batch,
        "batch_fixed_because": fixed_because,
        "stateless": True,
        "fused": fused,
        "forms": layers.forms,
        "not_fused": not_fused,
    }
    # A full-integer file's stubs were replaced before calibrating (`convert_in_child`).
    return (flatbuffer if integer else replace_stubs(flatbuffer, layers.stubs)), meta


def write(model: RecurrentModel, path: Path, options: TfliteOptions, streaming: bool) -> None:
    """Write `model` to `path` (and its streaming file beside it when asked)."""
    if model.trace_with is None:
        raise ExportError(f"{model.info.path}: this source cannot be traced for TFLite")
    integer = options.quantize in INTEGER_MODES
    if integer and streaming:
        raise UserError(f"--quantize {options.quantize}: streaming step files are not quantized to integers: a "
                        "step takes and returns the recurrent state, whose ranges calibration on whole sequences "
                        "does not record (issue 22); export the step files in a second run with --streaming and "
                        "--quantize dynamic-range or float16, or without --quantize")
    if not integer and (options.calibration or options.integer_io):
        raise UserError("--calibration and --integer-io need --quantize int8 or int16x8")
    calibrated = calibration(model.info.inputs, model.info.fixed_length, options.calibration) if integer else None
    flatbuffer, layers = _sequence_file(model, options, calibrated)
    meta = {
        "version": __version__,
        "source": model.info.path,
        "source_kind": model.info.kind,
        "quantize": options.quantize,
        "select_ops": options.select_ops,
        "interface": Interface.of(model.info).to_dict(),
    }
    if calibrated is not None:
        meta["calibration"] = calibrated.origin
        meta["io"] = io_scales(flatbuffer)
    path.write_bytes(with_metadata(flatbuffer, {**meta, **layers}))
    if streaming:
        entry_points = model.streaming()
        streamed, step_batch = _step_file(entry_points, model, options)
        step_file(path).write_bytes(with_metadata(streamed, {**meta, "batch": step_batch, "stateless": True,
                                                       "states": [s.name for s in entry_points.states],
                                                       "state_holds": {s.name: s.holds for s in entry_points.states}}))


def _step_file(entry_points: Any, model: RecurrentModel, options: TfliteOptions) -> tuple[bytes, int | None]:
    """The `step` and `initial_state` signatures (the converter names each after its function),
    the layers in the loop form, which takes its state from the step's inputs: at any batch
    unless `--batch` fixes one or the converter needs one (then 1)."""
    initial = entry_points.initial_state.get_concrete_function()
    if entry_points.trace_step_with is not None:
        # Traced from concrete functions, where the converter would inline a stub: loops only.
        step, _ = entry_points.trace_step_with(Layers(STEP_FILE), options.batch)
        try:
            return _convert([step.get_concrete_function(), initial], model, options), options.batch
        except ExportError:
            if options.batch is not None:
                raise
    step_batch = options.batch or 1
    return _convert([entry_points.trace_step(step_batch).get_concrete_function(), initial], model, options), step_batch
