"""Front ends between a TF1 graph's input and its first recurrent layer: dense layers applied to
every step's features (a MatMul by a weight, maybe a bias, maybe an activation, before the steps
are split out with `tf.split`/`unstack`, or `tf.layers.dense`'s tensordot), 1-D convolutions over
time (`tf.nn.conv1d`), and 2-D convolutions and pooling over (time, frequency) whose output is
reshaped to one feature vector per time step, as ML-KWS's CRNN has it.

The tracer meets them walking back from a cell's input (`step_back`); each becomes Keras layers in
the equivalent (`frontend_layers.apply`), so that every export carries it. A convolution decides
which lengths the model takes (`minimum`, `notes`); the reference serves only those (`unserved`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnexport_converters.tf1.frontend_layers import Conv1D, Conv2D, Dense, Pool2D, Stage, same
from rnnexport_converters.tf1.graph import ADDS
from rnnexport.errors import UnsupportedModelError

__all__ = ["OPS", "Stage", "between", "free_graph", "masking_refused", "minimum", "not_streamable", "notes", "split",
           "step_back", "unserved", "walk_every_step"]

ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6", "Tanh": "tanh", "Sigmoid": "sigmoid", "Elu": "elu"}
# The ops a front end starts with, walking back from the cells: the tracer hands them here.
OPS = (*ACTIVATIONS, *ADDS, "MatMul", "Conv2D", "MaxPool", "AvgPool", "Squeeze")
POOLS = {"MaxPool": "max", "AvgPool": "avg"}


def _weight(view: Any, tensor: Any) -> np.ndarray | None:
    """The value of a weight `tensor` reads, also through ExpandDims (tf.nn.conv1d's filters)."""
    name = view.weight(tensor)
    if name is not None:
        return view.value(name)
    if tensor.op.type == "ExpandDims" and view.weight(tensor.op.inputs[0]) is not None:
        axis = view.const(tensor.op.inputs[1])
        if axis is not None:
            return np.expand_dims(view.value(view.weight(tensor.op.inputs[0])), int(axis))
    return None


def _stage(tracer: Any, tensor: Any, at: Any) -> tuple[Stage | None, Any]:
    """The front-end layer that ends at `tensor` (activation, bias, then MatMul, Conv2D or
    pooling, walked back), and the tensor it reads; (None, tensor) when `tensor` is no
    front-end op's."""
    view = tracer.view
    if tensor.op.type in POOLS:
        tracer.claimed.add(tensor.op.name)
        return _pool(tensor.op, at), tensor.op.inputs[0]
    ops, activation, bias = [], "linear", None
    if tensor.op.type in ACTIVATIONS:
        ops.append(tensor.op)
        activation, tensor = ACTIVATIONS[tensor.op.type], tensor.op.inputs[0]
    op = tensor.op
    if op.type in ADDS and any(view.weight(t) for t in op.inputs):
        ops.append(op)
        bias = view.value(next(view.weight(t) for t in op.inputs if view.weight(t)))
        if bias.ndim == 0 or bias.size != bias.shape[-1]:
            raise UnsupportedModelError(f"op '{op.name}' adds a constant of shape {list(bias.shape)} between the inputs "
                                        "and a recurrent cell; rnnexport places a bias (one value per unit) there")
        # A bias held as [1, units] broadcasts as [units] does.
        bias = bias.reshape(-1)
        tensor = next(t for t in op.inputs if not view.weight(t))
    # tf.layers.dense on [batch, time, features] is a tensordot: a MatMul reshaped back; and
    # tf.nn.conv1d a Conv2D squeezed back.
    if (tensor.op.type, tensor.op.inputs[0].op.type if tensor.op.inputs else "") in (("Reshape", "MatMul"),
                                                                                    ("Squeeze", "Conv2D")):
        ops.append(tensor.op)
        tensor = tensor.op.inputs[0]
    op = tensor.op
    weight = _weight(view, op.inputs[1]) if op.type in ("MatMul", "Conv2D") else None
    if weight is None:
        if ops:
            raise UnsupportedModelError(
                f"op '{ops[0].name}' ({ops[0].type}) lies between the inputs and a recurrent cell but follows no "
                "MatMul or Conv2D by a weight; rnnexport places dense layers, convolutions and pooling there. To "
                f"export from that op's result, cut the graph with --inputs {ops[0].outputs[0].name}")
        return None, tensor
    ops.append(op)
    tracer.claimed.update(o.name for o in ops)
    if op.type == "MatMul":
        if op.get_attr("transpose_a") or op.get_attr("transpose_b"):
            raise UnsupportedModelError(f"op '{op.name}': a transposed MatMul before the recurrent layers is not "
                                        "supported")
        return Dense(weight, bias, activation), _tensordot_input(tracer, op.inputs[0])
    return _conv(op, weight, bias, activation, at), op.inputs[0]


def _tensordot_input(tracer: Any, tensor: Any) -> Any:
    """What a dense layer's MatMul reads: behind a tensordot's reshape to [batch * time, features]
    and its transpose by the identity permutation (perm computed from constants), the input."""
    view = tracer.view
    if tensor.op.type != "Reshape" or tensor.op.inputs[0].op.type != "Transpose":
        return tensor
    transpose = tensor.op.inputs[0].op
    perm = transpose.inputs[1]
    if not view.constant(perm) or list(view.value(perm.name)) != list(range(len(view.value(perm.name)))):
        return tensor
    tracer.claimed.update({tensor.op.name, transpose.name})
    return transpose.inputs[0]


def _windows(op: Any, at: Any) -> tuple[list[int], str, Any]:
    """(strides, padding, input shape) of a Conv2D or pooling op, refused where it works over
    anything but (time, features) of an NHWC image."""
    strides, padding = list(op.get_attr("strides")), op.get_attr("padding").decode()
    dilations = list(op.get_attr("dilations")) if op.type == "Conv2D" else [1] * 4
    image = op.inputs[0].shape
    if (op.get_attr("data_format") != b"NHWC" or padding not in ("VALID", "SAME") or dilations != [1] * 4
            or strides[0] != 1 or strides[3] != 1 or image.rank != 4 or None in image.as_list()[2:]):
        raise UnsupportedModelError(f"op '{op.name}' ({op.type}): rnnexport places an NHWC {op.type} over (time, "
                                    "features) with VALID or SAME padding, no dilation and no stride over batch or "
                                    "channels")
    return strides, padding, image


def _conv(op: Any, kernel: np.ndarray, bias: np.ndarray | None, activation: str, at: Any) -> Conv1D | Conv2D:
    strides, padding, image = _windows(op, at)
    if image[1] == 1 and kernel.shape[0] == 1 and at.axis in (None, 1):
        # tf.nn.conv1d: time runs along the image's width, the features are its channels.
        return Conv1D(padding=padding, kernel=kernel[0], bias=bias, activation=activation, stride=strides[2])
    if at.axis != 1 or kernel.shape[2] != image[3]:
        raise UnsupportedModelError(f"op '{op.name}' (Conv2D) does not convolve [batch, time, features, channels]; "
                                    "rnnexport places convolutions over time and features")
    return Conv2D(padding=padding, kernel=kernel, bias=bias, activation=activation, strides=(strides[1], strides[2]),
                  features=int(image[2]))


def _pool(op: Any, at: Any) -> Pool2D:
    strides, padding, image = _windows(op, at)
    window = list(op.get_attr("ksize"))
    if at.axis != 1 or window[0] != 1 or window[3] != 1:
        raise UnsupportedModelError(f"op '{op.name}' ({op.type}) does not pool over time and features")
    return Pool2D(padding=padding, kind=POOLS[op.type], window=(window[1], window[2]), strides=(strides[1], strides[2]),
                  features=int(image[2]), channels=int(image[3]))


def step_back(tracer: Any, op: Any, at: Any) -> None:
    """Walk `at` back over the front-end layers that end at `op`, recording them on `at.frontend`
    (the one nearest the cells first)."""
    tensor = at.tensor
    while True:
        stage, tensor = _stage(tracer, tensor, at)
        if stage is None:
            break
        at.frontend.append(stage)
    if tensor.name == at.tensor.name:
        if op.type != "Squeeze":
            raise UnsupportedModelError(
                f"op '{op.name}' ({op.type}) lies between the inputs and a recurrent cell; rnnexport places embedding "
                "lookups, slicing, reshaping, dense layers, convolutions and pooling there. To export from that op's "
                f"result, cut the graph with --inputs {tensor.name}")
        # A squeeze that ends no convolution only drops an axis of one.
        tensor = op.inputs[0]
    at.tensor = tensor


def split(tracer: Any, op: Any, at: Any) -> None:
    """`tf.split(value, n, axis)` into the steps: piece `i` is step `i` along `axis`."""
    axis = tracer.view.const(op.inputs[0])
    if at.index is not None or axis is None:
        raise UnsupportedModelError(f"op '{op.name}' (Split) splits a tensor rnnexport cannot read as time steps")
    tracer.claimed.add(op.name)
    at.index, at.axis, at.tensor = at.tensor.value_index, int(axis), op.inputs[1]


def walk_every_step(tracer: Any, cells: list[Any], first: list[Any]) -> None:
    """With a front end, walk every step of a layer's cells back to their input too: a front end
    applied step by step (the same dense layer on each step's slice) is claimed in every step,
    and checked to be the same in every step."""
    if not any(origin.frontend for origin in first):
        return
    for cell in cells:
        for index, step in enumerate(cell.steps[1:], start=1):
            for origin in tracer.origins(tracer.view.tensor(step.x)):
                if len(origin.frontend) != len(first[0].frontend) or not all(
                        same(a, b) for a, b in zip(origin.frontend, first[0].frontend)):
                    raise UnsupportedModelError(f"step {index} of cell '{cell.key}' reads its input through another "
                                                "front end than step 0; rnnexport places one front end on every step")


def between(tracer: Any, cells: list[Any], origins: dict[str, list[Any]], index: int) -> tuple[Stage, ...]:
    """The dense layers recurrent layer `index` (its `cells`, reading `origins` by cell key) reads
    the layer before it through, the same for every cell and step."""
    first = origins[cells[0].key]
    stages = first[0].frontend
    if any(len(o.frontend) != len(stages) or not all(same(a, b) for a, b in zip(o.frontend, stages))
           for cell in cells for o in origins[cell.key]):
        raise UnsupportedModelError(f"the cells of recurrent layer {index} read the layer before them through "
                                    "different layers; rnnexport places one set of dense layers there")
    windowed = next((stage for stage in stages if not isinstance(stage, Dense)), None)
    if windowed is not None:
        raise UnsupportedModelError(f"a {windowed.describe()} lies between recurrent layers {index - 1} and {index}; "
                                    "rnnexport places dense layers there, which keep the number of steps")
    walk_every_step(tracer, cells, first)
    return stages


def masking_refused(frontend: tuple[Stage, ...]) -> str:
    """Why a sequence_length input cannot mask the steps after this front end, or ''."""
    windowed = next((stage for stage in frontend if not isinstance(stage, Dense)), None)
    if windowed is None:
        return ""
    return (f"the {windowed.describe()} front end changes the number of steps, so the graph's sequence_length "
            "input cannot mask them; rnnexport does not export the two together")


def not_streamable(frontend: tuple[Stage, ...]) -> str:
    """Why a streaming export cannot run chunk by chunk because of the front end, or ''."""
    windowed = next((stage for stage in frontend if not isinstance(stage, Dense)), None)
    if windowed is None:
        return ""
    window, stride = windowed._time()
    return (f"the front end's {windowed.describe()} looks ahead: with {windowed.padding} padding over time each output "
            f"step reads up to {window - 1 if windowed.padding == 'VALID' else window // 2} later input steps"
            + (f" and its stride {stride} keeps one step in {stride}" if stride > 1 else "")
            + ", which a chunk does not have yet; only causal windows (left padding) stream")


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
    """What `inspect` says of the front end: its layers, and the lengths its windows accept."""
    if not frontend:
        return []
    said = [f"front end before the recurrent layers: {'; '.join(s.describe() for s in frontend)}; every export "
            "computes it"]
    windowed = [stage for stage in frontend if not isinstance(stage, Dense)]
    if windowed:
        formulas = "; then ".join(f"{stage.describe().split('(')[0]} {stage.arithmetic()}" for stage in windowed)
        said.append(f"the front end turns T input steps into the recurrent layers' steps: {formulas}; the export "
                    f"accepts {minimum(frontend)} or more steps. It is causal only as far as the graph's padding "
                    "makes it")
    return said


def unserved(frontend: tuple[Stage, ...], length: int, fixed: int | None, free: bool) -> str:
    """Why the graph cannot serve `length` steps because of its front end, or ''."""
    if length < minimum(frontend):
        return f"shorter than the {minimum(frontend)} steps the front end's windows need"
    if fixed and length != fixed and not free and any(not isinstance(s, Dense) for s in frontend):
        return (f"the front end's windows read across the graph's {fixed}-step windows, and the graph cannot be "
                "fed another length; only its own length is ground truth")
    return ""


def _fetched(opened: Any) -> list[str]:
    """The output and the final states the reference fetches, which freezing must keep."""
    from rnnexport_converters.tf1.chains import state_tensors

    names = [opened.output]
    for cell in opened.cells:
        try:
            names += [t for t in state_tensors(opened.source.view, cell)[1] if t]
        except UnsupportedModelError:
            continue
    return names


def free_graph(opened: Any, graph_def: Any, entry: Any) -> tuple[Any, str, str] | None:
    """(session, input, placeholder) for a loop graph with a front end: the graph (a checkpoint's,
    `graph_def` None, frozen first) imported with a placeholder of free length at its input, every
    reshape constant on the way to the loop told the batch and a free time axis, and the loop's
    folded shape fed the actual one. None where the freed graph does not reproduce the graph at
    its own length."""
    from tensorflow.python.framework import tensor_util

    from rnnexport_converters.tf1.graph import ancestors
    from rnnexport.tf import tensorflow

    view = opened.source.view
    data = view.tensor(opened.data_input)
    shape, loop = data.shape.as_list(), entry.shape.as_list()
    if opened.time_axis != 1 or len(shape) != 3 or loop[2:] == [None]:
        return None
    tf = tensorflow()
    if graph_def is None:
        # A checkpoint: its restored weights frozen to constants, so the graph can be imported again.
        session = opened.source.session()
        try:
            graph_def = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, opened.source.graph.as_graph_def(), [t.split(":")[0] for t in _fetched(opened)])
        finally:
            session.close()
    path = ancestors([entry], stop={data.op.name})
    reshapes = [view.op(n) for n in sorted(path) if view.op(n).type == "Reshape"]
    folded = [f"{n.name}:0" for n in graph_def.node if n.op == "Const" and n.attr["dtype"].type == 3
              and None not in loop
              and tensor_util.MakeNdarray(n.attr["value"].tensor).tolist() == [loop[1], loop[0], *loop[2:]]]
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
    rows = probe[opened.names[opened.data_input]]
    feed = {**opened.feeds.arrays(rows.shape[0]), placeholder.name: rows}
    if not np.allclose(session.run(opened.output, feed), opened.run_graph(probe), rtol=0, atol=1e-6):
        session.close()
        return None
    return session, data.name, placeholder.name
