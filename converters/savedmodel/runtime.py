"""Running a SavedModel export: its `serving_default`, its streaming signatures, and a probe of
its insides. Needs TensorFlow only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.device import Device
from rnnexport.errors import ExportError, SourceError, UnsupportedModelError, one_line
from rnnexport.runner import Arrays, Closable, split_state, state_names
from rnnexport.tf import tensorflow

SIGNATURE = "serving_default"
STEP, INITIAL_STATE = "step", "initial_state"


def load(path: Path) -> Any:
    """The loaded SavedModel export, once its loading and serving are known not to run an op that
    reaches files, the network or Python: an export under test is as untrusted as a source."""
    from rnnexport_converters.savedmodel.contents import SavedModelContents

    if (path / "saved_model.pb").is_file():
        try:
            SavedModelContents(path).check_safe(False)
        except SourceError as exc:
            raise ExportError(f"{path}: cannot load the SavedModel: {str(exc).removeprefix(f'{path}: ')}") from None
        except UnsupportedModelError as exc:
            raise ExportError(str(exc)) from None
    tf = tensorflow()
    try:
        return tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many kinds for a bad directory
        raise ExportError(f"{path}: cannot load the SavedModel: {one_line(exc, typed=False)}") from None


def has_signature(path: Path, key: str) -> bool:
    """Whether the SavedModel declares signature `key`, read from its proto without loading it."""
    binary = path / "saved_model.pb"
    if not binary.is_file():
        return key in load(path).signatures
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(binary.read_bytes())
    return any(key in graph.signature_def for graph in proto.meta_graphs)


def _input_dtypes(fn: Any) -> dict[str, Any]:
    return {name: spec.dtype for name, spec in fn.structured_input_signature[1].items()}


class SavedModelRunner(Closable):
    name = "savedmodel"

    def __init__(self, path: Path, device: Device) -> None:
        self.tf_device = device.tf_name
        self.device = f"{device.label} (TensorFlow)"
        loaded = load(path)
        if SIGNATURE not in loaded.signatures:
            raise ExportError(f"{path}: no '{SIGNATURE}' signature; found: {', '.join(loaded.signatures) or 'none'}")
        self._loaded: Any = loaded
        self._fn = loaded.signatures[SIGNATURE]
        self.input_dtypes = _input_dtypes(self._fn)

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        tf = tensorflow()
        with tf.device(self.tf_device):
            feed = {name: tf.constant(inputs[name], dtype=dtype) for name, dtype in self.input_dtypes.items()}
            outputs = self._fn(**feed)
        return {name: value.numpy() for name, value in outputs.items()}

    def close(self) -> None:
        # The loaded object owns the variables; dropping it lets TensorFlow free them.
        self._loaded = self._fn = None


class SavedModelStreamRunner(Closable):
    """The `initial_state` and `step` signatures of a streaming SavedModel."""

    name = "savedmodel"

    def __init__(self, loaded: Any, device: Device) -> None:
        self.tf_device = device.tf_name
        self.device = f"{device.label} (TensorFlow)"
        self._loaded = loaded
        self._step = loaded.signatures[STEP]
        self._initial = loaded.signatures[INITIAL_STATE]
        self.input_dtypes = _input_dtypes(self._step)
        self.states = state_names(self.input_dtypes, self._step.structured_outputs)

    def initial_state(self, batch: int) -> Arrays:
        tf = tensorflow()
        with tf.device(self.tf_device):
            state = self._initial(batch=tf.constant(batch, tf.int32))
        return {name: value.numpy() for name, value in state.items()}

    def step(self, inputs: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
        tf = tensorflow()
        given = {**inputs, **state}
        with tf.device(self.tf_device):
            feed = {name: tf.constant(given[name], dtype=dtype) for name, dtype in self.input_dtypes.items()}
            outputs = self._step(**feed)
        return split_state({name: value.numpy() for name, value in outputs.items()}, self.states)

    def close(self) -> None:
        self._loaded = self._step = self._initial = None


class SavedModelProbe:
    """`serving_default` with its saved variables folded in and its function calls inlined, so that
    every tensor outside the recurrent loops (each layer's whole output sequence among them) can be
    fetched by name in a session."""

    batch = None

    def __init__(self, path: Path, device: Device) -> None:
        self.path, self.device = path, device

    def tensors(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        tf = tensorflow()
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        runner = SavedModelRunner(self.path, self.device)
        # Lowering the loops would put each layer's output inside a v1 frame, where it cannot be fetched.
        frozen = convert_variables_to_constants_v2(runner._fn, lower_control_flow=False)
        # The placeholders come in the order tf.nest flattens the signature's keyword inputs: by name.
        feeds = {placeholder.name: np.asarray(inputs[name], runner.input_dtypes[name].as_numpy_dtype)
                 for name, placeholder in zip(sorted(runner.input_dtypes), frozen.inputs, strict=True)}
        graph = tf.Graph()
        with graph.as_default(), graph.device(self.device.tf_name):
            tf.import_graph_def(frozen.graph.as_graph_def(), name="")
        fetches = [t for op in graph.get_operations() if op.type != "Const" for t in op.outputs
                   if t.dtype.is_floating]
        with tf.compat.v1.Session(graph=graph) as session:
            values = session.run(fetches, feeds)
        return {t.name: value for t, value in zip(fetches, values, strict=True)}
