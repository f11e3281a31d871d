"""Causal windows in a streaming Keras model: convolutions and pooling over time, cut into chunks.

A layer that left-pads time with zeros (`Conv1D(padding="causal")`, `ZeroPadding1D((p, 0))`)
carries its last `p` input steps from one chunk to the next as a state, `[batch, p, channels]`,
zeros before the first chunk, as the padding implies: a chunk is the state followed by its own
steps. Valid windows downstream (`Conv1D(padding="valid")`, `MaxPooling1D`/`AveragePooling1D`
with `strides=1`) then read the padded steps the way they read the zeros on a whole sequence.

`plan` walks the model's graph counting, for every tensor, the steps a chunk carries before its
own (the "lead"): left padding adds its `p`, a valid window of span `s` consumes `s - 1`. A window
that would need more than the lead reads steps after the one it outputs (it looks ahead), and a
recurrent layer or a model output must see exactly the chunk's own steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Windows over time that keep one output step per input step when `strides=1`.
CONVOLUTION = "Conv1D"
POOLING = frozenset({"MaxPooling1D", "AveragePooling1D"})
PADDING = "ZeroPadding1D"
LAYERS = frozenset({CONVOLUTION, PADDING, *POOLING})


@dataclass(frozen=True)
class Window:
    """A layer that carries its last `steps` inputs of `channels` features between chunks."""

    layer: Any
    steps: int
    channels: int


def steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def _span(layer: Any) -> int:
    """The steps before the current one that one output of a window layer reads."""
    if type(layer).__name__ == CONVOLUTION:
        return (layer.kernel_size[0] - 1) * layer.dilation_rate[0]
    return layer.pool_size[0] - 1


def _channels_last(layer: Any) -> str:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return (f"layer '{layer.name}' ({type(layer).__name__}) has data_format={layer.data_format}; only time on "
                "axis 1 streams")
    return ""


def _windowed(layer: Any, lead: int) -> tuple[int, str, bool]:
    """The lead after a convolution or pooling layer given `lead`, or why it cannot stream and
    whether that is because it looks ahead."""
    kind = type(layer).__name__
    refused = _channels_last(layer)
    if refused:
        return 0, refused, False
    stride, span = layer.strides[0], _span(layer)
    if stride != 1:
        return 0, (f"layer '{layer.name}' ({kind}, strides={stride}) keeps one step in {stride}, so a chunk's steps "
                   "would not line up with its outputs; only strides=1 streams"), True
    if layer.padding == "causal":
        return lead, "", False
    if layer.padding == "same":
        return 0, (f"layer '{layer.name}' ({kind}, padding='same') reads {steps(span - span // 2)} after the one it "
                   "outputs, which a chunk does not have yet; padding='causal' (or ZeroPadding1D((n, 0)) before "
                   "padding='valid') streams"), True
    if lead < span:
        return 0, (f"layer '{layer.name}' ({kind}, padding='valid') reads {steps(span - lead)} after the one it "
                   f"outputs, which a chunk does not have yet; left-pad it with ZeroPadding1D(({span}, 0)) or use a "
                   "causal window to stream"), True
    return lead - span, "", False


@dataclass
class Plan:
    """The windows a model carries, why it cannot stream (empty: it can), and whether that is
    because a window reads steps after the one it outputs."""

    windows: list[Window]
    refused: str = ""
    ahead: bool = False


def _key(tensor: Any) -> tuple[int, int]:
    history = tensor._keras_history
    return id(history.operation), history.tensor_index


def _inputs(layer: Any) -> list[Any]:
    return list(layer._inbound_nodes[0].input_tensors) if layer._inbound_nodes else []


def plan(layers: list[Any], outputs: list[Any], per_step: frozenset[str] | None) -> Plan:
    """Walk `layers` (in graph order) and find the windows; padding may only reach the layers
    whose kind is in `per_step` before a valid window consumes it (None: any layer)."""
    leads: dict[tuple[int, int], int] = {}
    windows: list[Window] = []

    def fail(reason: str, ahead: bool = False) -> Plan:
        return Plan(windows, reason, ahead)

    for layer in layers:
        kind = type(layer).__name__
        given = {leads.get(_key(t), 0) for t in _inputs(layer)}
        lead = max(given, default=0)
        if kind in LAYERS and len(layer._inbound_nodes) > 1:
            return fail(f"layer '{layer.name}' ({kind}) is called {len(layer._inbound_nodes)} times; a window streams "
                        "when each layer is called once")
        if len(given) > 1:
            return fail(f"layer '{layer.name}' ({kind}) joins tensors padded by different numbers of steps "
                        f"({', '.join(map(str, sorted(given)))}), which no chunk lines up")
        if kind == PADDING:
            refused = _channels_last(layer)
            if refused:
                return fail(refused)
            left, right = layer.padding
            if right:
                return fail(f"layer '{layer.name}' (ZeroPadding1D) adds {steps(right)} after the sequence's end, which "
                            "no chunk knows it has reached; only left padding streams")
            if left:
                windows.append(Window(layer, left, int(layer.input.shape[-1])))
            lead += left
        elif kind == CONVOLUTION or kind in POOLING:
            lead, refused, ahead = _windowed(layer, lead)
            if refused:
                return fail(refused, ahead)
            if kind == CONVOLUTION and layer.padding == "causal" and _span(layer):
                windows.append(Window(layer, _span(layer), int(layer.input.shape[-1])))
        elif lead and per_step is not None and kind not in per_step:
            return fail(f"layer '{layer.name}' ({kind}) would read the {steps(lead)} of zeros that padding adds before "
                        "each chunk as steps of the sequence; only a valid window after the padding streams")
        for index in range(len(layer._inbound_nodes[0].output_tensors) if layer._inbound_nodes else 0):
            leads[(id(layer), index)] = lead
    for tensor in outputs:
        lead = leads.get(_key(tensor), 0)
        if lead and per_step is not None:
            return fail(f"output '{tensor._keras_history.operation.name}' would hold the {steps(lead)} of zeros that "
                        "padding adds before each chunk; only a valid window after the padding streams")
    return Plan(windows)


@contextlib.contextmanager
def valid_padding(layer: Any) -> Iterator[None]:
    """A causal convolution computing over steps it is given whole: its padding is the state."""
    saved = layer.padding
    layer.padding = "valid"
    try:
        yield
    finally:
        layer.padding = saved


def call(window: Window, operation: Any, x: Any, state: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """What `window`'s layer returns on a chunk `x` after the steps `state` holds, and the state
    after the chunk: its last `window.steps` inputs."""
    from keras import ops

    joined = ops.concatenate([state, x], axis=1)
    # Sliced off a chunk of any length, the last steps' count is only known once reshaped: every
    # format then declares the state it returns with the shape it takes.
    after = ops.reshape(joined[:, -window.steps:, :], (-1, window.steps, window.channels))
    if type(operation).__name__ == PADDING:
        return joined, after
    with valid_padding(operation):
        return operation(joined, **kwargs), after
