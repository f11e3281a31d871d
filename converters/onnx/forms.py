"""A fused ONNX `LSTM`, `GRU` or `RNN` op rewritten as a `Loop` of MatMuls computing the same.

onnxruntime's fused kernels are not always its fastest form of a recurrence: its CPU `RNN`
kernel applies the activation element by element through a scalar functor, while a `Loop` whose
body is a MatMul and a `Tanh` op runs vectorised kernels. Both forms compute ONNX's equations; the
loop one projects the whole input sequence in one MatMul before the loop, so each step is one
[batch, units] x [units, gates*units] product and the activations. Needs the `onnx` package only.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

# Activations the loop body computes with the ONNX op of the same name.
SIMPLE = ("Tanh", "Sigmoid", "Relu")
LOOPABLE = ("LSTM", "GRU", "RNN")


# The smallest batch from which a Loop of MatMuls ran faster than onnxruntime's fused kernel, per
# op type, measured side by side by benchmarks/onnx_forms.py (README, "ONNX export"); an op type
# not listed was fastest fused at every batch measured.
LOOP_FROM_BATCH: dict[str, int] = {"RNN": 2}


def faster_as_loop(node: Any, batch: int) -> str:
    """Why `node` is better written as a Loop at `batch` (empty: it stays fused)."""
    start = LOOP_FROM_BATCH.get(node.op_type)
    if start is None or batch < start or loopable(node):
        return ""
    return (f"a Loop of MatMuls runs faster than onnxruntime's fused {node.op_type} kernel at batch {batch} "
            f"(--optimize-for batch={batch}; measured from batch {start})")


def loopable(node: Any) -> str:
    """Why this fused node has no loop form (empty: it has)."""
    if node.op_type not in LOOPABLE:
        return f"{node.op_type} is no fused recurrent op"
    if len(node.input) > 4 and node.input[4]:
        return "it is given sequence_lens, which only the fused op models here"
    return ""


class _Builder:
    """Appends nodes and initializers to one graph under fresh names."""

    def __init__(self, graph: Any, prefix: str) -> None:
        self.graph, self.prefix = graph, prefix
        self.names = itertools.count()

    def name(self, hint: str) -> str:
        return f"{self.prefix}/{hint}_{next(self.names)}"

    def const(self, value: Any, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attributes: Any) -> Any:
        from onnx import helper

        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.graph.node.append(helper.make_node(op_type, inputs, names, name=self.name(op_type), **attributes))
        return names[0] if outputs == 1 else names


def _activation(b: _Builder, name: bytes | str, alpha: float | None, beta: float | None, x: str) -> str:
    name = name.decode() if isinstance(name, bytes) else name
    if name in SIMPLE:
        return b.op(name, [x])
    if name == "HardSigmoid":
        return b.op("HardSigmoid", [x], alpha=alpha, beta=beta)
    if name == "Affine":
        return b.op("Add", [b.op("Mul", [x, b.const(np.float32(alpha))]), b.const(np.float32(beta))])
    raise ValueError(f"activation {name} has no loop form")


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _activations(node: Any, per_direction: int, directions: int) -> list[list[tuple[Any, float | None, float | None]]]:
    """Each direction's activations with their alpha and beta, as the node declares them."""
    attrs = _attributes(node)
    defaults = {"LSTM": [b"Sigmoid", b"Tanh", b"Tanh"], "GRU": [b"Sigmoid", b"Tanh"], "RNN": [b"Tanh"]}
    names = list(attrs.get("activations", defaults[node.op_type] * directions))
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    taking = (b"HardSigmoid", b"Affine", "HardSigmoid", "Affine")
    resolved = []
    for n in names:
        if n in taking:
            resolved.append((n, alphas.pop(0), betas.pop(0)))
        else:
            resolved.append((n, None, None))
    return [resolved[d * per_direction:(d + 1) * per_direction] for d in range(directions)]


def to_loop(proto: Any, node: Any) -> None:
    """Replace fused `node` in `proto`'s main graph by Loops computing the same outputs."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    attrs = _attributes(node)
    kind, units = node.op_type, int(attrs["hidden_size"])
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    directions = 2 if direction == "bidirectional" else 1
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    per_direction = {"LSTM": 3, "GRU": 2, "RNN": 1}[kind]
    inputs = list(node.input) + [""] * (8 - len(node.input))
    w, r = values[inputs[1]], values[inputs[2]]
    bias = values[inputs[3]] if inputs[3] else np.zeros((directions, 2 * gates * units), np.float32)
    peepholes = values[inputs[7]] if kind == "LSTM" and inputs[7] else None
    activations = _activations(node, per_direction, directions)
    b = _Builder(graph, node.name + "_loop")
    first = len(graph.node)
    x = inputs[0]
    shape = b.op("Shape", [x])
    steps = b.op("Gather", [shape, b.const(np.int64(0))], axis=0)
    batch = b.op("Gather", [shape, b.const(np.int64(1))], axis=0)
    zeros = b.op("ConstantOfShape", [b.op("Concat", [b.op("Unsqueeze", [batch, b.const(np.array([0], np.int64))]),
                                                     b.const(np.array([units], np.int64))], axis=0)],
                 value=numpy_helper.from_array(np.zeros(1, np.float32)))
    sequences, finals = [], [[] for _ in range(2 if kind == "LSTM" else 1)]
    for d in range(directions):
        backwards = direction == "reverse" or d == 1
        start = [zeros if not inputs[5 + role] else b.op("Gather", [inputs[5 + role], b.const(np.int64(d))], axis=0)
                 for role in range(2 if kind == "LSTM" else 1)]
        body = _body(kind, units, w[d], r[d], bias[d], None if peepholes is None else peepholes[d],
                              activations[d], attrs.get("linear_before_reset", 0), b, x, steps, backwards)
        loop = b.op("Loop", [steps, "", *start], outputs=len(start) + 1, body=body)
        sequence = loop[-1]
        if backwards:
            sequence = b.op("Slice", [sequence, b.const(np.array([-1], np.int64)),
                                      b.const(np.array([np.iinfo(np.int64).min], np.int64)),
                                      b.const(np.array([0], np.int64)), b.const(np.array([-1], np.int64))])
        sequences.append(b.op("Unsqueeze", [sequence, b.const(np.array([1], np.int64))]))
        for role, state in enumerate(loop[:len(start)]):
            finals[role].append(b.op("Unsqueeze", [state, b.const(np.array([0], np.int64))]))
    for name, parts, axis in zip(node.output, [sequences, *finals], (1, 0, 0)):
        if name:
            graph.node.append(helper.make_node("Concat", parts, [name], name=b.name("output"), axis=axis))
    # The new nodes go where the fused one was: after what it reads, before what reads it.
    index = list(graph.node).index(node)
    added = list(graph.node[first:])
    del graph.node[first:]
    del graph.node[index]
    for offset, new in enumerate(added):
        graph.node.insert(index + offset, new)
    read = {name for n in graph.node for name in n.input}
    unused = [i for i in graph.initializer if i.name in node.input and i.name not in read]
    for initializer in unused:
        graph.initializer.remove(initializer)


def _body(kind: str, units: int, w: np.ndarray, r: np.ndarray, bias: np.ndarray, peepholes: np.ndarray | None,
          activations: list[tuple[Any, float | None, float | None]], linear_before_reset: int, outer: _Builder,
          x: str, steps: str, backwards: bool) -> Any:
    """The Loop body of one direction: (iteration, condition, states...) -> (condition, states...,
    output). The input projection of every step is computed before the loop, in `outer`."""
    from onnx import TensorProto, helper

    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    input_bias, recurrent_bias = bias[:gates * units], bias[gates * units:]
    folded = input_bias + recurrent_bias
    if kind == "GRU" and linear_before_reset:
        # The candidate's recurrent bias is scaled by the reset gate there, so it stays in the step.
        folded[2 * units:] = input_bias[2 * units:]
    projected = outer.op("Add", [outer.op("MatMul", [x, outer.const(np.ascontiguousarray(w.T), "w")]),
                                 outer.const(folded.astype(np.float32), "bias")])
    graph = helper.make_graph([], outer.name("body"), [], [])
    b = _Builder(graph, outer.name("step"))
    i, cond = b.name("i"), b.name("cond")
    states = [b.name("h")] + ([b.name("c")] if kind == "LSTM" else [])
    graph.input.extend([helper.make_tensor_value_info(i, TensorProto.INT64, []),
                        helper.make_tensor_value_info(cond, TensorProto.BOOL, [])] +
                       [helper.make_tensor_value_info(s, TensorProto.FLOAT, [None, None]) for s in states])
    t = b.op("Sub", [b.op("Sub", [steps, b.const(np.int64(1))]), i]) if backwards else i
    x_t = b.op("Gather", [projected, t], axis=0)
    h = states[0]
    act = [lambda v, a=a: _activation(b, a[0], a[1], a[2], v) for a in activations]
    if kind == "RNN":
        new = [act[0](b.op("Add", [x_t, b.op("MatMul", [h, b.const(np.ascontiguousarray(r.T), "r")])]))]
    elif kind == "GRU":
        xz, xr, xh = b.op("Split", [x_t, b.const(np.array([units] * 3, np.int64))], outputs=3, axis=1)
        hzr = b.op("MatMul", [h, b.const(np.ascontiguousarray(r[:2 * units].T), "r_zr")])
        hz, hr = b.op("Split", [hzr, b.const(np.array([units] * 2, np.int64))], outputs=2, axis=1)
        z = act[0](b.op("Add", [xz, hz]))
        reset = act[0](b.op("Add", [xr, hr]))
        r_h = b.const(np.ascontiguousarray(r[2 * units:].T), "r_h")
        if linear_before_reset:
            hh = b.op("Add", [b.op("MatMul", [h, r_h]), b.const(recurrent_bias[2 * units:].astype(np.float32))])
            candidate = act[1](b.op("Add", [xh, b.op("Mul", [reset, hh])]))
        else:
            candidate = act[1](b.op("Add", [xh, b.op("MatMul", [b.op("Mul", [reset, h]), r_h])]))
        one_minus = b.op("Sub", [b.const(np.float32(1.0)), z])
        new = [b.op("Add", [b.op("Mul", [one_minus, candidate]), b.op("Mul", [z, h])])]
    else:
        c = states[1]
        z = b.op("Add", [x_t, b.op("MatMul", [h, b.const(np.ascontiguousarray(r.T), "r")])])
        zi, zo, zf, zc = b.op("Split", [z, b.const(np.array([units] * 4, np.int64))], outputs=4, axis=1)
        if peepholes is not None:
            pi, po, pf = (b.const(p.astype(np.float32), "p") for p in np.split(peepholes, 3))
            zi = b.op("Add", [zi, b.op("Mul", [pi, c])])
            zf = b.op("Add", [zf, b.op("Mul", [pf, c])])
        c_new = b.op("Add", [b.op("Mul", [act[0](zf), c]), b.op("Mul", [act[0](zi), act[1](zc)])])
        if peepholes is not None:
            zo = b.op("Add", [zo, b.op("Mul", [po, c_new])])
        new = [b.op("Mul", [act[0](zo), act[2](c_new)]), c_new]
    out = b.op("Identity", [new[0]])
    keep = b.op("Identity", [cond])
    graph.output.extend([helper.make_tensor_value_info(keep, TensorProto.BOOL, [])] +
                        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, None]) for n in new] +
                        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, None])])
    return graph
