"""What recognition makes of a graph: cell steps, the typed match a pattern makes of one step, and
the cell that a chain of matching steps forms.

A match knows what differs from one cell pattern to another: the weights and hyperparameters it
read, how it describes itself, the Keras layer it becomes and how its weights convert to that
layer's, and the order in which that layer takes its states.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rnnexport_converters.tf1.graph import GraphView
from rnnexport.errors import UnsupportedModelError


@dataclass(frozen=True)
class Step:
    """One application of a cell: its input `x`, state tensors in and out, output tensor, and the
    ops it consists of. `state_in`/`state_out` hold (c, h) for LSTMs and (h,) otherwise, as tensor
    names."""

    x: str
    state_in: tuple[str, ...]
    state_out: tuple[str, ...]
    output: str
    ops: frozenset[str] = frozenset()


@dataclass(frozen=True, eq=False)
class Cell:
    """A recognised cell: one pattern's step applied in `steps` (time order; one step inside a
    loop). `weights` holds the values the pattern read, by role, in the source's own layout;
    `match` is step 0's match, which knows the pattern."""

    key: str
    units: int
    input_size: int
    output_size: int
    weights: Mapping[str, np.ndarray]
    match: CellMatch
    steps: tuple[Step, ...]

    @property
    def kind(self) -> str:
        return self.match.kind

    @property
    def activation(self) -> str:
        return self.match.activation

    @property
    def scope(self) -> str:
        """The cell's variable scope, for people to recognise it."""
        return self.match.scope(self)

    @property
    def looped(self) -> bool:
        """True for a cell run inside a `while` loop (dynamic_rnn), False when unrolled."""
        return len(self.steps) == 1 and "/while/" in f"/{self.steps[0].output}"

    def describe(self) -> str:
        return self.match.describe(self)


@dataclass(frozen=True, kw_only=True)
class CellMatch:
    """One step as a pattern recognised it: the kernel it reads (the cell's key), its activation
    and its Step. Subclasses add the other weights and hyperparameters their pattern reads."""

    kind: ClassVar[str]  # lstm, gru or rnn
    title: ClassVar[str]  # the cell class, as `inspect` names it
    unrolled_by: ClassVar[str] = "static_rnn"  # what unrolls a graph of this cell into steps
    # The cell already computes x.W + h.U as two MatMuls, as every export does, so the exports
    # reassociate no sums and need no tolerance floor.
    separate_matmuls: ClassVar[bool] = False

    kernel: str
    activation: str
    step: Step

    @property
    def state_roles(self) -> tuple[str, ...]:
        """The states of a step, in the order `Step.state_in` holds them."""
        return ("c", "h") if self.kind == "lstm" else ("h",)

    def revealed_recurrent_kernel(self) -> str | None:
        """The weight this step multiplies its state by, where the pattern tells it from the input
        kernel; other steps use it to tell their two MatMuls apart."""
        return None

    def weights(self) -> dict[str, str]:
        """Every weight the step reads, by role (the roles of `Cell.weights`)."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """What every step of one cell must share besides its weights."""
        return {"kind": self.kind, "activation": self.activation}

    def cell(self, view: GraphView, key: str, steps: Sequence[Step]) -> Cell:
        """The cell these steps (this match's first) form, its weights read."""
        raise NotImplementedError

    def details(self, cell: Cell) -> list[str]:
        return [f"activation={self.activation}"] if self.activation != "tanh" else []

    def describe(self, cell: Cell) -> str:
        return f"{self.title}({', '.join([f'units={cell.units}', *self.details(cell)])})"

    def scope(self, cell: Cell) -> str:
        return cell.key.rsplit("/", 1)[0]

    def keras_layer(self, cell: Cell, common: dict[str, Any]) -> tuple[Any, list[np.ndarray]]:
        """The Keras layer that computes this cell (`common`: its name, direction and what it
        returns), and the weights to set on it."""
        raise NotImplementedError

    def keras_state_order(self, cell: Cell) -> tuple[str, ...]:
        """The states, by role, in the order the Keras layer takes them (Keras's LSTM: h, c)."""
        return ("h", "c") if self.kind == "lstm" else ("h",)


@dataclass(frozen=True, kw_only=True)
class Tf1Match(CellMatch):
    """A TF1 cell class: its gates one MatMul of concat([x, h]) by one kernel, one bias added."""

    gates: ClassVar[int]

    bias: str | None

    def weights(self) -> dict[str, str]:
        return {role: name for role, name in self._named().items() if name}

    def _named(self) -> dict[str, str | None]:
        return {"kernel": self.kernel, "bias": self.bias}

    def cell(self, view: GraphView, key: str, steps: Sequence[Step]) -> Cell:
        weights = {"kernel": view.value(self.kernel)}
        if self.bias:
            weights["bias"] = view.value(self.bias)
        units = weights["kernel"].shape[1] // self.gates
        output_size = self._read_more(view, units, weights)
        if "bias" not in weights:
            raise UnsupportedModelError(f"cell '{self.kernel}' has no bias variable; TF1 cells always add one")
        return Cell(key, units, weights["kernel"].shape[0] - output_size, output_size, weights, self, tuple(steps))

    def _read_more(self, view: GraphView, units: int, weights: dict[str, np.ndarray]) -> int:
        """Read the pattern's other weights into `weights`; the cell's output size."""
        return units
