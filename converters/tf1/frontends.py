"""Front ends between a TF1 graph's input and its first recurrent layer: dense layers applied to
every step's features (a MatMul by a weight, maybe a bias, maybe an activation, before the steps
are split out with `tf.split`/`unstack`), and a Conv2D over (time, frequency) whose output is
reshaped to one feature vector per time step, as ML-KWS's CRNN has it.

The tracer meets them walking back from a cell's input (`step_back`); each becomes Keras layers in
the equivalent (`apply`), so that every export carries it. A convolution decides which lengths
the model takes (`Conv2D.steps`); the reference serves only those (`unserved`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport_converters.tf1.graph import ADDS
from rnnexport.errors import UnsupportedModelError

ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6", "Tanh": "tanh", "Sigmoid": "sigmoid", "Elu": "elu"}
# The ops a front end starts with, walking back from the cells: the tracer hands them here.
OPS = (*ACTIVATIONS, *ADDS, "MatMul", "Conv2D")


@dataclass(frozen=True, eq=False)
class Dense:
    """A dense layer on every step's features."""

    kernel: np.ndarray
    bias: np.ndarray | None
    activation: str

    minimum = 1

    def steps(self, length: int) -> int:
        return length

    def describe(self) -> str:
        return f"Dense({self.kernel.shape[1]}, activation={self.activation})"

    def keras(self, x: Any, name: str) -> Any:
        import keras

        layer = keras.layers.Dense(self.kernel.shape[1], activation=self.activation, use_bias=self.bias is not None,
                                   name=name)
        x = layer(x)
        layer.set_weights([self.kernel] + ([self.bias] if self.bias is not None else []))
        return x


@dataclass(frozen=True, eq=False)
class Conv2D:
    """A Conv2D over [batch, time, features, 1] (NHWC) whose [batch, time', features', filters]
    result is reshaped to [batch, time', features' * filters]."""

    kernel: np.ndarray  # [time, features, 1, filters], as TensorFlow holds it
    bias: np.ndarray | None
    activation: str
    strides: tuple[int, int]
    padding: str  # VALID or SAME
    features: int

    @property
    def minimum(self) -> int:
        """The fewest steps the convolution takes: a VALID one needs one whole kernel."""
        return self.kernel.shape[0] if self.padding == "VALID" else 1

    def _out(self, size: int, kernel: int, stride: int) -> int:
        return (size - kernel) // stride + 1 if self.padding == "VALID" else -(-size // stride)

    def steps(self, length: int) -> int:
        """The steps the recurrent layers see for `length` input steps."""
        return self._out(length, self.kernel.shape[0], self.strides[0])

    def arithmetic(self) -> str:
        height, stride = self.kernel.shape[0], self.strides[0]
        if self.padding == "VALID":
            return f"T' = floor((T - {height}) / {stride}) + 1, so at least {height} steps"
        return f"T' = ceil(T / {stride}) (SAME padding: step t also reads up to {height // 2} later steps)"

    def describe(self) -> str:
        return (f"Conv2D({self.kernel.shape[3]}, kernel={self.kernel.shape[0]}x{self.kernel.shape[1]}, "
                f"strides={self.strides[0]}x{self.strides[1]}, padding={self.padding}, activation={self.activation})")

    def keras(self, x: Any, name: str) -> Any:
        import keras

        height, width, _, filters = self.kernel.shape
        out_features = self._out(self.features, width, self.strides[1])
        x = keras.layers.Reshape((-1, self.features, 1), name=f"{name}_image")(x)
        layer = keras.layers.Conv2D(filters, (height, width), strides=self.strides, padding=self.padding.lower(),
                                    activation=self.activation, use_bias=self.bias is not None, name=name)
        x = layer(x)
        layer.set_weights([self.kernel] + ([self.bias] if self.bias is not None else []))
        return keras.layers.Reshape((-1, out_features * filters), name=f"{name}_steps")(x)


Stage = Dense | Conv2D


def _stage(tracer: Any, tensor: Any, at: Any) -> tuple[Stage | None, Any]:
    """The front-end layer that ends at `tensor` (activation, bias, MatMul or Conv2D, walked
    back), and the tensor it reads; (None, tensor) when `tensor` is no front-end op's."""
    view = tracer.view
    ops, activation, bias = [], "linear", None
    if tensor.op.type in ACTIVATIONS:
        ops.append(tensor.op)
        activation, tensor = ACTIVATIONS[tensor.op.type], tensor.op.inputs[0]
    op = tensor.op
    if op.type in ADDS and any(view.weight(t) for t in op.inputs):
        ops.append(op)
        bias = view.value(next(view.weight(t) for t in op.inputs if view.weight(t)))
        tensor = next(t for t in op.inputs if not view.weight(t))
    op = tensor.op
    weight = view.weight(op.inputs[1]) if op.type in ("MatMul", "Conv2D") else None
    if weight is None:
        if ops:
            raise UnsupportedModelError(
                f"op '{ops[0].name}' ({ops[0].type}) lies between the inputs and a recurrent cell but follows no "
                "MatMul or Conv2D by a weight; rnnexport places dense layers and a Conv2D there. To export from "
                f"that op's result, cut the graph with --inputs {ops[0].outputs[0].name}")
        return None, tensor
    ops.append(op)
    tracer.claimed.update(o.name for o in ops)
    if op.type == "MatMul":
        if op.get_attr("transpose_a") or op.get_attr("transpose_b"):
            raise UnsupportedModelError(f"op '{op.name}': a transposed MatMul before the recurrent layers is not "
                                        "supported")
        return Dense(view.value(weight), bias, activation), op.inputs[0]
    return _conv(view, op, weight, bias, activation, at), op.inputs[0]


def _conv(view: Any, op: Any, weight: str, bias: np.ndarray | None, activation: str, at: Any) -> Conv2D:
    strides, padding = op.get_attr("strides"), op.get_attr("padding").decode()
    dilations = op.get_attr("dilations")
    image = op.inputs[0].shape
    if (op.get_attr("data_format") != b"NHWC" or padding not in ("VALID", "SAME") or list(dilations) != [1] * 4
            or strides[0] != 1 or strides[3] != 1):
        raise UnsupportedModelError(f"op '{op.name}' (Conv2D): rnnexport places an NHWC convolution with VALID or "
                                    "SAME padding, no dilation and no stride over batch or channels")
    kernel = view.value(weight)
    if at.axis != 1 or image.rank != 4 or image[2] is None or image[3] != 1 or kernel.shape[2] != 1:
        raise UnsupportedModelError(f"op '{op.name}' (Conv2D) does not convolve [batch, time, features, 1]; "
                                    "rnnexport places a convolution over (time, features) of one channel")
    return Conv2D(kernel, bias, activation, (int(strides[1]), int(strides[2])), padding, int(image[2]))


def step_back(tracer: Any, op: Any, at: Any) -> None:
    """Walk `at` back over the front-end layers that end at `op`, recording them on `at.frontend`
    (the one nearest the cells first)."""
    tensor = at.tensor
    while True:
        stage, tensor = _stage(tracer, tensor, at)
        if stage is None:
            break
        at.frontend.append(stage)
    at.tensor = tensor


def split(tracer: Any, op: Any, at: Any) -> None:
    """`tf.split(value, n, axis)` into the steps: piece `i` is step `i` along `axis`."""
    axis = tracer.view.const(op.inputs[0])
    if at.index is not None or axis is None:
        raise UnsupportedModelError(f"op '{op.name}' (Split) splits a tensor rnnexport cannot read as time steps")
    tracer.claimed.add(op.name)
    at.index, at.axis, at.tensor = at.tensor.value_index, int(axis), op.inputs[1]


def apply(frontend: tuple[Stage, ...], x: Any, masked: bool) -> Any:
    """The front end as Keras layers on `x` [batch, time, features]."""
    if masked and any(isinstance(stage, Conv2D) for stage in frontend):
        raise UnsupportedModelError("a Conv2D front end changes the number of steps, so a sequence_length input "
                                    "cannot mask them; rnnexport does not export the two together")
    for index, stage in enumerate(frontend):
        x = stage.keras(x, f"frontend_{index}")
    return x


def _takes(frontend: tuple[Stage, ...], length: int) -> bool:
    for stage in frontend:
        if length < stage.minimum:
            return False
        length = stage.steps(length)
    return length >= 1


def minimum(frontend: tuple[Stage, ...]) -> int:
    """The fewest input steps the front end takes (a VALID convolution needs its kernel's worth)."""
    length = 1
    while not _takes(frontend, length):
        length += 1
    return length


def notes(frontend: tuple[Stage, ...]) -> list[str]:
    """What `inspect` says of the front end: its layers, and the lengths a convolution accepts."""
    if not frontend:
        return []
    said = [f"front end before the recurrent layers: {'; '.join(s.describe() for s in frontend)}; the exports "
            "compute it"]
    for stage in frontend:
        if isinstance(stage, Conv2D):
            said.append(f"the convolution turns T input steps into the recurrent layers' steps: {stage.arithmetic()}"
                        f"; the export accepts {minimum(frontend)} or more steps. It is causal only as far as the "
                        "graph's padding makes it")
    return said


def unserved(frontend: tuple[Stage, ...], length: int, fixed: int | None, free: bool) -> str:
    """Why the graph cannot serve `length` steps because of its front end, or ''."""
    if length < minimum(frontend):
        return f"shorter than the {minimum(frontend)} steps the convolution front end needs"
    if fixed and length != fixed and not free and any(isinstance(s, Conv2D) for s in frontend):
        return (f"the convolution front end reads across the graph's {fixed}-step windows, and the graph cannot "
                "be fed another length; only its own length is ground truth")
    return ""


def free_graph(opened: Any, graph_def: Any, entry: Any) -> tuple[Any, str, str] | None:
    """(session, input, placeholder) for a frozen loop graph with a front end: the graph imported
    with a placeholder of free length at its input, every reshape constant on the way to the loop
    told the batch and a free time axis, and the loop's folded shape fed the actual one. None
    where the freed graph does not reproduce the graph at its own length."""
    from tensorflow.python.framework import tensor_util

    from rnnexport_converters.tf1.graph import ancestors
    from rnnexport.tf import tensorflow

    view = opened.source.view
    data = view.tensor(opened.data_input)
    shape, loop = data.shape.as_list(), entry.shape.as_list()
    if opened.time_axis != 1 or len(shape) != 3 or None in loop[1:]:
        return None
    path = ancestors([entry], stop={data.op.name})
    reshapes = [view.op(n) for n in sorted(path) if view.op(n).type == "Reshape"]
    folded = [f"{n.name}:0" for n in graph_def.node if n.op == "Const" and n.attr["dtype"].type == 3
              and tensor_util.MakeNdarray(n.attr["value"].tensor).tolist() == [loop[1], loop[0], *loop[2:]]]
    tf = tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf.compat.v1.placeholder(data.dtype, [shape[0], None, shape[2]], name="rnnexport_free_input")
        mapping = {data.name: placeholder}
        for op in reshapes:
            target = view.const(op.inputs[1])
            if target is not None:
                batch = tf.cast(tf.shape(placeholder)[0], target.dtype)
                rest = tf.constant([-1, *target[2:]], target.dtype)
                mapping[op.inputs[1].name] = tf.concat([batch[None], rest], 0)
        front = tf.compat.v1.import_graph_def(graph_def, input_map=mapping, return_elements=[entry.name],
                                              name="rnnexport_front")[0]
        dims = tf.shape(front)
        actual = tf.stack([dims[1], dims[0], *loop[2:]])
        tf.compat.v1.import_graph_def(graph_def, input_map={entry.name: front, **dict.fromkeys(folded, actual)},
                                      name="")
    session = tf.compat.v1.Session(graph=graph)
    probe = opened._probe_inputs()
    feed = {placeholder.name: probe[opened.names[opened.data_input]]}
    if not np.allclose(session.run(opened.output, feed), opened.run_graph(probe), rtol=0, atol=1e-6):
        session.close()
        return None
    return session, data.name, placeholder.name
