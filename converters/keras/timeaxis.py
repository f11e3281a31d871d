"""Where the time axis goes through a loaded Keras model, from the shapes its layers were built with.

Every model input of rank 2 or more carries time on axis 1. A layer that keeps time on axis 1
runs at any length; one that folds time into features (Flatten over [batch, T, F]), moves it
(Permute) or holds parameters per step (a normalisation over axis 1) ties the model to T, and is
a problem naming the layer. A Reshape that reshapes each step alone keeps time, even where the
config spells T as a number: the rebuild spells it -1 (`per_step_reshapes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rnnexport_converters.keras.config import RECURRENT, SUPPORTED

# Layers that leave no time axis, whatever they are given.
POOLED = {"GlobalMaxPooling1D", "GlobalAveragePooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling2D"}
# Layers that slide over their spatial axes; the first spatial axis is time when channels come last.
SPATIAL = {"Conv1D", "Conv2D", "MaxPooling1D", "AveragePooling1D", "MaxPooling2D", "AveragePooling2D",
           "SpatialDropout1D", "SpatialDropout2D"}
NORMALISATIONS = {"BatchNormalization", "LayerNormalization"}


@dataclass
class TimeAxis:
    """What the walk found: one problem line per layer that ties the model to a length, the
    target shapes of Reshape layers that reshape each step, spelled for any length, and which
    model outputs carry the input's time axis (a RepeatVector's copies are as many as it says)."""

    problems: dict[str, str] = field(default_factory=dict)
    per_step_reshapes: dict[str, list[int]] = field(default_factory=dict)
    timed_outputs: list[bool] = field(default_factory=list)


def _shape(shape: Any) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _ties(layer: Any, shape: Any, what: str) -> str:
    steps = shape[1]
    length = f"the model runs at length {steps} only" if steps is not None else "no length gives it a fixed size"
    return (f"layer '{layer.name}' ({type(layer).__name__}) is not supported: it {what} of its input "
            f"{_shape(shape)}, so {length}; rnnexport exports models that accept any length")


def _reshape(layer: Any, shape: Any, found: TimeAxis) -> str | None:
    """None if the Reshape reshapes each step of `shape` on its own (recording its any-length target)."""
    target = list(layer.target_shape)
    per_step = math.prod(shape[2:]) if None not in shape[2:] else None
    if not target or per_step is None or target[0] not in (-1, None, shape[1]):
        return _ties(layer, shape, "reshapes the time axis")
    rest = list(target[1:])
    if rest.count(-1) == 1 and target[0] not in (-1, None):
        known = math.prod(d for d in rest if d != -1)
        rest = [per_step // known if d == -1 else d for d in rest] if per_step % known == 0 else rest
    if -1 in rest or None in rest or math.prod(rest) != per_step:
        return _ties(layer, shape, "reshapes the time axis")
    if target[0] not in (-1, None):
        found.per_step_reshapes[layer.name] = [-1, *rest]
    return None


def _normalised_axes(layer: Any, rank: int) -> set[int]:
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return {a % rank for a in axes}


def _first_output(layer: Any, shape: Any, out_shape: Any, found: TimeAxis) -> tuple[bool, str | None]:
    """Whether the layer's first output carries time on axis 1, given an input `shape` that does,
    and the problem if it ties the model to one length."""
    kind = type(layer).__name__
    if kind in RECURRENT or kind == "Bidirectional":
        return bool(layer.return_sequences), None
    if kind in POOLED:
        return False, None
    if kind == "Flatten":
        return True, (_ties(layer, shape, "folds the time axis into the features") if len(shape) > 2 else None)
    if kind == "Reshape":
        return True, _reshape(layer, shape, found)
    if kind == "Permute":
        return True, None if layer.dims[0] == 1 else _ties(layer, shape, f"moves the time axis (dims {layer.dims})")
    if kind == "RepeatVector":
        return True, _ties(layer, shape, "repeats a sequence whose features are the time steps")
    if kind in SPATIAL and getattr(layer, "data_format", "channels_last") == "channels_first":
        return True, _ties(layer, shape, "takes axis 1 as channels (data_format channels_first), not as the time axis")
    # Over [batch, T] alone, axis 1 may as well be features: only [batch, T, ...] is judged.
    if kind in NORMALISATIONS and len(shape) > 2 and 1 in _normalised_axes(layer, len(shape)):
        return True, _ties(layer, shape, "holds parameters per time step (it normalises over axis 1)")
    if len(out_shape) < 2:
        return False, None
    if kind in SUPPORTED:
        # Per step, or sliding over time (strided windows shorten it, they keep it on axis 1).
        return True, None
    # Custom layers and ops keep time where their output keeps the input's steps.
    return out_shape[1] == shape[1], None


def walk(model: Any) -> TimeAxis:
    """Follow time from the model's inputs to its outputs, layer by layer."""
    functional = getattr(model, "_functional", None) or model
    producers = {id(t): (layer, node) for layer in functional.layers
                 for node in getattr(layer, "_inbound_nodes", []) for t in node.output_tensors}
    inputs = {id(t) for t in functional.inputs}
    timed: dict[int, bool] = {}
    found = TimeAxis()

    def visit(tensor: Any) -> bool:
        key = id(tensor)
        if key not in timed:
            if key in inputs or key not in producers:
                timed[key] = len(tensor.shape) >= 2
            else:
                layer, node = producers[key]
                flags = [visit(t) for t in node.input_tensors]
                outputs = [False] * len(node.output_tensors)
                if any(flags):
                    shape = node.input_tensors[flags.index(True)].shape
                    outputs[0], problem = _first_output(layer, shape, node.output_tensors[0].shape, found)
                    if problem:
                        found.problems.setdefault(layer.name, problem)
                for t, flag in zip(node.output_tensors, outputs):
                    timed[id(t)] = flag
        return timed[key]

    found.timed_outputs = [visit(output) for output in functional.outputs]
    return found
