"""Reading Keras 2 `.h5` files with Keras 3, keeping Keras 2's semantics.

A file holds its config in the `model_config` attribute (`model.save`) or none at all
(`model.save_weights`); then the config is the JSON file beside it (`model.to_json()`), found by
name or given with `--architecture`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from rnnexport_converters.keras import keras2
from rnnexport.errors import SourceError, UnsupportedModelError, one_line

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Where people keep the JSON of a weights-only file: `<stem>.json`, then the names Keras examples
# and tutorials use for `model.to_json()` beside `model.save_weights()`.
ARCHITECTURE_NAMES = ("{stem}.json", "{stem}_architecture.json", "{arch}.json", "model.json",
                      "model_architecture.json", "architecture.json")


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_json(path: Path) -> tuple[dict[str, Any], str | None]:
    """A config written by `model.to_json()` (or a bare `{class_name, config}`) and its Keras version."""
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: not a readable model JSON ({one_line(exc)})") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise SourceError(f"{path}: not a Keras model JSON (no class_name); write one with model.to_json()")
    return config, config.get("keras_version")


def architecture_beside(path: Path) -> Path | None:
    """The model JSON next to a weights-only file, by the names people give it."""
    arch = path.stem.replace("weights", "architecture")
    for pattern in ARCHITECTURE_NAMES:
        candidate = path.with_name(pattern.format(stem=path.stem, arch=arch))
        if candidate.is_file():
            return candidate
    return None


def read_h5(path: Path, architecture: Path | None = None) -> tuple[dict[str, Any], str, Path | None]:
    """The model config, the Keras version that wrote it, and the JSON it came from if not the file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = _decode(f.attrs.get("keras_version", b"unknown"))
    except OSError as exc:
        raise SourceError(f"{path}: not a readable HDF5 file ({exc})") from None
    if architecture is None and raw is not None:
        return json.loads(_decode(raw)), version, None
    architecture = architecture or architecture_beside(path)
    if architecture is None:
        raise SourceError(f"{path}: holds weights only, no model config, and no model JSON beside it; name the "
                          "architecture with --architecture model.json")
    if architecture.suffix.lower() in (".h5", ".hdf5"):
        config, json_version, _ = read_h5(architecture)
    else:
        config, json_version = read_json(architecture)
    return config, json_version or version, architecture


def is_keras2(version: str) -> bool:
    return not version.startswith("3")


def check_version(path: Path, version: str) -> None:
    if version.startswith("1."):
        raise UnsupportedModelError(
            f"{path}: written by Keras {version}, whose weight layout Keras 3 cannot read; load it with Keras 2 "
            "and save it again"
        )


def _weights_group(f: Any, path: Path) -> Any:
    """`model.save` nests the weights under `model_weights`; `model.save_weights` writes them at the root."""
    if "model_weights" in f:
        return f["model_weights"]
    if "layer_names" in f.attrs:
        return f
    raise SourceError(f"{path}: the file has no model weights")


def load_weights(model: Any, path: Path, original_names: Mapping[str, str], cudnn: Collection[str] = ()) -> None:
    """Each layer's weights from the HDF5 group of its name in the file: layers Keras 3 renamed
    are found under their original name, and the biases of layers in `cudnn` converted."""
    import h5py

    with h5py.File(path, "r") as f:
        group = _weights_group(f, path)
        for layer in model.layers:
            expected = layer.get_weights()
            if not expected:
                continue
            stored = original_names.get(layer.name, layer.name)
            if stored not in group:
                raise SourceError(f"{path}: no weights stored for layer '{stored}'")
            names = [_decode(n) for n in group[stored].attrs["weight_names"]]
            arrays = [group[stored][n][()] for n in names]
            if layer.name in cudnn:
                arrays = keras2.cudnn_weights(arrays, expected)
            shapes = [a.shape for a in arrays]
            if shapes != [w.shape for w in expected]:
                raise UnsupportedModelError(
                    f"{path}: layer '{stored}' stores weights of shapes {shapes}, Keras 3 expects "
                    f"{[w.shape for w in expected]}"
                )
            layer.set_weights(arrays)


def build_keras2_model(path: Path, config: dict[str, Any], custom: Mapping[str, Any],
                       weights: Callable[[Any, Mapping[str, str]], None] | None = None) -> tuple[Any, list[str]]:
    """Build a Keras 3 model from a Keras 2 config, load the file's weights layer by layer, and
    keep Keras 2's semantics; returns the model and notes on what that took. `weights(model,
    original_names)` loads the weights from elsewhere than the HDF5 file at `path` (a SavedModel)."""
    from keras.src.legacy.saving import saving_utils

    try:
        upgraded = keras2.upgrade(config)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{path}: {exc}") from None
    unaccepted = keras2.drop_unaccepted(upgraded.config)
    try:
        model = saving_utils.model_from_config(upgraded.config, custom_objects=dict(custom))
    except Exception as exc:  # noqa: BLE001 - Keras raises anything here; the user needs one line
        raise SourceError(f"{path}: Keras 3 cannot rebuild this Keras 2 model: {one_line(exc)}") from None
    if weights is None:
        load_weights(model, path, upgraded.original_names, upgraded.cudnn)
    else:
        weights(model, upgraded.original_names)
    notes = list(upgraded.notes)
    if unaccepted:
        notes.append(f"arguments Keras 3 layers do not take, left out: {'; '.join(unaccepted)}")
    if upgraded.cudnn:
        notes.append(f"cuDNN-only layers read as the LSTM or GRU they compute: {', '.join(upgraded.cudnn)}")
    if upgraded.reset_before:
        notes.append("GRU saved before reset_after existed, built with reset_after=False: "
                     f"{', '.join(upgraded.reset_before)}")
    hard = restore_keras2_activations(model)
    if hard:
        notes.append(f"Keras 2 hard_sigmoid (clip(0.2x + 0.5)) kept on: {', '.join(hard)}")
    return model, notes


def restore_keras2_activations(model: Any) -> list[str]:
    """Give every layer that used Keras 2's hard sigmoid that function back; return their names."""
    import keras

    from rnnexport_converters.keras.layers import legacy_hard_sigmoid

    changed = []
    for layer in all_layers(model):
        # Recurrent layers expose their cell's activations as read-only properties.
        holder = getattr(layer, "cell", layer)
        for attribute in ("activation", "recurrent_activation"):
            if getattr(holder, attribute, None) is keras.activations.hard_sigmoid:
                setattr(holder, attribute, legacy_hard_sigmoid)
                changed.append(layer.name)
    return sorted(set(changed))


def all_layers(model: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        found.append(layer)
        for attribute in ("forward_layer", "backward_layer", "layer"):
            inner = getattr(layer, attribute, None)
            if inner is not None and hasattr(inner, "get_weights"):
                found.append(inner)
    return found
