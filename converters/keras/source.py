"""Source plugin for Keras models: `.keras` files, Keras 2 `.h5` files and `keras.Model` objects.

Every model is rebuilt from its config with a dynamic time axis, loops instead of unrolled
steps, no cuDNN-only kernels and no training-only dropout, and the weights carried over.
"""

from __future__ import annotations

import functools
import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport_converters.keras import config as keras_config
from rnnexport_converters.keras import custom as keras_custom
from rnnexport_converters.keras import equivalent as keras_equivalent
from rnnexport_converters.keras import lengths as keras_lengths
from rnnexport_converters.keras import legacy as keras_legacy
from rnnexport_converters.keras import timeaxis as keras_timeaxis
from rnnexport_converters.keras import windows as keras_windows
from rnnexport_converters.keras.equivalent import KerasEquivalent
from rnnexport_converters.keras.reference import KerasReference
from rnnexport.device import Device
from rnnexport.errors import SourceError, UnsupportedModelError, one_line
from rnnexport.model import LayerInfo, RecurrentModel, SourceInfo, TensorInfo
from rnnexport.options import SourceOptions
from rnnexport.plugins import OpenedSource, Source
from rnnexport.tf import tensorflow

ZIP_MAGIC = b"PK\x03\x04"
SUFFIXES = (".keras", ".h5", ".hdf5")


def signature_name(name: str) -> str:
    """A name SavedModel signatures accept, kept as close to the Keras name as possible."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)
    return cleaned if re.match(r"[A-Za-z0-9.]", cleaned) else f"x{cleaned}"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def _read_keras_config(path: Path) -> tuple[dict[str, Any], str]:
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in archive.namelist() else {}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: not a valid .keras archive ({exc})") from None
    return config, metadata.get("keras_version", "3")


class KerasSource(Source):
    name = "keras"
    description = "Keras models: .keras, Keras 2 .h5, keras.Model objects"

    def sniff(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in SUFFIXES

    def accepts(self, obj: Any) -> bool:
        try:
            import keras
        except ImportError:
            return False
        return isinstance(obj, keras.Model)

    def open(self, source: Path | Any, options: SourceOptions) -> OpenedSource:
        tensorflow()
        custom = keras_custom.resolve(options.custom_objects)
        if isinstance(source, Path):
            model, fmt, legacy = self._load_file(source, options, custom)
            label = str(source)
        else:
            config = {"class_name": type(source).__name__, "config": _model_config(source, "in-memory model")}
            if type(source).__name__ not in ("Functional", "Sequential"):
                raise UnsupportedModelError(
                    f"in-memory model '{source.name}' is a subclassed {type(source).__name__}; rnnexport reads "
                    "Functional and Sequential models"
                )
            # Its classes are loaded already: only what cannot be exported is refused.
            _check_loadable("in-memory model", config, options, custom, loaded=True)
            model, fmt, legacy, label = source, "in-memory keras.Model", None, f"<keras.Model {source.name}>"
        return OpenedKeras(label, model, fmt, legacy, options, custom)

    def _load_file(self, path: Path, options: SourceOptions,
                   custom: dict[str, Any]) -> tuple[Any, str, list[str] | None]:
        """The model, a description of its format, and for Keras 2 files the notes on reading it."""
        with path.open("rb") as f:
            magic = f.read(8)
        if magic.startswith(ZIP_MAGIC):
            config, version = _read_keras_config(path)
            _check_loadable(str(path), config, options, custom)
            return _load_keras3(path, options, custom), f".keras (Keras {version})", None
        if magic == keras_legacy.HDF5_MAGIC:
            config, version, architecture = keras_legacy.read_h5(path, options.architecture)
            keras_legacy.check_version(path, version)
            _check_loadable(str(path), config, options, custom)
            beside = f" + {architecture.name}" if architecture is not None else ""
            if keras_legacy.is_keras2(version) or architecture is not None:
                model, notes = keras_legacy.build_keras2_model(path, config, custom)
                return model, f"legacy .h5 (Keras {version}){beside}", notes
            return _load_keras3(path, options, custom), f".h5 (Keras {version})", None
        raise SourceError(f"{path}: not a Keras model file (neither a .keras archive nor HDF5)")


def _check_loadable(label: str, config: dict[str, Any], options: SourceOptions, custom: dict[str, Any],
                    loaded: bool = False) -> None:
    try:
        keras_config.check_loadable(config, options.unsafe, custom)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{label}: {exc}") from None
    if not loaded:
        keras_custom.check_found(label, config, custom)


def _load_keras3(path: Path, options: SourceOptions, custom: dict[str, Any]) -> Any:
    import keras

    try:
        return keras.saving.load_model(path, custom_objects=keras_custom.by_name(custom), compile=False,
                                       safe_mode=not options.unsafe)
    except Exception as exc:  # noqa: BLE001 - Keras raises anything here
        raise SourceError(f"{path}: Keras cannot load this model: {one_line(exc)}") from None


def _model_config(model: Any, label: str) -> dict[str, Any]:
    try:
        return model.get_config()
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"{label}: Keras cannot describe this model's config: {one_line(exc)}") from None


def _output_names(model: Any) -> list[str]:
    """Functional models name their outputs; Sequential ones take the producing layer's name."""
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    return [t._keras_history[0].name for t in model.outputs]


def _input_consumers(model: Any) -> dict[int, list[Any]]:
    """Layers fed directly by each model input, keyed by the input's index."""
    consumers: dict[int, list[Any]] = {i: [] for i in range(len(model.inputs))}
    ids = {id(t): i for i, t in enumerate(model.inputs)}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in getattr(node, "input_tensors", []):
                if id(tensor) in ids:
                    consumers[ids[id(tensor)]].append(layer)
    return consumers


def _layer_info(layer: Any) -> LayerInfo:
    kind = type(layer).__name__
    if kind == "Bidirectional":
        inner = layer.forward_layer
        details = {"merge_mode": layer.merge_mode, "return_sequences": inner.return_sequences}
        if type(inner).__name__ == "GRU":
            details["reset_after"] = inner.reset_after
        return LayerInfo(layer.name, f"Bidirectional({type(inner).__name__})", True, inner.units, "bidirectional", details)
    if kind in keras_config.RECURRENT:
        details = {"return_sequences": layer.return_sequences}
        if layer.return_state:
            details["return_state"] = True
        if kind == "GRU":
            details["reset_after"] = layer.reset_after
        if layer.unroll:
            details["unroll"] = True
        if layer.stateful:
            details["stateful"] = True
        direction = "backward" if layer.go_backwards else "forward"
        return LayerInfo(layer.name, kind, True, layer.units, direction, details)
    if kind == "TimeDistributed":
        return LayerInfo(layer.name, f"TimeDistributed({type(layer.layer).__name__})")
    details = {}
    if kind == "Embedding":
        details = {"vocab": layer.input_dim, "dim": layer.output_dim, "mask_zero": layer.mask_zero}
    elif kind == "Masking":
        details = {"mask_value": layer.mask_value}
    elif kind == "Dense":
        details = {"units": layer.units}
    return LayerInfo(layer.name, kind, details=details)


def _output_info(name: str, tensor: Any, timed: bool) -> TensorInfo:
    shape = list(tensor.shape)
    timed = timed and len(shape) >= 3
    dims = (None, None, *shape[2:]) if timed else (None, *shape[1:])
    return TensorInfo(name, str(tensor.dtype), dims, 1 if timed else None)


def _is_causal(model: Any) -> bool:
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Bidirectional" or getattr(layer, "go_backwards", False):
            return False
        if kind in ("GlobalMaxPooling1D", "GlobalAveragePooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling2D"):
            return False
        # Over (time, frequency), a window more than one step long reads steps ahead.
        if kind in ("Conv2D", "MaxPooling2D", "AveragePooling2D") and keras_lengths.window(layer)[0] > 1:
            return False
    # A 1-D window is causal where padding on its left gives it every step it reads.
    return not keras_windows.plan(list(model.layers), list(model.outputs), None).ahead


class OpenedKeras(OpenedSource):
    def __init__(self, label: str, model: Any, fmt: str, legacy: list[str] | None, options: SourceOptions,
                 custom: dict[str, Any]) -> None:
        self.label = label
        self.custom = custom
        self.original = model
        self.legacy = legacy is not None
        self.legacy_notes = legacy or []
        self.options = options
        self.config = _model_config(model, label)
        self._rebuilt: Any = None
        declared = [list(t.shape) for t in model.inputs]
        fixed = {shape[1] for shape in declared if len(shape) >= 2 and shape[1] is not None}
        self.fixed_length = fixed.pop() if len(fixed) == 1 else None
        self.input_names = _unique([signature_name(n) for n in self._input_layer_names()])
        self.output_names = _unique([signature_name(n) for n in _output_names(model)])
        self.info = self._describe(fmt, declared)
        self.stateful = any(layer.details.get("stateful") for layer in self.info.layers)

    def _input_layer_names(self) -> list[str]:
        return [t._keras_history[0].name for t in self.original.inputs]

    def _describe(self, fmt: str, declared: list[list[int | None]]) -> SourceInfo:
        consumers = _input_consumers(self.original)
        self.int_inputs: set[str] = set()
        inputs = []
        for index, (name, shape) in enumerate(zip(self.input_names, declared)):
            dtype, vocab, mask = str(self.original.inputs[index].dtype), None, None
            for layer in consumers[index]:
                kind = type(layer).__name__
                if kind == "Embedding":
                    dtype, vocab = "int32", layer.input_dim
                    mask = 0.0 if layer.mask_zero else None
                    self.int_inputs.add(self._input_layer_names()[index])
                elif kind == "Masking":
                    mask = float(layer.mask_value)
            dims = tuple([None, None, *shape[2:]]) if len(shape) >= 2 else tuple([None, *shape[1:]])
            inputs.append(TensorInfo(name, dtype, dims, 1 if len(shape) >= 2 else None, vocab, mask))
        layers = tuple(_layer_info(layer) for layer in self.original.layers if type(layer).__name__ != "InputLayer")
        notes = []
        if self.fixed_length is not None:
            notes.append(f"the source fixes the time dimension at {self.fixed_length}; the export accepts any length")
        unrolled = [layer.name for layer in layers if layer.details.get("unroll")]
        if unrolled:
            notes.append(f"unroll=True on {', '.join(unrolled)}: the export runs them as loops")
        stateful = [layer.name for layer in layers if layer.details.get("stateful")]
        if stateful:
            notes.append(f"stateful=True on {', '.join(stateful)}: the export starts every sequence from the zero "
                         "state; convert --streaming exports step entry points that carry the state explicitly")
        notes += self.legacy_notes
        min_length, limits = keras_lengths.shortest(self.original)
        if min_length > 1:
            notes.append(f"shortest length {min_length} ({'; '.join(limits)}): the sweep starts there")
        if self.int_inputs:
            notes.append("inputs feeding an Embedding take int32 token ids")
        self.time_axis = keras_timeaxis.walk(self.original)
        for name, target in self.time_axis.per_step_reshapes.items():
            notes.append(f"reshape '{name}' reshapes each step: rebuilt with target shape {tuple(target)} for any length")
        problems = tuple(keras_config.unsupported_layers({"config": self.config}, self.options.unsafe, self.custom))
        problems += tuple(self.time_axis.problems.values())
        outputs = tuple(_output_info(n, t, timed) for n, t, timed in
                        zip(self.output_names, self.original.outputs, self.time_axis.timed_outputs))
        return SourceInfo(self.label, "keras", fmt, tuple(inputs), outputs, layers, self.fixed_length,
                          _is_causal(self.original), tuple(notes), problems, min_length)

    def rebuilt(self) -> Any:
        """The same layers and weights, for any length, tracing no GPU-only kernel."""
        if self._rebuilt is None:
            import keras
            from keras.src.saving.serialization_lib import SafeModeScope

            from rnnexport_converters.keras import layers  # noqa: F401 - registers the replacement layers

            config = keras_config.variable_length(self.config, self.int_inputs, self.time_axis.per_step_reshapes)
            cls = type(self.original)
            try:
                with SafeModeScope(not self.options.unsafe), keras_custom.scope(self.custom):
                    model = cls.from_config(config)
                model.set_weights(self.original.get_weights())
            except Exception as exc:  # noqa: BLE001
                raise UnsupportedModelError(
                    f"{self.label}: cannot rebuild the model for any length: {one_line(exc)}"
                ) from None
            for layer in keras_legacy.all_layers(model):
                # Keras picks cuDNN at trace time when it sees a GPU; those kernels fail on CPUs.
                if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
                    layer.use_cudnn = False
            self._rebuilt = model
        return self._rebuilt

    @functools.cached_property
    def equivalent(self) -> KerasEquivalent:
        return KerasEquivalent(self.rebuilt(), self.info)

    def recurrent_model(self) -> RecurrentModel:
        return keras_equivalent.recurrent_model(self.equivalent)

    def reference(self, device: Device) -> KerasReference:
        return KerasReference(self, device)

    def layer_outputs(self, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
        return keras_equivalent.layer_outputs(self.equivalent, inputs)
