"""The output of a TF1 graph when none is named: the float tensors inference ends at, once what
only training adds (gradients, optimizers, losses, summaries, saving) is set aside, that a
recurrent cell computes from a placeholder."""

from __future__ import annotations

from typing import Any

from rnnexport_converters.tf1 import graph as tf1_graph

# Scopes only training adds; outputs are never found behind them.
TRAINING_SCOPES = ("gradients", "save", "GradientDescent", "Adam", "Adagrad", "Adadelta", "RMSProp", "Momentum", "Ftrl",
                   "init", "clip_by_global_norm", "global_norm", "loss", "Loss", "summaries", "train_op", "optimizer")
LOSS_OPS = {"SparseSoftmaxCrossEntropyWithLogits", "SoftmaxCrossEntropyWithLogits", "SquaredDifference",
            "ScalarSummary", "HistogramSummary", "ImageSummary", "MergeSummary", "TensorSummaryV2"}
# Ops an output may be: computing ones, and the reshapes and concatenations that shape a result.
SHAPING = {"Identity", "Reshape", "Transpose", "ConcatV2", "Pack", "StridedSlice"}
# Random draws (dropout's) are never outputs.
RANDOM = ("Random", "TruncatedNormal")


def is_training(op: Any) -> bool:
    return op.type in LOSS_OPS or any(part.startswith(TRAINING_SCOPES) for part in op.name.split("/"))


def training_only(view: tf1_graph.GraphView) -> set[str]:
    """Ops only training needs: training's own, and ops read by nothing else (a loss's reshapes)."""
    found: set[str] = set()
    operations = view.graph.get_operations()
    # Creation order is topological apart from loops' back edges: readers come after what they
    # read, so walking it backwards settles every reader first; a second walk settles loops.
    for _ in range(2):
        for op in reversed(operations):
            users = [u for t in op.outputs for u in view.users(t)]
            if is_training(op) or (users and all(u.name in found for u in users)):
                found.add(op.name)
    return found


def _ends_inference(view: tf1_graph.GraphView, tensor: Any, training: set[str]) -> bool:
    """True when nothing computes further floats from `tensor` for inference: its readers are
    training ops or produce no floats (argmax, comparisons)."""
    return all(u.name in training or not any(t.dtype.is_floating for t in u.outputs) for u in view.users(tensor))


def _collects_state(view: tf1_graph.GraphView, op: Any, training: set[str]) -> bool:
    """True for a concatenation of tensors inference computes further from: the final state of a
    cell with state_is_tuple=False ([c, h], whose h the next layer reads), not a result."""
    return op.type == "ConcatV2" and all(
        any(u.name != op.name and u.name not in training and u.type not in tf1_graph.PLUMBING for u in view.users(t))
        for t in op.inputs[:-1] if t.dtype.is_floating)


def output_candidates(view: tf1_graph.GraphView) -> list[str]:
    """Float tensors of rank >= 2 (or unknown) that inference ends at and that depend on a placeholder and a
    recurrent cell's kernel MatMul (or an LSTMBlockCell)."""
    found = []
    training = training_only(view)
    for op in view.graph.get_operations():
        # Inside a while loop or a cell op nothing is a model output.
        if op._get_control_flow_context() is not None or op.type in ("LSTMBlockCell", "BlockLSTM"):
            continue
        if op.name in training or op.type in tf1_graph.PLUMBING - SHAPING or op.type.startswith(RANDOM):
            continue
        # A shape may be unknown (tf.map_fn's results): only a known rank below 2 rules a tensor out.
        if _collects_state(view, op, training):
            continue
        found += [t for t in op.outputs if t.dtype.is_floating and (t.shape.rank is None or t.shape.rank >= 2)
                  and _ends_inference(view, t, training)]
    cells = []
    for tensor in found:
        ops = [view.op(n) for n in tf1_graph.ancestors([tensor])]
        if any(o.type == "Placeholder" for o in ops) and any(
                (o.type == "MatMul" and o.inputs[0].op.type == "ConcatV2") or o.type == "LSTMBlockCell" for o in ops):
            cells.append(tensor.name)
    return cells


# Ops that turn per-step scores into what a serving signature returns: labels (ArgMax), cast,
# reshaped or flattened, the padded steps dropped (boolean_mask: Reshape, then Gather at Where).
TO_LABELS = {"ArgMax", "Cast", "Identity", "Reshape", "Squeeze", "Gather", "GatherV2"}


def scores_behind(view: tf1_graph.GraphView, name: str) -> tuple[str, list[str]] | None:
    """For a declared output that is not floats (labels of the per-step scores, maybe masked to
    the unpadded steps), the float scores it is computed from and the ops on the way; else None."""
    tensor, ops = view.tensor(name), []
    if tensor.dtype.is_floating:
        return None
    while not tensor.dtype.is_floating:
        if tensor.op.type not in TO_LABELS or not tensor.op.inputs:
            return None
        ops.append(tensor.op.type)
        tensor = tensor.op.inputs[0]
    if "ArgMax" not in ops or (tensor.shape.rank is not None and tensor.shape.rank < 2):
        return None
    return tensor.name, list(reversed(ops))

