"""A checkpoint saved without a graph, opened with the architecture the user names (`--cell`,
`--architecture`): its variables mapped to layers (`graphless.find`), the same Keras equivalent
a recognised TF1 graph gets, and as the reference the TF1 cells' computation rebuilt over the
checkpoint's variables (`graphless_reference`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport_converters.keras import equivalent as keras_equivalent
from rnnexport_converters.keras.equivalent import KerasEquivalent
from rnnexport_converters.tf1 import equivalent as tf1_equivalent
from rnnexport_converters.tf1.architecture import Architecture
from rnnexport_converters.tf1.cells import Cell, Step
from rnnexport_converters.tf1.cells.basic_rnn import BasicRnnMatch
from rnnexport_converters.tf1.cells.block_lstm import BlockLstmMatch
from rnnexport_converters.tf1.cells.gru import GruMatch
from rnnexport_converters.tf1.cells.lstm import LstmMatch
from rnnexport_converters.tf1.graphless import PEEPHOLES, FoundLayer, Mapping, Variables, find
from rnnexport_converters.tf1.graphless_reference import GraphlessReference
from rnnexport_converters.tf1.opened import TF1_FLOAT32_ATOL
from rnnexport_converters.tf1.structure import Layer, Structure
from rnnexport.device import Device
from rnnexport.errors import SourceError, one_line
from rnnexport.model import LayerInfo, RecurrentModel, SourceInfo, TensorInfo
from rnnexport.plugins import OpenedSource
from rnnexport.tolerance import Tolerance
from rnnexport.tf import tensorflow

OUTPUT = "y"
# A cell rebuilt from variables has no graph steps; its one Step names nothing.
NO_STEP = Step("", (), (), "")


def _match(layer: FoundLayer) -> Any:
    spec, names = layer.spec, layer.names
    common = {"kernel": names["kernel"], "bias": names["bias"], "activation": spec.activation, "step": NO_STEP}
    if spec.kind == "lstm":
        kind = BlockLstmMatch if spec.title.lower() == "lstmblockcell" else LstmMatch
        return kind(**common, forget_bias=spec.forget_bias, cell_clip=spec.cell_clip, proj_clip=spec.proj_clip,
                    projection=names.get("projection"), peepholes=tuple(names.get(role) for role in PEEPHOLES))
    if spec.kind == "gru":
        return GruMatch(**common, candidate=names["candidate_kernel"], candidate_bias=names["candidate_bias"])
    return BasicRnnMatch(**common)


def _start(layer: FoundLayer, values: MappingABC[str, np.ndarray]) -> list[np.ndarray] | None:
    """The (c, h) or (h,) vectors the layer starts from, zero where no variable holds one."""
    if not layer.initial:
        return None
    u = layer.spec.units
    by_role = {role: values[name].reshape(-1) for role, name in layer.initial.items()}
    if "ch" in by_role:
        # An LSTMStateTuple flattens as (c, h).
        by_role = {"c": by_role["ch"][:u], "h": by_role["ch"][u:]}
    sizes = {"c": u, "h": layer.output_size}
    roles = ("c", "h") if layer.spec.kind == "lstm" else ("h",)
    return [by_role.get(role, np.zeros(sizes[role], np.float32)) for role in roles]


class OpenedGraphless(OpenedSource):
    def __init__(self, label: Path, prefix: Path, architecture: Architecture, meta: Path | None = None) -> None:
        """`meta`: a meta graph beside the checkpoint, which the named architecture overrides."""
        self.label = str(label)
        self.prefix = prefix
        self.meta = meta
        self.architecture = architecture
        variables = Variables.read(prefix)
        self.mapping: Mapping = find(variables, list(architecture.specs), architecture.head, architecture.embedding)
        self.variables = variables
        self.features = self.mapping.features
        if architecture.features not in (None, self.features):
            raise SourceError(f"{prefix}: {architecture.origin} takes {architecture.features} features, but the "
                              f"first kernel {list(variables.shapes[self.mapping.layers[0].names['kernel']])} "
                              f"reads {self.features}")
        embedded = variables.shapes[self.mapping.embedding] if self.mapping.embedding else None
        if architecture.embedding_shape not in (None, embedded):
            raise SourceError(f"{prefix}: {architecture.origin} embeds {architecture.embedding_shape[0]} ids in "
                              f"{architecture.embedding_shape[1]} dimensions, but '{self.mapping.embedding}' is "
                              f"{list(embedded)}")
        self.values = self._read()
        self.cells = [Cell(layer.names["kernel"], layer.spec.units, layer.input_size, layer.output_size,
                           {role: self.values[name] for role, name in layer.names.items()}, _match(layer), (NO_STEP,))
                      for layer in self.mapping.layers]
        head: list[tuple[str, Any]] = []
        if self.mapping.head:
            kernel, bias = self.mapping.head
            head = [("matmul", self.values[kernel]), ("bias", self.values[bias])]
            if architecture.head_activation != "linear":
                head.append(("activation", architecture.head_activation))
        embedding = self.values[self.mapping.embedding] if self.mapping.embedding else None
        self.input = "x" if embedding is None else "ids"
        self.structure = Structure(self.input, None, embedding, [Layer(cell) for cell in self.cells], head)
        self.initial = {index: start for index, layer in enumerate(self.mapping.layers)
                        if (start := _start(layer, self.values)) is not None}
        self.keras = tf1_equivalent.keras_model(self.structure, {self.input: self.input}, self.features,
                                                architecture.last_step, self.initial)
        self.info = self._describe()

    def _read(self) -> dict[str, np.ndarray]:
        tf = tensorflow()
        names = [n for layer in self.mapping.layers for n in (*layer.names.values(), *layer.initial.values())]
        names += [*(self.mapping.head or ()), *([self.mapping.embedding] if self.mapping.embedding else [])]
        try:
            reader = tf.train.load_checkpoint(str(self.prefix))
            return {name: np.asarray(reader.get_tensor(name), np.float32) for name in names}
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types for bad files
            raise SourceError(f"{self.prefix}: TensorFlow cannot read this checkpoint: "
                              f"{one_line(exc, typed=False)}") from None

    def _describe(self) -> SourceInfo:
        last = self.architecture.last_step
        size = self.values[self.mapping.head[0]].shape[1] if self.mapping.head else self.cells[-1].output_size
        embedding = self.structure.embedding
        if embedding is None:
            inputs = (TensorInfo(self.input, "float32", (None, None, self.features), 1),)
        else:
            inputs = (TensorInfo(self.input, "int32", (None, None), 1, int(embedding.shape[0])),)
        outputs = (TensorInfo(OUTPUT, "float32", (None, size) if last else (None, None, size), None if last else 1),)
        layers = []
        if embedding is not None:
            layers.append(LayerInfo("embedding", "Embedding", details={
                "vocab": int(embedding.shape[0]), "dim": int(embedding.shape[1]), "variable": self.mapping.embedding}))
        for index, (layer, cell) in enumerate(zip(self.mapping.layers, self.cells)):
            details: dict[str, Any] = {"layer": index, "variables": ", ".join(layer.names.values())}
            if layer.initial:
                details["initial_state"] = ", ".join(layer.initial.values())
            layers.append(LayerInfo(layer.scope or tf1_equivalent.layer_name(index), cell.describe(), True,
                                    cell.units, "forward", details))
        notes = [f"a checkpoint without a graph: the architecture is {self.architecture.origin}; the input size "
                 f"{self.features} is read from the first kernel"]
        if embedding is not None:
            notes.append(f"token ids go through '{self.mapping.embedding}' {list(embedding.shape)}, the only variable "
                         f"named like an embedding of width {self.features}")
        if self.mapping.head:
            kernel, bias = self.mapping.head
            activation = self.architecture.head_activation
            layers.append(LayerInfo("projection", "matmul + bias", details={"activation": activation}))
            told = "" if self.architecture.head else (
                "; the checkpoint does not say which activation follows, so the export returns logits")
            notes.append(f"dense head from '{kernel}' {list(self.values[kernel].shape)} and '{bias}', the only "
                         f"kernel [{self.cells[-1].output_size}, K] with a bias left over{told}")
        elif self.architecture.head is None:
            notes.append("no dense head: no variable left over is a kernel [units, K] with a bias")
        for index, layer in enumerate(self.mapping.layers):
            extras = [what for role, what in (("projection", "a projection"), (PEEPHOLES[0], "peepholes"))
                      if role in layer.names]
            if extras and layer.spec.cell_clip is None and layer.spec.proj_clip is None:
                notes.append(f"layer {index} is an LSTMCell with {' and '.join(extras)}; no clip is applied (Saver "
                             "does not store cell_clip or proj_clip: add :cell_clip=X:proj_clip=Y to its spec "
                             f"{layer.spec} if the model was built with them)")
            if layer.initial:
                notes.append(f"layer {index} starts from the trained state {', '.join(layer.initial.values())} "
                             "(tiled over the batch), as the export does")
        if self.mapping.unused:
            notes.append(f"not used: {self.variables.listing(self.mapping.unused)}")
        ignored = f"; its meta graph {self.meta.name} is ignored, as the architecture is named" if self.meta else ""
        notes.append(f"restored from {self.prefix}{ignored}")
        title = f"TF1 Saver checkpoint without a graph ({len(self.cells)} cell{'s' if len(self.cells) != 1 else ''})"
        return SourceInfo(self.label, "tf1-checkpoint", title, inputs, outputs, tuple(layers), None, True,
                          tuple(notes))

    @functools.cached_property
    def equivalent(self) -> KerasEquivalent:
        return KerasEquivalent(self.keras, self.info)

    def recurrent_model(self) -> RecurrentModel:
        return keras_equivalent.recurrent_model(self.equivalent)

    def reference(self, device: Device) -> GraphlessReference:
        return GraphlessReference(self, device)

    def layer_outputs(self, inputs: MappingABC[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
        return keras_equivalent.layer_outputs(self.equivalent, inputs)

    def tolerance_floor(self, device: Device) -> Tolerance | None:
        # The reference sums concat([x, h]) . K in one MatMul, as TF1 cells do (see opened.py).
        return Tolerance(atol=TF1_FLOAT32_ATOL, rtol=0.0)
