"""The one contract every backend runs behind: named numpy arrays in, named arrays out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

Arrays = dict[str, np.ndarray]


class Runner(Protocol):
    """Runs one artifact (or the source) on one device. `device` names where numbers came from."""

    name: str
    device: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays: ...


class ReferenceRunner(Runner, Protocol):
    def method(self, inputs: Mapping[str, np.ndarray]) -> str:
        """How the reference serves these inputs (e.g. the source as is, or rebuilt)."""
        ...

    # A reference may also define `serves(inputs) -> str`: why it holds no ground truth for
    # these inputs (empty when it does). The parity engine then skips the case and says why.
