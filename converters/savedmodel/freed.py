"""A serving signature traced at one length, run at any length: the signature frozen, its While
loops lowered to TF1 loops, and its sequence inputs imported as placeholders whose time axis is
free (as the TF1 reference frees a `dynamic_rnn` graph's input).

It is trusted only after it reproduces the signature at the traced length, runs at a short and a
long length with outputs of the right batch and length, and reads the last step of the long one
(a loop bounded by the traced length would stop before it). Otherwise `why_not` says why, and
the signature stays the only reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnexport.errors import one_line
from rnnexport.tf import tensorflow

# The freed graph must reproduce the signature this closely at the traced length: the same ops
# on the same constants, only the loop lowered.
FREED_ATOL = 1e-6


class FreedSignature:
    """The lowered signature in a Session. `inputs` and `outputs` pair the export's names with
    the signature's; `fixed` is the traced length."""

    def __init__(self, signature: Any, inputs: Sequence[tuple[str, str]], outputs: Sequence[tuple[str, str]],
                 fixed: int, min_length: int, device: str) -> None:
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        tf = tensorflow()
        self.inputs, self.outputs, self.fixed = list(inputs), list(outputs), fixed
        self.session: Any = None
        self.why_not = ""
        specs = dict(signature.structured_input_signature[1])
        try:
            frozen = convert_variables_to_constants_v2(signature, lower_control_flow=True)
        except Exception as exc:  # noqa: BLE001 - freezing raises many types on graphs it cannot take
            self.why_not = f"it cannot be frozen and lowered ({one_line(exc)})"
            return
        # The frozen function's inputs and outputs follow the signature's keys, sorted.
        placeholders = dict(zip(sorted(specs), (t.op.name for t in frozen.inputs)))
        self.fetches = dict(zip(sorted(signature.structured_outputs), (t.name for t in frozen.outputs)))
        self.feeds = {theirs: f"{placeholders[theirs]}:0" for _, theirs in self.inputs}
        self.dtypes = {theirs: specs[theirs].dtype.as_numpy_dtype for _, theirs in self.inputs}
        graph_def = frozen.graph.as_graph_def()
        for node in graph_def.node:
            dims = node.attr["shape"].shape.dim
            if node.name in placeholders.values() and len(dims) >= 2 and dims[1].size == fixed:
                dims[1].size = -1
        self.min_length = min_length
        graph = tf.Graph()
        try:
            with graph.as_default(), graph.device(device):
                tf.compat.v1.import_graph_def(graph_def, name="")
        except Exception as exc:  # noqa: BLE001 - a shape freed may contradict what the graph fixes
            self.why_not = f"its graph does not import with the time axis freed ({one_line(exc)})"
            return
        self.session = tf.compat.v1.Session(graph=graph)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The export's outputs by name, on the export's inputs by name."""
        feed = {self.feeds[theirs]: inputs[ours].astype(self.dtypes[theirs]) for ours, theirs in self.inputs}
        values = self.session.run([self.fetches[theirs] for _, theirs in self.outputs], feed)
        return {ours: value for (ours, _), value in zip(self.outputs, values)}

    def check(self, signature_run: Any, probe: Mapping[str, np.ndarray]) -> str:
        """Why the freed graph is no reference (empty when it is one). `probe` holds the export's
        inputs at the traced length; `signature_run` runs the signature on such inputs."""
        if self.why_not:
            return self.why_not
        try:
            expected, got = signature_run(probe), self.run(probe)
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types on graphs it cannot run
            return f"it does not run at {self.fixed} steps ({one_line(exc)})"
        for name, value in expected.items():
            diff = float(np.max(np.abs(got[name] - value))) if value.size else 0.0
            if got[name].shape != value.shape or not diff <= FREED_ATOL:
                return (f"it does not reproduce the signature's output '{name}' at {self.fixed} steps "
                        f"(max abs difference {diff:.3g})")
        timed = {name for name, value in expected.items() if value.ndim >= 3 and value.shape[1] == self.fixed}
        long = 2 * self.fixed + 1
        for length in (max(1, self.min_length), long):
            steps = {name: _resized(array, length, self.fixed) for name, array in probe.items()}
            try:
                outputs = self.run(steps)
            except Exception as exc:  # noqa: BLE001 - a graph tied to its length fails in many ways
                return f"it does not run at {length} steps ({one_line(exc)})"
            for name, value in outputs.items():
                shape = (*expected[name].shape[:1], *((length,) if name in timed else ()))
                if value.shape[:len(shape)] != shape:
                    return (f"at {length} steps its output '{name}' has shape {list(value.shape)}, not "
                            f"[{', '.join(map(str, shape))}, ...]")
                if not np.all(np.isfinite(value)):
                    return f"at {length} steps its output '{name}' is not finite"
            if length == long:
                nudged = {name: array.copy() for name, array in steps.items()}
                for name, array in nudged.items():
                    if probe[name].ndim >= 2 and probe[name].shape[1] == self.fixed:
                        array[:, -1] += 1
                if all(np.array_equal(outputs[n], v) for n, v in self.run(nudged).items()):
                    return f"at {length} steps its outputs do not depend on the last step (a loop bound to {self.fixed})"
        return ""


def _resized(array: np.ndarray, length: int, fixed: int) -> np.ndarray:
    """A sequence of `fixed` steps made `length` long: cut, or its steps repeated."""
    if array.ndim < 2 or array.shape[1] != fixed:
        return array
    return np.resize(np.moveaxis(array, 1, 0), (length, *np.moveaxis(array, 1, 0).shape[1:])).swapaxes(0, 1).copy()
