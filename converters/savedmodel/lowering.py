"""A TF2 serving function as the TF1 loop graph the TF1 recognition reads.

`convert_variables_to_constants_v2(..., lower_control_flow=True)` freezes the weights and lowers
each functional `While` into Enter/Merge/Switch/NextIteration/Exit, but keeps TF2 habits that
TF1's `dynamic_rnn` graphs do not have, and this module rewrites them in the GraphDef:
- every value the body captures (a kernel, the unstacked input) is a loop variable passed back
  unchanged each iteration; TF1 reads such values through a constant `Enter`, so the body reads
  them that way here too and the weights are constants again behind identity-like ops;
- Keras slices its GRU's recurrent kernel and unstacks its biases inside the body; those
  computations on invariants are moved before the loop and entered, so they read as weights;
- sequences travel as TensorLists (variants); TF1 uses TensorArrays (a resource handle and a
  float flow). Each list becomes a TensorArray: `TensorListFromTensor` a scatter,
  `TensorListReserve` an empty array, `TensorListGetItem`/`SetItem` a read/write through the
  array's handle entered into the loop, `TensorListStack` a gather.
"""

from __future__ import annotations

from typing import Any

from rnnexport.errors import UnsupportedModelError, one_line

PASS_THROUGH = ("Identity", "Enter", "Switch", "Exit", "Merge", "NextIteration")
# Pure ops computed from loop invariants (behind identities), moved out of the loop.
HOISTABLE = {"StridedSlice", "Unpack", "Split", "SplitV", "Slice", "Reshape", "Transpose", "ConcatV2", "Squeeze",
             "ExpandDims", "Cast"}
LOOP_OPS = {"While", "StatelessWhile"}
LIST_OPS = {"TensorListFromTensor", "TensorListReserve", "TensorListGetItem", "TensorListSetItem", "TensorListStack"}


def _source(reference: str) -> tuple[str, int]:
    name, _, index = reference.lstrip("^").partition(":")
    return name, int(index or 0)


class _Rewriter:
    def __init__(self, graph_def: Any) -> None:
        from tensorflow.core.framework import types_pb2

        self.types = types_pb2
        self.graph_def = graph_def
        self.nodes = {n.name: n for n in graph_def.node}
        self.handles: dict[str, str] = {}
        # Nodes that output a TensorArray flow where they used to output a list.
        self.flows: set[str] = set()
        # Constants inside loop bodies (they have a control input that puts them in the loop).
        self.body_constants = {n.name for n in graph_def.node if n.op == "Const" and n.input}

    def add(self, name: str, op: str, inputs: list[str], **attrs: Any) -> str:
        node = self.graph_def.node.add(name=name, op=op, input=inputs)
        for key, value in attrs.items():
            node.attr[key].CopyFrom(value)
        self.nodes[name] = node
        return name

    def attr(self, **value: Any) -> Any:
        from tensorflow.core.framework import attr_value_pb2

        return attr_value_pb2.AttrValue(**value)

    def const(self, name: str, value: int, vector: bool = False) -> str:
        from tensorflow.python.framework import tensor_util

        tensor = tensor_util.make_tensor_proto([value] if vector else value, self.types.DT_INT32)
        return self.add(name, "Const", [], dtype=self.attr(type=self.types.DT_INT32), value=self.attr(tensor=tensor))

    def redirect(self, old: str, new: str) -> None:
        """Every data input that reads tensor `old` reads `new` instead."""
        for node in self.graph_def.node:
            for index, reference in enumerate(node.input):
                if not reference.startswith("^") and _source(reference) == _source(old):
                    node.input[index] = new

    def make_invariants_constant(self) -> None:
        """Loop variables the body passes back unchanged are read through constant Enters."""
        for merge in [n for n in self.graph_def.node if n.op == "Merge" and len(n.input) == 2]:
            enter, following = (self.nodes.get(_source(r)[0]) for r in merge.input)
            switch = next((n for n in self.graph_def.node if n.op == "Switch" and _source(n.input[0])[0] == merge.name),
                          None)
            if (enter is None or enter.op != "Enter" or following is None or following.op != "NextIteration"
                    or switch is None):
                continue
            reference = following.input[0]
            while self.nodes[_source(reference)[0]].op == "Identity" and _source(reference) != (switch.name, 1):
                reference = self.nodes[_source(reference)[0]].input[0]
            if _source(reference) != (switch.name, 1):
                continue
            constant = self.add(f"{enter.name}/rnnexport_constant", "Enter", [enter.input[0]],
                                **{k: v for k, v in enter.attr.items() if k != "is_constant"},
                                is_constant=self.attr(b=True))
            self.redirect(f"{switch.name}:1", constant)

    def hoist_invariants(self) -> None:
        """Move out of the loop what the body computes from constant Enters alone (Keras slices
        its recurrent kernel in the body), entering the result instead: a weight computed from
        constants is read as a weight only outside a loop."""
        changed = True
        while changed:
            changed = False
            for node in list(self.graph_def.node):
                if node.op not in HOISTABLE:
                    continue
                sources = [self._behind_identities(r) for r in node.input if not r.startswith("^")]
                enters = [s for s in sources if s.op == "Enter" and s.attr["is_constant"].b]
                if not enters or any(s not in enters and s.name not in self.body_constants for s in sources):
                    continue
                outer = [s.input[0] if s in enters else self._hoisted_const(s) for s in sources]
                hoisted = self.add(f"{node.name}/rnnexport_hoisted", node.op, outer, **dict(node.attr))
                entered = []
                for index in range(self._outputs(node)):
                    entered.append(self.add(f"{hoisted}/rnnexport_enter_{index}", "Enter", [f"{hoisted}:{index}"],
                                            **self._frame(enters[0]), T=self.attr(type=self._dtype(node)),
                                            is_constant=self.attr(b=True)))
                    self.redirect(f"{node.name}:{index}", entered[-1])
                node.op, node.input[:] = "NoOp", [f"^{e}" for e in entered]
                node.ClearField("attr")
                changed = True

    def _behind_identities(self, reference: str) -> Any:
        node = self.nodes[_source(reference)[0]]
        while node.op == "Identity":
            node = self.nodes[_source(node.input[0])[0]]
        return node

    def _hoisted_const(self, const: Any) -> str:
        name = f"{const.name}/rnnexport_outer"
        if name not in self.nodes:
            self.add(name, "Const", [], **dict(const.attr))
        return name

    def _frame(self, enter: Any) -> dict[str, Any]:
        return {k: v for k, v in enter.attr.items() if k in ("frame_name", "parallel_iterations")}

    def _outputs(self, node: Any) -> int:
        return node.attr["num"].i if node.op == "Unpack" else node.attr["num_split"].i if "Split" in node.op else 1

    def _dtype(self, node: Any) -> int:
        return node.attr["T"].type if "T" in node.attr else node.attr["dtype"].type

    def origin(self, reference: str) -> tuple[Any, Any]:
        """The list op a list value comes from (rewritten already), and the Enter it crossed into
        the loop the value is read in (None when it is read outside every loop)."""
        enter, outside = None, False
        node = self.nodes[_source(reference)[0]]
        while node.name not in self.handles:
            # A value read after the loop's Exit lives outside the loop, like its list.
            outside = outside or (node.op == "Exit" and enter is None)
            if node.op == "Enter" and enter is None and not outside:
                enter = node
            if node.op in PASS_THROUGH or node.op == "TensorListSetItem":
                node = self.nodes[_source(node.input[0])[0]]
            elif node.op == "TensorArrayWriteV3":
                node = self.nodes[_source(node.input[3])[0]]
            else:
                raise UnsupportedModelError(f"op '{node.name}' ({node.op}) makes a TensorList rnnexport cannot follow")
        return node, enter

    def entered_handle(self, node: Any) -> str:
        """The TensorArray handle of the list `node` reads, entered into the node's loop."""
        list_op, enter = self.origin(node.input[0])
        handle = self.handles[list_op.name]
        if enter is None:
            return handle
        return self.add(f"{node.name}/rnnexport_handle", "Enter", [handle], T=self.attr(type=self.types.DT_RESOURCE),
                        is_constant=self.attr(b=True), **self._frame(enter))

    def _array(self, node: Any, size: str) -> str:
        dtype = node.attr["element_dtype"]
        return self.add(f"{node.name}/rnnexport_array", "TensorArrayV3", [size], dtype=dtype,
                        dynamic_size=self.attr(b=False), clear_after_read=self.attr(b=False),
                        identical_element_shapes=self.attr(b=True), tensor_array_name=self.attr(s=b""))

    def _range(self, name: str, size: str) -> str:
        return self.add(f"{name}/rnnexport_range", "Range", [self.const(f"{name}/rnnexport_zero", 0), size,
                                                                self.const(f"{name}/rnnexport_one", 1)],
                        Tidx=self.attr(type=self.types.DT_INT32))

    def _retype(self, node: Any, op: str, inputs: list[str], **attrs: Any) -> None:
        dtype = node.attr["element_dtype"]
        if op in ("TensorArrayScatterV3", "TensorArrayWriteV3", "Identity"):
            self.flows.add(node.name)
        if op == "Identity":
            dtype = self.attr(type=self.types.DT_FLOAT)
        node.op = op
        del node.input[:]
        node.input.extend(inputs)
        node.ClearField("attr")
        for key, value in attrs.items():
            node.attr[key].CopyFrom(value)
        node.attr["T" if op in ("TensorArrayScatterV3", "TensorArrayWriteV3", "Identity") else "dtype"].CopyFrom(dtype)

    def rewrite_lists(self) -> None:
        listed = [n for n in self.graph_def.node if n.op.startswith("TensorList")]
        stray = [n for n in listed if n.op not in LIST_OPS]
        if stray:
            raise UnsupportedModelError(f"op '{stray[0].name}' ({stray[0].op}) handles a TensorList in a way "
                                        "rnnexport cannot follow")
        for node in [n for n in listed if n.op == "TensorListFromTensor"]:
            tensor = node.input[0]
            shape = self.add(f"{node.name}/rnnexport_shape", "Shape", [tensor], T=node.attr["element_dtype"],
                             out_type=self.attr(type=self.types.DT_INT32))
            size = self.add(f"{node.name}/rnnexport_size", "StridedSlice",
                            [shape, self.const(f"{node.name}/rnnexport_begin", 0, True),
                             self.const(f"{node.name}/rnnexport_end", 1, True),
                             self.const(f"{node.name}/rnnexport_stride", 1, True)],
                            T=self.attr(type=self.types.DT_INT32), Index=self.attr(type=self.types.DT_INT32),
                            shrink_axis_mask=self.attr(i=1))
            array = self._array(node, size)
            self.handles[node.name] = array
            self._retype(node, "TensorArrayScatterV3", [array, self._range(node.name, size), tensor, f"{array}:1"])
        for node in [n for n in listed if n.op == "TensorListReserve"]:
            array = self._array(node, node.input[1])
            self.handles[node.name] = array
            self._retype(node, "Identity", [f"{array}:1"])
        self._write_every_step(listed)
        for node in [n for n in listed if n.op in ("TensorListGetItem", "TensorListSetItem")]:
            handle = self.entered_handle(node)
            if node.op == "TensorListGetItem":
                self._retype(node, "TensorArrayReadV3", [handle, node.input[1], node.input[0]])
            else:
                self._retype(node, "TensorArrayWriteV3", [handle, node.input[1], node.input[2], node.input[0]])
        for node in [n for n in listed if n.op == "TensorListStack"]:
            handle = self.entered_handle(node)
            size = self.add(f"{node.name}/rnnexport_size", "TensorArraySizeV3", [handle, node.input[0]])
            self._retype(node, "TensorArrayGatherV3", [handle, self._range(node.name, size), node.input[0]],
                         element_shape=self.attr(shape={"unknown_rank": True}))
        self._retype_flows()

    def _int(self, reference: str) -> int | None:
        from tensorflow.python.framework import tensor_util

        node = self._behind_identities(reference)
        if node.op != "Const":
            return None
        value = tensor_util.MakeNdarray(node.attr["value"].tensor)
        return int(value) if value.size == 1 and value.dtype.kind in "iu" else None

    def _write_every_step(self, listed: list[Any]) -> None:
        """A layer returning its last step alone (tf-keras 2.16 and later) writes each step's output
        at index 0 of a one-element list, over the step before; a TensorArray is written once per
        index. Such a list becomes an array of every step, written at the step the loop reads its
        input at, so that its last element is what the overwritten list ends with."""
        reads = {}
        for node in [n for n in listed if n.op == "TensorListGetItem"]:
            list_op, enter = self.origin(node.input[0])
            if enter is not None and list_op.op == "TensorArrayScatterV3":
                reads[enter.attr["frame_name"].s] = (node.input[1], list_op)
        for node in [n for n in listed if n.op == "TensorListSetItem"]:
            list_op, enter = self.origin(node.input[0])
            array = self.nodes[self.handles[list_op.name]]
            if enter is None or self._int(node.input[1]) != 0 or self._int(array.input[0]) != 1:
                continue
            index, source = reads.get(enter.attr["frame_name"].s, (None, None))
            if index is None:
                raise UnsupportedModelError(f"op '{node.name}' overwrites one element of a TensorList in a loop that "
                                            "reads no sequence; rnnexport cannot follow it")
            array.input[0] = f"{source.name}/rnnexport_size"
            node.input[1] = index

    def _retype_flows(self) -> None:
        """The loop plumbing that carried a list carries its TensorArray's float flow now."""
        flows = set(self.flows)
        changed = True
        while changed:
            changed = False
            for node in self.graph_def.node:
                if node.op not in PASS_THROUGH or node.name in flows or node.attr["T"].type != self.types.DT_VARIANT:
                    continue
                if any(_source(r)[0] in flows for r in node.input if not r.startswith("^")):
                    node.attr["T"].type = self.types.DT_FLOAT
                    flows.add(node.name)
                    changed = True


def lowered(signature: Any) -> tuple[Any, dict[str, str]]:
    """The signature frozen and lowered to TF1 loops over TensorArrays, and its outputs by name."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(signature, lower_control_flow=True)
    outputs = {key: tensor.name for key, tensor in zip(sorted(signature.structured_outputs), frozen.outputs)}
    rewriter = _Rewriter(frozen.graph.as_graph_def())
    rewriter.make_invariants_constant()
    rewriter.hoist_invariants()
    rewriter.rewrite_lists()
    return rewriter.graph_def, outputs


def _readers(graph_def: Any) -> set[str]:
    return {_source(r)[0] for n in graph_def.node for r in n.input}


def _sinks(graph_def: Any) -> list[str]:
    """The tensors nothing reads that a frozen function returns: its `Identity` outputs."""
    read = _readers(graph_def)
    return [f"{n.name}:0" for n in graph_def.node if n.op == "Identity" and n.name not in read]


def _lower_functional(graph_def: Any, sinks: list[str]) -> tuple[Any, list[str]]:
    """A graph with functional While ops frozen again with its control flow lowered, and the new
    names of `sinks`."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    read = _readers(graph_def)
    feeds = [f"{n.name}:0" for n in graph_def.node if n.op == "Placeholder" and n.name in read]
    # Freezing without lowering marks each loop not to be lowered; the mark is lifted.
    for node in [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]:
        if node.op in LOOP_OPS:
            node.attr["_lower_using_switch_merge"].b = True
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    function = wrapped.prune([wrapped.graph.get_tensor_by_name(t) for t in feeds],
                             [wrapped.graph.get_tensor_by_name(t) for t in sinks])
    frozen = convert_variables_to_constants_v2(function, lower_control_flow=True)
    return frozen.graph.as_graph_def(), [t.name for t in frozen.outputs]


def lowered_frozen(graph_def: Any, path: Any) -> tuple[Any, dict[str, str]] | None:
    """A frozen TF2 graph (`convert_variables_to_constants_v2` written to a `.pb`) rewritten as
    `lowered` rewrites a signature, with its outputs (the `Identity` tensors nothing reads, by
    name); None for a graph with no TF2 loop (no While op, no TensorList)."""
    ops = {n.op for n in graph_def.node} | {n.op for f in graph_def.library.function for n in f.node_def}
    if not ops & (LOOP_OPS | LIST_OPS):
        return None
    try:
        return _rewritten(graph_def, ops)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - lowering raises many types on graphs it cannot take
        raise UnsupportedModelError(f"{path}: its While loops cannot be lowered to TF1 loops: {one_line(exc)}") from None


def _rewritten(graph_def: Any, ops: set[str]) -> tuple[Any, dict[str, str]]:
    sinks = _sinks(graph_def)
    names = sinks
    if ops & LOOP_OPS:
        graph_def, names = _lower_functional(graph_def, sinks)
    # Lowering leaves a placeholder for every loop input it folded (`unused_control_flow_input`):
    # nothing reads them, and nothing must be asked to feed them.
    read = _readers(graph_def)
    kept = [n for n in graph_def.node if n.op != "Placeholder" or n.name in read]
    del graph_def.node[:]
    graph_def.node.extend(kept)
    rewriter = _Rewriter(graph_def)
    rewriter.make_invariants_constant()
    rewriter.hoist_invariants()
    rewriter.rewrite_lists()
    return rewriter.graph_def, {sink.split(":")[0]: name for sink, name in zip(sinks, names)}
