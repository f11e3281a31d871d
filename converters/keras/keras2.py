"""Keras 2 model configs of every era, Keras 2.0 to tf.keras 2.15, as Keras 3 builds them.

What changed, read from the Keras sources of each era (keras-team/keras, tags 2.0.0 to v2.15.0):
- Keras 2.0 to 2.2.4 wrote a Sequential model as a bare list of layer entries; 2.2.5 and later
  wrap it as `{"name", "layers"}`; tf.keras adds an `InputLayer` entry first. Before tf.keras the
  input shape lived only on the first layer (`batch_input_shape`, or `input_dim`/`input_length`
  given to it), which Keras 3 ignores on anything but an `InputLayer`.
- Every layer could carry `batch_input_shape`, `batch_size` and, on Keras 1's InputLayer,
  `input_dtype`; tf.keras writes `dtype` as a policy dict, which under `mixed_float16` makes a
  layer compute in float16 over float32 variables: rebuilt in float32.
- Initializers, regularizers and constraints were strings, Keras 2 `{class_name, config}` dicts
  or tf.keras dicts with a `module`; only training uses them, so they are dropped whatever their form.
- GRUs before Keras 2.1.3 have no `reset_after` and computed `reset_after=False`; LSTMs and GRUs
  carry `implementation`, tf.keras RNNs `time_major`; BatchNormalization writes `axis` as a list
  and may carry `fused`; LeakyReLU calls its slope `alpha`.
- Keras 2.1 to 2.3 and tf.keras 1.x had `CuDNNLSTM` and `CuDNNGRU`: an LSTM with tanh and sigmoid
  whose bias holds the input and recurrent halves (summed, it is the LSTM's bias), and a GRU with
  `reset_after=True` whose two biases are stored one after the other.
- Keras 3 wrappers find the layer they wrap by its `module`, which Keras 2 never wrote.
- Keras 2 took `/` in layer names (its HDF5 weights nest a group per component), Keras 3 refuses it.
"""

from __future__ import annotations

import copy
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from rnnexport_converters.keras import config as keras_config
from rnnexport.errors import UnsupportedModelError

FUNCTIONAL = ("Functional", "Model")
# Keys only training reads, or that Keras 3 refuses, whatever era wrote them.
DROPPED = ("implementation", "input_length", "batch_input_shape", "input_shape", "batch_size", "fused",
           "consume_less", "zero_output_for_mask", "time_major")
TRAINING_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# cuDNN-only layers and the Keras 3 layer computing the same, with the arguments that make it so.
CUDNN = {
    "CuDNNLSTM": ("LSTM", {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True}),
    "CuDNNGRU": ("GRU", {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                         "reset_after": True}),
}
# Arguments Keras 3 calls by another name, per layer class.
RENAMED_KEYS = {"LeakyReLU": {"alpha": "negative_slope"}, "InputLayer": {"input_dtype": "dtype"}}


@dataclass
class Upgraded:
    """A Keras 3 config, the original name of every renamed layer, and what the upgrade changed:
    GRUs given `reset_after=False` and the layers that are (or wrap) cuDNN-only ones, whose
    biases `cudnn_weights` converts."""

    config: dict[str, Any]
    original_names: dict[str, str] = field(default_factory=dict)
    reset_before: list[str] = field(default_factory=list)
    cudnn: list[str] = field(default_factory=list)
    mixed_precision: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _first_layer_input(entry: dict[str, Any]) -> tuple[list[int | None], str] | None:
    """The batch shape and dtype a Sequential's first layer declares, in any era's spelling."""
    cfg = entry.get("config", {})
    if cfg.get("batch_input_shape"):
        shape = list(cfg["batch_input_shape"])
    elif cfg.get("input_shape"):
        shape = [None, *cfg["input_shape"]]
    elif entry.get("class_name") == "Embedding" and cfg.get("input_length", "absent") != "absent":
        shape = [None, cfg["input_length"]]
    elif cfg.get("input_dim") and entry.get("class_name") != "Embedding":
        shape = [None, cfg.get("input_length"), cfg["input_dim"]]
    else:
        return None
    dtype = cfg.get("dtype") if isinstance(cfg.get("dtype"), str) else "float32"
    return shape, dtype


def _sequential(config: Any) -> dict[str, Any]:
    """`{"name", "layers"}` with an InputLayer first, from any era's Sequential config."""
    layers = copy.deepcopy(config if isinstance(config, list) else config["layers"])
    name = "sequential" if isinstance(config, list) else config.get("name", "sequential")
    if layers and layers[0].get("class_name") != "InputLayer":
        declared = _first_layer_input(layers[0])
        wrapped = layers[0].get("config", {}).get("layer")
        if declared is None and layers[0].get("class_name") == "Bidirectional" and isinstance(wrapped, dict):
            # `Bidirectional(LSTM(n, input_shape=...))`: the sequence shape is the wrapped layer's.
            declared = _first_layer_input(wrapped)
        if declared is None and isinstance(config, dict) and config.get("build_input_shape"):
            declared = list(config["build_input_shape"]), "float32"
        if declared is None:
            raise UnsupportedModelError(
                f"the Sequential model declares no input shape (layer '{keras_config.layer_name(layers[0])}' has "
                "none); rnnexport cannot tell what it takes"
            )
        shape, dtype = declared
        input_name = f"{keras_config.layer_name(layers[0])}_input"
        layers.insert(0, {"class_name": "InputLayer",
                          "config": {"batch_shape": shape, "dtype": dtype, "name": input_name}})
    return {"name": name, "layers": layers}


def _valid_name(name: str, taken: set[str]) -> str:
    cleaned = re.sub(r"/+", "_", name)
    candidate, count = cleaned, 1
    while candidate in taken:
        candidate, count = f"{cleaned}_{count}", count + 1
    return candidate


def _upgrade_layer(layer: dict[str, Any], upgraded: Upgraded) -> bool:
    """Rewrite one layer entry in place; True if it was a cuDNN-only layer."""
    cls, cfg = layer.get("class_name"), layer.setdefault("config", {})
    if (cls in keras_config.RECURRENT or cls in CUDNN) and cfg.get("time_major"):
        raise UnsupportedModelError(
            f"layer '{keras_config.layer_name(layer)}' ({cls}) is time_major=True, which Keras 3 cannot run"
        )
    for key in list(cfg):
        if key.endswith(TRAINING_SUFFIXES) or (key in DROPPED and cls != "InputLayer"):
            del cfg[key]
    for old, new in RENAMED_KEYS.get(cls, {}).items():
        if old in cfg:
            cfg[new] = cfg.pop(old)
    if isinstance(cfg.get("dtype"), dict):
        cfg["dtype"] = cfg["dtype"].get("config", {}).get("name", "float32")
    if isinstance(cfg.get("dtype"), str) and cfg["dtype"].startswith("mixed_"):
        # A mixed policy computes in half precision over float32 variables; the export computes
        # in the weights' own precision.
        upgraded.mixed_precision[keras_config.layer_name(layer)] = cfg["dtype"]
        cfg["dtype"] = "float32"
    if cls == "InputLayer":
        shape = cfg.pop("batch_input_shape", None)
        if shape is not None:
            cfg["batch_shape"] = shape
        for key in ("ragged", "input_shape", "batch_size"):
            cfg.pop(key, None)
    if cls == "BatchNormalization" and isinstance(cfg.get("axis"), list) and len(cfg["axis"]) == 1:
        cfg["axis"] = cfg["axis"][0]
    if cls in CUDNN:
        layer["class_name"], fixed = CUDNN[cls]
        cfg.update(fixed)
    if cls == "GRU" and "reset_after" not in cfg:
        cfg["reset_after"] = False
        upgraded.reset_before.append(keras_config.layer_name(layer))
    return cls in CUDNN


def _accepted(cls: type) -> set[str] | None:
    """The arguments `cls(...)` takes, following `**kwargs` up the classes it is passed to, as far as
    Keras's Layer (which takes `input_dim` and `input_shape` besides its own); None: anything."""
    import keras

    names: set[str] = set()
    for klass in cls.__mro__:
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if klass is keras.layers.Layer:
            return names | {"input_dim", "input_shape"}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None


def drop_unaccepted(config: dict[str, Any]) -> list[str]:
    """Leave out, in place, what a Keras 3 layer's constructor does not take (SpatialDropout1D's
    `noise_shape`, ...), after `upgrade` has renamed and refused what changes the computation;
    returns one `layer: arguments` line per layer that lost an argument other than `trainable`."""
    import keras

    dropped = []
    for entry in keras_config.layer_configs(config):
        for layer in keras_config.walk(entry):
            cls = getattr(keras.layers, layer.get("class_name", ""), None)
            accepted = _accepted(cls) if isinstance(cls, type) and layer["class_name"] != "InputLayer" else None
            if accepted is None:
                continue
            cfg = layer.get("config", {})
            left_out = [key for key in cfg if key not in accepted]
            for key in left_out:
                del cfg[key]
            if set(left_out) - {"trainable"}:
                dropped.append(f"{keras_config.layer_name(layer)}: {', '.join(k for k in left_out if k != 'trainable')}")
    return dropped


def _rename_references(config: dict[str, Any], renamed: dict[str, str]) -> None:
    """Point every inbound node, model input and model output at the layers' new names. Keras 2
    writes a node as `[[name, node_index, tensor_index, kwargs], ...]` and an input or output as
    `[name, node_index, tensor_index]`."""

    def rename(value: Any) -> Any:
        if isinstance(value, str):
            return renamed.get(value, value)
        return [rename(v) for v in value] if isinstance(value, list) else value

    for entry in config["layers"]:
        entry["inbound_nodes"] = rename(entry.get("inbound_nodes", []))
    for key in ("input_layers", "output_layers"):
        config[key] = rename(config.get(key, []))


def upgrade(model_config: dict[str, Any]) -> Upgraded:
    """The Keras 3 config that builds the model a Keras 2 config describes, with the same semantics.

    >>> upgrade({"class_name": "Sequential", "config": [{"class_name": "Dense",
    ...     "config": {"name": "d", "units": 2, "batch_input_shape": [None, 3]}}]}).config["config"]["layers"][0]
    {'class_name': 'InputLayer', 'config': {'batch_shape': [None, 3], 'dtype': 'float32', 'name': 'd_input'}}
    """
    cls = model_config.get("class_name")
    inner = model_config.get("config")
    if cls == "Sequential":
        inner = _sequential(inner)
    elif cls in FUNCTIONAL:
        inner = copy.deepcopy(inner)
    else:
        return Upgraded(copy.deepcopy(model_config))
    upgraded = Upgraded({"class_name": cls, "config": inner})
    taken = {keras_config.layer_name(entry) for entry in inner["layers"]}
    for entry in inner["layers"]:
        cudnn = False
        for layer in keras_config.walk(entry):
            cudnn = _upgrade_layer(layer, upgraded) or cudnn
            if layer is not entry and "module" not in layer and layer.get("class_name") in keras_config.SUPPORTED:
                # Keras 3 wrappers deserialise what they wrap by module; Keras 2 configs name none.
                layer["module"] = "keras.layers"
        name = keras_config.layer_name(entry)
        if "/" in name:
            new = _valid_name(name, taken)
            taken.add(new)
            upgraded.original_names[new] = name
            entry["config"]["name"] = new
            if "name" in entry:
                entry["name"] = new
        if cudnn:
            upgraded.cudnn.append(keras_config.layer_name(entry))
    if upgraded.original_names:
        renamed = {old: new for new, old in upgraded.original_names.items()}
        _rename_references(inner, renamed)
        upgraded.notes.append("layer names with '/' renamed for Keras 3: " + ", ".join(
            f"{old} -> {new}" for new, old in upgraded.original_names.items()))
    if upgraded.mixed_precision:
        policies = ", ".join(sorted(set(upgraded.mixed_precision.values())))
        upgraded.notes.append(f"mixed-precision policy {policies} on {', '.join(upgraded.mixed_precision)}: "
                              "rebuilt in float32, the precision of the saved weights")
    inner.pop("build_input_shape", None)
    return upgraded


def _from_cudnn(kernel: Any, recurrent: Any, bias: Any, expected_bias: Any) -> list[Any]:
    """One direction's (kernel, recurrent kernel, bias) as the Keras layer holds them."""
    import numpy as np

    gates = recurrent.shape[1] // recurrent.shape[0]
    # cuDNN reads each gate's stored kernel, flattened in C order, as a [units, input] row-major
    # matrix: the Keras kernel is that matrix transposed, which is the F-order view below.
    kernel = np.hstack([g.T.reshape(g.shape, order="F") for g in np.hsplit(kernel, gates)])
    recurrent = np.hstack([g.T for g in np.hsplit(recurrent, gates)])
    if expected_bias.ndim == 1:
        bias = bias[: bias.size // 2] + bias[bias.size // 2:]
    return [kernel, recurrent, bias.reshape(expected_bias.shape)]


def cudnn_weights(stored: list[Any], expected: list[Any]) -> list[Any]:
    """A cuDNN layer's stored arrays (each direction's kernel, recurrent kernel and bias) as the
    Keras 3 layer it became holds them, the conversion Keras 2 applied when loading such weights
    into an LSTM or GRU (`_convert_rnn_weights` in its HDF5 loader): an LSTM's input and
    recurrent biases summed, a GRU's stacked in two rows."""
    converted = []
    for start in range(0, len(stored), 3):
        converted += _from_cudnn(*stored[start:start + 3], expected[start + 2])
    return converted
