"""Reading Keras 2 `.h5` files with Keras 3, keeping Keras 2's semantics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rnnexport_converters.keras import config as keras_config
from rnnexport.errors import SourceError, UnsupportedModelError, one_line

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def read_h5(path: Path) -> tuple[dict[str, Any], str]:
    """The model config and the Keras version that wrote the file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version", b"unknown")
    except OSError as exc:
        raise SourceError(f"{path}: not a readable HDF5 file ({exc})") from None
    if raw is None:
        raise SourceError(f"{path}: holds weights only, no model config; save the whole model (model.save)")
    decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
    return json.loads(decode(raw)), decode(version)


def is_keras2(version: str) -> bool:
    return not version.startswith("3")


def build_keras2_model(path: Path, config: dict[str, Any]) -> tuple[Any, list[str]]:
    """Build a Keras 3 model from a Keras 2 config, load the file's weights layer by layer, and
    keep Keras 2's semantics; returns the model and notes on what that took."""
    import h5py
    from keras.src.legacy.saving import saving_utils

    patched, reset_before = keras_config.legacy_patch(config)
    try:
        model = saving_utils.model_from_config(patched)
    except Exception as exc:  # noqa: BLE001 - Keras raises anything here; the user needs one line
        raise SourceError(f"{path}: Keras 3 cannot rebuild this Keras 2 model: {one_line(exc)}") from None
    with h5py.File(path, "r") as f:
        if "model_weights" not in f:
            raise SourceError(f"{path}: the file has no model_weights group")
        group = f["model_weights"]
        for layer in model.layers:
            expected = layer.get_weights()
            if not expected:
                continue
            if layer.name not in group:
                raise SourceError(f"{path}: no weights stored for layer '{layer.name}'")
            names = [n.decode() if isinstance(n, bytes) else n for n in group[layer.name].attrs["weight_names"]]
            arrays = [group[layer.name][n][()] for n in names]
            shapes = [a.shape for a in arrays]
            if shapes != [w.shape for w in expected]:
                raise UnsupportedModelError(
                    f"{path}: layer '{layer.name}' stores weights of shapes {shapes}, Keras 3 expects "
                    f"{[w.shape for w in expected]}"
                )
            layer.set_weights(arrays)
    notes = []
    if reset_before:
        notes.append(f"GRU saved before reset_after existed, built with reset_after=False: {', '.join(reset_before)}")
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
