"""The architecture of a checkpoint saved without a graph, as the user names it: `--cell` specs,
or a Keras model file or JSON config (`--architecture`) whose layers TF1 cells could have been."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexport_converters.tf1 import cellspec
from rnnexport_converters.tf1.cellspec import CellSpec
from rnnexport.errors import SourceError, UnsupportedModelError
from rnnexport.options import SourceOptions

KERAS_KINDS = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
# Layers that compute nothing at inference.
PASSIVE = {"InputLayer", "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout"}
HEAD_ACTIVATIONS = ("linear", "softmax", "sigmoid", "tanh", "relu")


@dataclass(frozen=True)
class Architecture:
    """The recurrent layers, first to last, and what comes before and after them. `head` is None
    when a dense head is taken where the checkpoint has one, True when the architecture ends in
    one (with `head_activation`), False when it has none; `embedding` likewise for an embedding
    before the first layer, with its (vocabulary, width) where the architecture gives them.
    `last_step`: the model returns its last step."""

    specs: tuple[CellSpec, ...]
    origin: str
    head: bool | None = None
    head_activation: str = "linear"
    last_step: bool = False
    features: int | None = None
    embedding: bool | None = None
    embedding_shape: tuple[int, int] | None = None


def from_options(options: SourceOptions) -> Architecture | None:
    """What `--cell` or `--architecture` name, or None when neither is given."""
    if options.cells and options.architecture:
        raise SourceError("name the architecture once: --cell or --architecture, not both")
    if options.cells:
        specs = cellspec.parse(options.cells)
        return Architecture(tuple(specs), f"--cell {','.join(options.cells)}")
    if options.architecture:
        return from_keras(Path(options.architecture))
    return None


def _config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SourceError(f"{path}: no such architecture file")
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        if path.suffix in (".h5", ".hdf5"):
            from rnnexport_converters.keras.legacy import read_h5

            return read_h5(path)[0]
        return json.loads(path.read_text())
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not a Keras model file or JSON config ({str(exc).splitlines()[0]})") from None


def _activation(value: Any) -> str:
    """A serialized activation's name: Keras writes a string, or a dict around one."""
    if isinstance(value, dict):
        value = value.get("config", value.get("class_name"))
        value = value.get("name") if isinstance(value, dict) else value
    return str(value)


def _recurrent(path: Path, name: str, kind: str, config: dict[str, Any]) -> CellSpec:
    where = f"{path}: layer '{name}'"
    if kind == "gru" and config.get("reset_after", True):
        raise UnsupportedModelError(f"{where} is a GRU with reset_after=True; TF1's GRUCell computes "
                                    "reset_after=False, so its checkpoint cannot fill this layer")
    if kind != "rnn" and _activation(config.get("recurrent_activation", "sigmoid")) != "sigmoid":
        raise UnsupportedModelError(f"{where} has recurrent_activation "
                                    f"{_activation(config['recurrent_activation'])}; TF1 cells gate with sigmoid")
    activation = _activation(config.get("activation", "tanh"))
    if activation not in cellspec.ACTIVATIONS:
        raise UnsupportedModelError(f"{where} has activation {activation}; supported: "
                                    f"{', '.join(cellspec.ACTIVATIONS)}")
    if config.get("go_backwards") or config.get("use_bias") is False or config.get("stateful"):
        raise UnsupportedModelError(f"{where} runs backwards, statefully or without a bias, which TF1 cells "
                                    "saved without a graph never do")
    return CellSpec(kind, int(config["units"]), {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN"}[kind],
                    activation=activation)


def from_keras(path: Path) -> Architecture:
    """The architecture a Keras model file (`.keras`, `.h5`) or JSON config describes: input, an
    embedding, recurrent layers, dropout, and at most one Dense layer at the end."""
    from rnnexport_converters.keras import config as keras_config

    specs: list[CellSpec] = []
    head, activation, last_step, features, embedding = False, "linear", False, None, None
    for entry in keras_config.layer_configs(_config(path)):
        cls, config = entry.get("class_name"), entry.get("config", {})
        name = keras_config.layer_name(entry)
        if cls == "InputLayer":
            shape = config.get("batch_shape") or config.get("batch_input_shape") or [None]
            features = shape[-1]
        if cls in PASSIVE:
            continue
        if cls == "Embedding" and not specs and embedding is None:
            embedding, features = (int(config["input_dim"]), int(config["output_dim"])), None
        elif cls in KERAS_KINDS and not head and not last_step:
            specs.append(_recurrent(path, name, KERAS_KINDS[cls], config))
            last_step = not config.get("return_sequences", False)
        elif cls == "Dense" and specs and not head:
            head, activation = True, _activation(config.get("activation", "linear"))
            if activation not in HEAD_ACTIVATIONS or config.get("use_bias") is False:
                raise UnsupportedModelError(f"{path}: Dense layer '{name}' (activation {activation}) is not a "
                                            "dense head rnnexport rebuilds from a checkpoint")
        else:
            raise UnsupportedModelError(
                f"{path}: layer '{name}' ({cls}) has no counterpart in a checkpoint of TF1 cells saved without a "
                "graph; supported: an Embedding first, recurrent layers (LSTM, GRU with reset_after=False, "
                "SimpleRNN) that return sequences up to the last, dropout, and one Dense layer at the end")
    if not specs:
        raise UnsupportedModelError(f"{path}: the architecture has no LSTM, GRU or SimpleRNN layer")
    return Architecture(tuple(specs), f"architecture {path.name}", head, activation, last_step, features,
                        embedding is not None, embedding)
