"""The canonical hand-off between sources and targets, and what `inspect` reports.

A source builds a `RecurrentModel`: TensorFlow code whose sequence entry point takes
`[batch, time, ...]` with both leading dimensions dynamic. Targets only ever see this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a model. `None` in `shape` is a dynamic dimension.

    `time_axis` is None for tensors without a time dimension (a final state, a class score).
    For token-id inputs `vocab_size` bounds the ids; `mask_value` is the padding value the
    model masks (0 for `Embedding(mask_zero=True)`, the `Masking` layer's value otherwise).
    `role` is `lengths` for a `[batch]` input holding each row's true length (TF1's
    `sequence_length`), `data` otherwise.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    time_axis: int | None = 1
    vocab_size: int | None = None
    mask_value: float | None = None
    role: str = "data"

    def describe(self) -> str:
        dims = []
        for axis, dim in enumerate(self.shape):
            if axis == 0:
                dims.append("batch")
            elif axis == self.time_axis:
                dims.append("time")
            else:
                dims.append("?" if dim is None else str(dim))
        extra = f" ids<{self.vocab_size}" if self.vocab_size else ""
        if self.mask_value is not None:
            extra += f" masks={self.mask_value:g}"
        if self.role == "lengths":
            extra += " (sequence lengths)"
        return f"{self.name} {self.dtype}[{', '.join(dims)}]{extra}"


@dataclass(frozen=True)
class LayerInfo:
    """A layer as `inspect` shows it; `units` and `direction` are set for recurrent layers."""

    name: str
    kind: str
    recurrent: bool = False
    units: int | None = None
    direction: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceInfo:
    """What a source plugin found. `problems` lists what blocks an export (empty: exportable).

    `min_length` is the shortest sequence the model can run (a valid convolution of kernel k needs
    k steps); the default sweep starts there."""

    path: str
    kind: str
    format: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    layers: tuple[LayerInfo, ...]
    fixed_length: int | None
    causal: bool
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    min_length: int = 1

    @property
    def exportable(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exportable"] = self.exportable
        return data


# Activation names a recurrence may carry. `hard_sigmoid` is Keras 3's (relu6(x + 3) / 6),
# `hard_sigmoid_keras2` is clip(0.2 x + 0.5, 0, 1).
ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear", "hard_sigmoid", "hard_sigmoid_keras2")


@dataclass(frozen=True)
class DirectionWeights:
    """One direction's weights, in Keras's convention whatever the source.

    Gate order along the last axis: LSTM i, f, c, o; GRU z, r, h; simple RNN one block.
    `recurrent_bias` is zero except for GRUs with `reset_after=True`.

    LSTMs only, as TF1's `LSTMCell` computes them (None: the cell has none):
    `peepholes` [3, units], rows i, f, o (`w_i_diag`, `w_f_diag`, `w_o_diag`): the input and
    forget gates add `peepholes[0] * c_prev` and `peepholes[1] * c_prev` before their activation,
    the output gate adds `peepholes[2] * c` with the new cell state `c`.
    `projection` [units, num_proj]: the output and the recurrent state `h` are
    `(o * tanh(c)) @ projection`, so `recurrent_kernel` is [num_proj, 4 * units].
    """

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    input_bias: np.ndarray
    recurrent_bias: np.ndarray
    peepholes: np.ndarray | None = None
    projection: np.ndarray | None = None


@dataclass(frozen=True)
class Recurrence:
    """A recurrent layer as targets see it: cell kind, direction, activations and weights.

    `directions` holds the forward weights, then the backward ones for bidirectional layers.
    `go_backwards` (one direction only): the layer reads the sequence from its last step to its
    first and returns its outputs in that reversed order, as Keras's `go_backwards=True` does.
    `zero_output_for_mask`: a masked step outputs zeros; otherwise (Keras's default for a layer
    on its own; a Bidirectional sets it when returning sequences) it repeats the last output.
    `cell_clip` (LSTMs, TF1 `LSTMCell`): the new cell state is clipped to [-cell_clip, cell_clip]
    before the output gate reads it; `proj_clip` clips the projected output the same way.
    `unfusable` says why no target can emit this layer as one fused op (empty: some target may;
    each target still checks what its own fused op can compute).
    """

    name: str
    cell: str
    units: int
    directions: tuple[DirectionWeights, ...]
    activation: str
    recurrent_activation: str
    return_sequences: bool
    return_state: bool = False
    merge_mode: str | None = None
    reset_after: bool = False
    go_backwards: bool = False
    zero_output_for_mask: bool = False
    cell_clip: float | None = None
    proj_clip: float | None = None
    unfusable: str = ""

    @property
    def bidirectional(self) -> bool:
        return len(self.directions) == 2


@dataclass(frozen=True)
class LayerCall:
    """How a recurrent layer is called at one place in the traced graph, besides its input.

    `mask` is the bool [batch, time] mask Keras gives the layer (None: none); `lengths` is the
    int32 [batch] count of each row's leading unmasked steps, computed in the graph from `mask`
    (it equals the mask only when the mask has no holes: a False followed by a True in a row).
    `initial_state` holds the tensors the layer starts from, in Keras's order (LSTM h, c, also
    for a cell that keeps them as c, h; a bidirectional layer the forward states, then the
    backward ones); None: zeros. A replacement returns the layer's states in that order too,
    after its output (after both outputs for a bidirectional layer with `merge_mode=None`).
    `own()` computes the layer as the source does, outputs in that same order: a replacement
    that only serves some inputs (a mask without holes) may choose between the two at run time.
    """

    lengths: Any = None
    mask: Any = None
    initial_state: tuple[Any, ...] | None = None
    own: Callable[[], Any] | None = None


# Given a recurrence, its input tensor [batch, time, features] and how it is called, return what
# the layer returns; or a `str` saying why the layer keeps its own computation (recorded as the
# reason, by layer name); or None to keep it with no reason of the replacement's own.
Replacement = Callable[[Recurrence, Any, LayerCall], Any]


# A step entry point returns the state after its chunk under the state's name with this suffix.
NEXT = "_next"


# The role of a causal window's state: the last inputs a convolution, pooling or left padding read.
WINDOW = "window"


def state_name(layer: str, role: str) -> str:
    """The name of the state `role` (`h`, `c` or `window`) of layer `layer`: `<layer>_<role>`."""
    return f"{layer}_{role}"


def next_name(state: str) -> str:
    """The name a step entry point returns state `state` under, after its chunk."""
    return state + NEXT


@dataclass(frozen=True)
class StateInfo:
    """One state tensor `[batch, *shape]` a streaming export carries between chunks.

    The step entry point takes it as input `name` (`<layer>_<role>`) and returns the state after
    the chunk as output `next_name` (`<layer>_<role>_next`). A recurrent layer's roles are `h` and
    `c`, each `[units]` per row; a causal window's role is `window`, `[steps, channels]` per row:
    the last `steps` inputs the layer read (zeros before the first chunk, as its padding implies).
    `holds` says what it is in words, as `inspect` shows it.
    """

    name: str
    next_name: str
    layer: str
    role: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @classmethod
    def of(cls, layer: str, role: str, shape: int | tuple[int, ...], dtype: str = "float32") -> StateInfo:
        name = state_name(layer, role)
        return cls(name, next_name(name), layer, role, (shape,) if isinstance(shape, int) else tuple(shape), dtype)

    @property
    def holds(self) -> str:
        """`lstm h`, `conv window, 2 steps x 10 channels`."""
        if self.role == WINDOW:
            steps, channels = self.shape
            return f"{self.layer} window, {steps} step{'s' * (steps != 1)} x {channels} channels"
        return f"{self.layer} {self.role}"


@dataclass(frozen=True)
class Streaming:
    """The entry points of a streaming export, `tf.function`s tracked by the model's module.

    `initial_state(batch)` returns the state before the first chunk, keyed by state name.
    `step(*inputs, *states)` runs one chunk of any length, one step included, and returns the
    outputs keyed by output name plus the states after the chunk keyed by their `next_name`.
    `trace_step(batch)` traces `step` again at a fixed batch (TFLite needs one);
    `trace_step_with(replacement, batch)` traces it with the recurrent layers replaced, as
    `RecurrentModel.trace_with` does, and returns it with the reasons of the layers kept.
    """

    states: tuple[StateInfo, ...]
    initial_state: Any
    step: Any
    trace_step: Callable[[int | None], Any]
    trace_step_with: Callable[[Replacement | None, int | None], tuple[Any, dict[str, str]]] | None = None


@dataclass(frozen=True)
class RecurrentModel:
    """A variable-length model ready for export.

    `module` is a `tf.Module` that tracks every variable the model reads; `sequence` is a
    `tf.function` with an input signature of dynamic batch and time, taking the inputs as
    keyword arguments named after `info.inputs` and returning a dict keyed by `info.outputs`.

    `trace_with(replacement, batch)` traces the same function, at a fixed batch if given, with
    each recurrent layer computed by `replacement` instead where the layer can be and the
    replacement returns outputs (a `str` or None keeps the layer). It returns the `tf.function`
    and, per layer the source kept, the reason. Targets use it to emit fused recurrent ops.

    `streaming()` builds the step entry points of a causal model (once; later calls return the
    same); it is None when the model cannot stream, and `not_streamable` says why, naming the layer.
    """

    info: SourceInfo
    module: Any
    sequence: Any
    recurrences: tuple[Recurrence, ...] = ()
    trace_with: Callable[[Replacement | None, int | None], tuple[Any, dict[str, str]]] | None = None
    streaming: Callable[[], Streaming] | None = None
    not_streamable: str = ""
