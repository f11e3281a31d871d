"""Placeholders a TF1 graph takes besides the sequence and its lengths, and what inference feeds
them: a dropout gate (`keep_prob`, `dropout`, a `PlaceholderWithDefault`) gets the value that
switches dropout off, and an initial-state placeholder gets zeros, which is where the export's
cells start (a streaming export takes the state as an input instead). Any other placeholder is
refused: the export would compute something else."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnexport_converters.tf1.graph import GraphView, ancestors
from rnnexport.errors import UnsupportedModelError

# Values that switch dropout off, tried in order: keep_prob 1, else a rate of 0; a bool flag is
# a tf.cond's `training`.
GATE_VALUES = (1.0, 0.0)
FLAG_VALUES = (False,)


@dataclass(frozen=True)
class Feeds:
    """What inference feeds the placeholders that are not export inputs."""

    gates: Mapping[str, float | bool] = field(default_factory=dict)
    # Initial-state placeholders: their shapes, None where the batch goes.
    states: Mapping[str, tuple[int | None, ...]] = field(default_factory=dict)

    def arrays(self, batch: int) -> dict[str, np.ndarray]:
        arrays = {name: np.asarray(value, np.bool_ if isinstance(value, bool) else np.float32)
                  for name, value in self.gates.items()}
        for name, shape in self.states.items():
            arrays[name] = np.zeros([batch if d is None else d for d in shape], np.float32)
        return arrays

    def describe(self) -> list[str]:
        notes = [f"'{name}' gates dropout; fed {value:g}, which switches it off, and left out of the export"
                 for name, value in self.gates.items() if not isinstance(value, bool)]
        notes += [f"'{name}' is a training flag; fed {value}, so what it turns on for training (dropout, tf.cond branches) is left out"
                  for name, value in self.gates.items() if isinstance(value, bool)]
        notes += [f"'{name}' holds an initial state; fed zeros, where the export's cells start" for name in self.states]
        return notes


def classify(view: GraphView, output: str, extra: list[str], gates: set[str], initials: list[str]) -> Feeds:
    """The feeds of the placeholders in `extra`: dropout `gates`, and placeholders that reach the
    output only through the cells' initial-state tensors `initials`. Gate values are still unset."""
    beyond = ancestors([view.tensor(output)], stop={view.tensor(t).op.name for t in initials})
    states = {}
    for name in extra:
        if name in gates:
            continue
        tensor = view.tensor(name)
        if tensor.op.name in beyond or tensor.shape.rank is None or not tensor.dtype.is_floating:
            raise UnsupportedModelError(f"input '{name}' feeds '{output}' but is neither the sequence input, its "
                                        "sequence_length, a dropout keep_prob nor an initial state")
        states[name] = tuple(tensor.shape.as_list())
    return Feeds({name: _values(view.tensor(name))[0] for name in sorted(gates & set(extra))}, states)


def _values(gate: Any) -> tuple[float | bool, ...]:
    return FLAG_VALUES if gate.dtype.is_bool else GATE_VALUES


def switched_off(label: str, feeds: Feeds, run: Callable[[Mapping[str, Any]], list[np.ndarray]],
                 distance: Callable[[np.ndarray], float]) -> Feeds:
    """`feeds` with gate values that switch dropout off. keep_prob spellings need 1 and rate
    spellings 0, where the other extreme divides by zero (NaN) or drops every element (zeros,
    which are deterministic too); a training flag is fed False. Of the values with which the
    graph, run twice in one session by `run`, gives the same finite output, those whose output
    is nearest (`distance`) to the recognised model's, which has no dropout."""
    if not feeds.gates:
        return feeds
    names = sorted(feeds.gates)
    choices = [FLAG_VALUES if isinstance(feeds.gates[name], bool) else GATE_VALUES for name in names]
    best: tuple[float, dict[str, float | bool]] | None = None
    for values in itertools.product(*choices):
        gates = dict(zip(names, values))
        first, second = run(gates)
        if np.all(np.isfinite(first)) and np.array_equal(first, second):
            near = distance(first)
            if best is None or near < best[0]:
                best = (near, gates)
    if best is None:
        raise UnsupportedModelError(f"{label}: placeholder '{names[0]}' gates random ops (dropout) that stay "
                                    "random or give NaN whether fed 1 or 0; rnnexport exports inference graphs, "
                                    "without dropout")
    return Feeds(best[1], feeds.states)
