"""The shortest sequence a Keras model can run: valid convolutions and pooling shorten time, and a
layer left with no step fails. Stacks compose: Conv1D(kernel 5) then MaxPooling1D(2) needs 6 steps.
Conv2D and 2-D pooling over (time, frequency) count along their first spatial axis, time."""

from __future__ import annotations

from typing import Any

POOLING = ("MaxPooling1D", "AveragePooling1D", "MaxPooling2D", "AveragePooling2D")
# Over (time, frequency) inputs, the first spatial axis is time.
CONVOLUTIONS = ("Conv1D", "Conv2D")
# Padding lengthens time before a valid window reads it.
PADDING = "ZeroPadding1D"
# Far beyond any kernel stack; a model still failing there cannot run at all.
LONGEST = 1 << 20


def window(layer: Any) -> tuple[int, int, int] | None:
    """(steps one output reads, stride, dilation) of a layer that slides over time, else None."""
    kind = type(layer).__name__
    if kind in CONVOLUTIONS:
        return layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0]
    if kind in POOLING:
        return layer.pool_size[0], layer.strides[0], 1
    return None


def _out_length(layer: Any, steps: int) -> int:
    if type(layer).__name__ == PADDING:
        return steps + sum(layer.padding)
    sliding = window(layer)
    if sliding is None:
        return steps
    size, stride, dilation = sliding
    if layer.padding != "valid":
        return -(-steps // stride)
    span = dilation * (size - 1) + 1
    return (steps - span) // stride + 1 if steps >= span else 0


def _runs(layers: list[Any], steps: int) -> bool:
    for layer in layers:
        steps = _out_length(layer, steps)
        if steps < 1:
            return False
    return True


def _reason(layer: Any) -> str:
    size, stride, dilation = window(layer)
    what = "kernel" if type(layer).__name__ in CONVOLUTIONS else "pool"
    parts = [f"{what} {size}"] + ([f"dilation {dilation}"] if dilation > 1 else []) + (
        [f"stride {stride}"] if stride > 1 else [])
    return f"{layer.name}: {', '.join(parts)}, {layer.padding} padding"


def _chains(model: Any) -> list[list[Any]]:
    """Every path of layers from an input to an output, in order (one for a Sequential model)."""
    functional = getattr(model, "_functional", None) or model
    by_output: dict[int, Any] = {}
    for layer in functional.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in node.output_tensors:
                by_output[id(tensor)] = (layer, node)
    inputs = {id(t) for t in functional.inputs}

    def paths(tensor: Any) -> list[list[Any]]:
        if id(tensor) in inputs or id(tensor) not in by_output:
            return [[]]
        layer, node = by_output[id(tensor)]
        upstream = [p for t in node.input_tensors for p in paths(t)] or [[]]
        return [[*p, layer] for p in upstream]

    return [p for out in functional.outputs for p in paths(out)]


def shortest(model: Any) -> tuple[int, list[str]]:
    """The fewest steps every path through `model` runs with, and the layers that ask for more than one."""
    chains = [[layer for layer in chain if window(layer) is not None or type(layer).__name__ == PADDING]
              for chain in _chains(model)]
    chains = [chain for chain in chains if chain]
    if not chains:
        return 1, []
    low, high = 1, 1
    while not all(_runs(chain, high) for chain in chains):
        low, high = high + 1, high * 2
        if high > LONGEST:
            return 1, []
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if all(_runs(chain, middle) for chain in chains) else (middle + 1, high)
    limiting = {layer.name: layer for chain in chains for layer in chain
                if type(layer).__name__ != PADDING and layer.padding == "valid" and _out_length(layer, 1) < 1}
    return low, [_reason(layer) for layer in limiting.values()]
