"""Writing an ONNX export: the RecurrentModel traced with fused-op stubs, converted by tf2onnx,
its inputs and outputs named, checked by onnx and saved with rnnexport's metadata."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rnnexport_converters.onnx.files import META, set_metadata, streaming_files
from rnnexport_converters.onnx.forms import faster_as_loop, to_loop
from rnnexport_converters.onnx.fusion import FusedOps
from rnnexport_converters.onnx.quantize import quantize
from rnnexport_converters.onnx.target import OnnxOptions

from rnnexport.calibration import calibration
from rnnexport.errors import ExportError, UserError, one_line
from rnnexport.exported import Interface
from rnnexport.model import RecurrentModel, StateInfo, TensorInfo
from rnnexport.tf import tensorflow
from rnnexport.version import __version__


def _declare_io_shapes(proto: Any, specs: Iterable[TensorInfo]) -> None:
    """Graph inputs and outputs take the RecurrentModel's shapes, with `batch` and `time` named
    (tf2onnx leaves `unk__N`, or no shape where a fused op feeds an output directly)."""
    by_name = {t.name: t for t in specs}
    for value in (*proto.graph.input, *proto.graph.output):
        spec = by_name.get(value.name)
        if spec is None:
            continue
        shape = value.type.tensor_type.shape
        shape.ClearField("dim")
        for axis, size in enumerate(spec.shape):
            dim = shape.dim.add()
            if size is not None:
                dim.dim_value = size
            else:
                dim.dim_param = "batch" if axis == 0 else "time" if axis == spec.time_axis else f"{value.name}_{axis}"


def _state_specs(states: Iterable[StateInfo]) -> list[TensorInfo]:
    return [TensorInfo(name, s.dtype, (None, *s.shape), None) for s in states for name in (s.name, s.next_name)]


def _to_onnx(function: Any, options: OnnxOptions, handlers: Any = None) -> Any:
    import tf2onnx

    try:
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=list(function.input_signature), opset=options.opset,
            custom_op_handlers=handlers,
        )
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises anything; the user needs one line
        raise ExportError(f"tf2onnx cannot convert this model: {one_line(exc, typed=False)}") from None
    return proto


def _save(proto: Any, path: Path, model: RecurrentModel, meta: Mapping[str, str]) -> None:
    import onnx

    set_metadata(proto, {
        META + "version": __version__,
        META + "source": model.info.path,
        META + "source_kind": model.info.kind,
        **meta,
    })
    proto.producer_name = "rnnexport"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def _fastest_forms(proto: Any, fusion: FusedOps, batch: int) -> dict[str, str]:
    """Rewrite each fused op that runs faster as a Loop at `batch`; return why, by layer."""
    nodes = {n.name: n for n in proto.graph.node}
    rewritten = {}
    for layer, name in fusion.nodes.items():
        node = nodes.get(name)
        reason = faster_as_loop(node, batch) if node is not None else ""
        if reason:
            to_loop(proto, node)
            rewritten[layer] = reason
    return rewritten


def _fused(trace: Callable[[FusedOps], tuple[Any, dict[str, str]]],
           options: OnnxOptions) -> tuple[Any, dict[str, str], dict[str, str]]:
    """The ONNX proto of a function traced with fused-op stubs, each recurrent layer in its
    fastest form; the fused layers' ops and the other layers' reasons, by layer."""
    fusion = FusedOps()
    function, not_fused = trace(fusion)
    proto = _to_onnx(function, options, fusion.handlers())
    fused = fusion.fused
    for layer, reason in _fastest_forms(proto, fusion, options.batch).items():
        del fused[layer]
        not_fused[layer] = reason
    return proto, fused, not_fused


def write(model: RecurrentModel, path: Path, options: OnnxOptions, streaming: bool) -> None:
    """Write `model` to `path` (and its streaming files beside it when asked); quantized, its
    sequence file only."""
    if options.quantize is not None and streaming:
        raise UserError(f"--quantize {options.quantize}: the streaming ONNX files are not quantized (issue 22); "
                        "export them without it")
    if options.calibration is not None and options.quantize != "int8":
        raise UserError("--calibration needs --quantize int8 for ONNX exports")
    tensorflow()
    # tf2onnx logs every op it cannot map before failing; the one-line error below says it all.
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") != "0"
    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL if quiet else logging.INFO)
    trace_with = model.trace_with
    proto, fused, not_fused = _fused(
        lambda fusion: trace_with(fusion, None) if trace_with is not None else (model.sequence, {}), options)
    for recurrence in model.recurrences:
        if recurrence.name not in fused and recurrence.name not in not_fused:
            not_fused[recurrence.name] = recurrence.unfusable or "not replaced while tracing"
    _declare_io_shapes(proto, (*model.info.inputs, *model.info.outputs))
    meta = {META + "fused": json.dumps(fused), META + "not_fused": json.dumps(not_fused),
            META + "interface": json.dumps(Interface.of(model.info).to_dict())}
    calibrated = None
    if options.quantize is not None:
        meta[META + "quantize"] = options.quantize
        if options.quantize == "int8":
            calibrated = calibration(model.info.inputs, model.info.fixed_length, options.calibration)
            meta[META + "calibration"] = calibrated.origin
    _save(proto, path, model, meta)
    if options.quantize is not None:
        quantize(path, options.quantize, calibrated.samples if calibrated else ())
    if streaming:
        entry_points = model.streaming()
        step_path, initial_path = streaming_files(path)
        states = json.dumps([s.name for s in entry_points.states])
        holds = json.dumps({s.name: s.holds for s in entry_points.states})
        trace_step_with = entry_points.trace_step_with
        step, step_fused, step_left = _fused(
            lambda fusion: trace_step_with(fusion, None) if trace_step_with is not None else (entry_points.step, {}),
            options)
        _declare_io_shapes(step, (*model.info.inputs, *model.info.outputs, *_state_specs(entry_points.states)))
        _save(step, step_path, model, {META + "entry_point": "step", META + "states": states,
                                       META + "state_holds": holds,
                                       META + "fused": json.dumps(step_fused),
                                       META + "not_fused": json.dumps(step_left)})
        initial = _to_onnx(entry_points.initial_state, options)
        _declare_io_shapes(initial, _state_specs(entry_points.states))
        _save(initial, initial_path, model, {META + "entry_point": "initial_state", META + "states": states,
                                             META + "state_holds": holds})
