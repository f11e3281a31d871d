"""Keras model configs as plain dicts: which layers they hold, what rnnexport supports, and the
rewrites that make a saved model accept any length. No TensorFlow is imported here.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator
from typing import Any

RECURRENT = {"LSTM", "GRU", "SimpleRNN"}
WRAPPERS = {"Bidirectional", "TimeDistributed"}
# Layers whose computation does not depend on the sequence length.
LENGTH_GENERIC = {
    "InputLayer", "Masking", "Embedding", "Dense", "Dropout", "SpatialDropout1D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Activation", "BatchNormalization",
    "LayerNormalization", "Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D",
    "GlobalAveragePooling1D", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
    "Concatenate", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Identity",
    "Conv2D", "MaxPooling2D", "AveragePooling2D", "SpatialDropout2D", "GlobalMaxPooling2D",
    "GlobalAveragePooling2D", "ZeroPadding1D",
}
# Layers that move axes around: length-generic unless they fold, move or repeat the time axis,
# which `timeaxis` reads from the shapes the loaded model was built with.
RESHAPING = {"Flatten", "Reshape", "Permute", "RepeatVector"}
# Elementwise Keras ops that functional graphs hold as nodes (Keras 3 adds `NotEqual` for masks).
ELEMENTWISE_OPS = {
    "NotEqual", "Equal", "Cast", "LogicalAnd", "LogicalOr", "LogicalNot", "Any", "All", "Where",
    "Add", "Subtract", "Multiply", "Divide", "Negative", "Abs", "Square", "Sqrt", "Exp", "Log",
}
SUPPORTED = RECURRENT | WRAPPERS | LENGTH_GENERIC | RESHAPING
# Only meaningful while training; dropped from the rebuilt model so exports carry no dead branches.
TRAINING_ONLY_KEYS = ("dropout", "recurrent_dropout")


def layer_configs(model_config: dict[str, Any]) -> list[dict[str, Any]]:
    """The layer entries of a Functional or Sequential config (Keras 2 and Keras 3 forms)."""
    config = model_config.get("config", model_config)
    layers = config["layers"] if isinstance(config, dict) else config
    return list(layers)


def walk(layer: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A layer entry and the layers its wrappers hold (Bidirectional, TimeDistributed)."""
    yield layer
    inner = layer.get("config", {})
    for key in ("layer", "backward_layer"):
        if isinstance(inner.get(key), dict) and "class_name" in inner[key]:
            yield from walk(inner[key])


def layer_name(layer: dict[str, Any]) -> str:
    return layer.get("config", {}).get("name") or layer.get("name") or "?"


def check_loadable(model_config: dict[str, Any], unsafe: bool, custom: Collection[str] = ()) -> None:
    """Raise for what cannot even be loaded safely: Lambda code, custom classes not supplied in
    `custom` (class names), nested models."""
    from rnnexport.errors import UnsupportedModelError

    if model_config.get("class_name") not in ("Functional", "Model", "Sequential"):
        raise UnsupportedModelError(
            f"the model is a subclassed '{model_config.get('class_name')}'; rnnexport reads Functional and "
            "Sequential models (rebuild it with the functional API, or pass a keras.Model object)"
        )
    for entry in layer_configs(model_config):
        for layer in walk(entry):
            cls, name = layer.get("class_name"), layer_name(layer)
            if cls == "Lambda" and not unsafe:
                raise UnsupportedModelError(
                    f"layer '{name}' is a Lambda layer: it holds Python code that Keras safe_mode refuses to "
                    "load; pass --unsafe if you trust this file"
                )
            if cls in ("Functional", "Model", "Sequential"):
                raise UnsupportedModelError(f"layer '{name}' is a nested model ({cls}); flatten it into one model")
            module = layer.get("module")
            if module and not module.startswith("keras") and cls not in SUPPORTED | {"Lambda", *custom}:
                raise UnsupportedModelError(
                    f"layer '{name}' is a custom layer ({module}.{cls}) that rnnexport cannot export unless you "
                    f"supply its class with --custom-objects {module}:{cls}"
                )


def unsupported_layers(model_config: dict[str, Any], unsafe: bool, custom: Collection[str] = ()) -> list[str]:
    """One line per layer that cannot be exported for any length. Custom classes the user supplied
    (`custom`) are exported as they compute; the sweep proves them at every length."""
    problems = []
    allowed = SUPPORTED | set(custom) | ({"Lambda"} if unsafe else set())
    for entry in layer_configs(model_config):
        for layer in walk(entry):
            cls, name, cfg = layer.get("class_name"), layer_name(layer), layer.get("config", {})
            is_op = (layer.get("module") or "").startswith("keras.src.ops") and cls in ELEMENTWISE_OPS
            if cls not in allowed and not is_op:
                problems.append(
                    f"layer '{name}' ({cls}) is not supported: it may tie the model to one length; "
                    f"supported layers: {', '.join(sorted(SUPPORTED))}"
                )
            elif cls in RECURRENT and cfg.get("time_major"):
                problems.append(f"layer '{name}' ({cls}) is time_major=True, which Keras 3 cannot run")
    return problems


def variable_length(model_config: dict[str, Any], int_inputs: set[str],
                    reshapes: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """A copy whose inputs take any length, whose RNNs run as loops, with no training-only parts;
    `reshapes` gives per-step Reshape layers a target shape that leaves the length open."""
    rebuilt = copy.deepcopy(model_config)
    build_shape = rebuilt.get("build_input_shape")
    if isinstance(build_shape, list) and len(build_shape) >= 2:
        build_shape[0] = build_shape[1] = None
    for entry in layer_configs(rebuilt):
        entry.pop("build_config", None)
        for layer in walk(entry):
            cfg = layer.get("config", {})
            layer.pop("build_config", None)
            if layer.get("class_name") == "InputLayer":
                shape = list(cfg.get("batch_shape") or [])
                if len(shape) >= 2:
                    # A stateful model fixes its batch; the export takes any batch and explicit state.
                    shape[0] = shape[1] = None
                    cfg["batch_shape"] = shape
                if cfg.get("name") in int_inputs:
                    cfg["dtype"] = "int32"
            if layer.get("class_name") == "Reshape" and cfg.get("name") in (reshapes or {}):
                cfg["target_shape"] = list(reshapes[cfg["name"]])
            if layer.get("class_name") == "TimeDistributed":
                layer.update(class_name="VariableTimeDistributed", module=None,
                             registered_name="rnnexport>VariableTimeDistributed")
            if layer.get("class_name") in RECURRENT:
                cfg["unroll"] = False
                cfg["stateful"] = False
                for key in TRAINING_ONLY_KEYS:
                    cfg[key] = 0.0
    return rebuilt
