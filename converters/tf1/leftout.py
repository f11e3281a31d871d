"""What a TF1 graph computes only while training, which the export leaves out: dropouts (their
gates fed the value that switches them off) and the training branches of a `tf.cond` on a
training flag (fed False). Found while tracing the recurrence and its head; its ops are claimed,
so that no op of the graph goes unaccounted for."""

from __future__ import annotations

from typing import Any

from rnnexport_converters.tf1 import conds, dropout
from rnnexport_converters.tf1.graph import GraphView
from rnnexport.errors import UnsupportedModelError


class LeftOut:
    """The ops left out (added to `claimed`) and the placeholders inference feeds (`gates`)."""

    def __init__(self, view: GraphView, claimed: set[str]) -> None:
        self.view = view
        self.claimed = claimed
        self.gates: set[str] = set()

    def drop(self, found: dropout.Dropout, op: Any) -> None:
        """Leave out a dropout: its ops are claimed and its gates fed to switch it off."""
        if not found.gates:
            raise UnsupportedModelError(f"op '{op.name}' applies dropout at a fixed rate; no keep_prob placeholder "
                                        "switches it off, so the graph never computes the same twice")
        self.claimed |= found.ops
        self.gates |= found.gates

    def carried(self, op: Any) -> list[Any] | None:
        """The inputs whose values `op` passes on unchanged at inference, where it only seems to
        compute: a dropout (switched off), a tf.cond on a training flag (fed False), or tf.map_fn's
        read of the sequence it maps over."""
        found = dropout.dropped(op)
        if found is not None:
            self.drop(found, op)
            return [found.data]
        cond = conds.training_cond(op)
        if cond is not None:
            self.claimed |= cond.ops
            self.gates.add(cond.flag)
            return [cond.inference]
        if op.type == "TensorArrayReadV3":
            scatter = self.view.through(op.inputs[2]).op
            return [scatter.inputs[2]] if scatter.type == "TensorArrayScatterV3" else None
        return None

    def aliases(self, tensor: Any) -> list[str]:
        """Tensors that are `tensor` once dropout is off: DropoutWrapper's output of a cell step,
        which the next layer or the projection reads in its place."""
        found: list[str] = []
        frontier = [tensor]
        while frontier:
            value = frontier.pop()
            near = self.view.users(value)
            # The mask is applied by the op after the scale (x / keep_prob) or to x itself.
            for op in near + [u for first in near for out in first.outputs for u in self.view.users(out)]:
                applied = dropout.dropped(op)
                if applied is not None and applied.data.name == value.name and op.outputs[0].name not in found:
                    self.drop(applied, op)
                    found.append(op.outputs[0].name)
                    frontier.append(op.outputs[0])
        return found
