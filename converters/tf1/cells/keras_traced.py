"""What the Keras-traced cells share: Keras on the TensorFlow backend (Keras 2.x's `K.rnn`, tf.keras,
Keras 3) traces x.W and h.U as separate MatMuls with Keras's own weights (kernel, recurrent_kernel,
bias), so the cell becomes the same Keras layer again with its weights as they are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rnnexport_converters.tf1.cells import traced
from rnnexport_converters.tf1.cells.base import Cell, CellMatch, Step
from rnnexport_converters.tf1.graph import GraphView


@dataclass(frozen=True, kw_only=True)
class KerasMatch(CellMatch):
    layer: ClassVar[str]  # the Keras layer class
    unrolled_by = "unroll=True"
    separate_matmuls = True

    recurrent_kernel: str
    biases: tuple[str, ...]
    recurrent_activation: str = "sigmoid"  # of the gates; a SimpleRNN has none

    def revealed_recurrent_kernel(self) -> str | None:
        return self.recurrent_kernel

    def weights(self) -> dict[str, str]:
        roles = {"kernel": self.kernel, "recurrent_kernel": self.recurrent_kernel}
        roles.update({f"bias_{i}": b for i, b in enumerate(self.biases)})
        return {role: name for role, name in roles.items() if name}

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "recurrent_activation": self.recurrent_activation}

    def details(self, cell: Cell) -> list[str]:
        gates = [f"recurrent_activation={self.recurrent_activation}"] if self.recurrent_activation != "sigmoid" else []
        return [*super().details(cell), *gates]

    def _bias(self, biases: list[np.ndarray], kernel: np.ndarray) -> np.ndarray:
        return biases[0] if biases else np.zeros(kernel.shape[1], np.float32)

    def cell(self, view: GraphView, key: str, steps: Sequence[Step]) -> Cell:
        kernel, recurrent = traced.value(view, self.kernel), traced.value(view, self.recurrent_kernel)
        bias = self._bias([traced.value(view, b) for b in self.biases], kernel)
        units = recurrent.shape[0]
        weights = {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
        return Cell(key, units, kernel.shape[0], units, weights, self, tuple(steps))

    def scope(self, cell: Cell) -> str:
        """The layer's name: what encloses its while loop (`lstm_2/while/mul_5`), or the step's
        cell scope (`lstm/lstm_cell_3/mul_5`)."""
        op = cell.steps[0].output.split(":")[0]
        return op.split("/while/")[0] if "/while/" in op else op.rsplit("/", 2)[0]

    def keras_options(self) -> dict[str, Any]:
        """What the Keras layer takes besides units, activation and `common`."""
        return {"recurrent_activation": traced.keras_activation(self.recurrent_activation)}

    def keras_layer(self, cell: Cell, common: dict[str, Any]) -> tuple[Any, list[np.ndarray]]:
        import keras

        layer = getattr(keras.layers, self.layer)(cell.units, activation=cell.activation, **self.keras_options(),
                                                  **common)
        return layer, [cell.weights[k] for k in ("kernel", "recurrent_kernel", "bias")]
