"""Custom layer classes a Keras file uses: supplied as `module:Name` references, or refused by name."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from rnnexport_converters.keras import config as keras_config
from rnnexport_converters.keras import keras2
from rnnexport.errors import SourceError, UnsupportedModelError, one_line

# Model and input classes every config names, which Keras resolves without a layer class.
BUILT_IN = {"Functional", "Model", "Sequential", "InputLayer"}


def resolve(references: Sequence[str]) -> dict[str, Any]:
    """The objects `module:Name` references name, keyed by `Name`.

    >>> resolve(["collections:OrderedDict"])
    {'OrderedDict': <class 'collections.OrderedDict'>}
    """
    found = {}
    for reference in references:
        module, _, name = reference.partition(":")
        if not module or not name:
            raise SourceError(f"--custom-objects '{reference}': expected module:Name, e.g. mypkg.layers:Attention")
        try:
            imported = importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - importing user code raises anything
            raise SourceError(f"--custom-objects '{reference}': cannot import module '{module}' "
                              f"({one_line(exc)})") from None
        if not hasattr(imported, name):
            raise SourceError(f"--custom-objects '{reference}': module '{module}' has no attribute '{name}'")
        found[name] = getattr(imported, name)
    return found


def _known_to_keras(layer: dict[str, Any]) -> bool:
    import keras

    cls = layer.get("class_name", "")
    if cls in BUILT_IN or cls in keras2.CUDNN or hasattr(keras.layers, cls) or (layer.get("module") or "").startswith("keras"):
        return True
    registered = layer.get("registered_name") or cls
    return keras.saving.get_registered_object(registered) is not None


def check_found(label: str, model_config: dict[str, Any], custom: dict[str, Any]) -> None:
    """Raise, naming the file and the layer, for a layer class that neither Keras nor `custom` has."""
    for entry in keras_config.layer_configs(model_config):
        for layer in keras_config.walk(entry):
            cls = layer.get("class_name", "")
            if cls == "Merge" and cls not in custom:
                raise UnsupportedModelError(
                    f"{label}: layer '{keras_config.layer_name(layer)}' is a Keras 1 Merge layer, which Keras 3 does "
                    "not have; rebuild the model with the merge layers (Concatenate, Add, Multiply, ...)"
                )
            if cls not in custom and not _known_to_keras(layer):
                raise UnsupportedModelError(
                    f"{label}: layer '{keras_config.layer_name(layer)}' is of class '{cls}', which Keras cannot "
                    f"find; supply it with --custom-objects module:{cls}"
                )


def by_name(custom: dict[str, Any]) -> dict[str, Any]:
    """The supplied classes keyed by their plain and their registered names. Configs Keras 3 wrote
    name a class by its registered name (`package>Name`) too, which Keras looks up first: keyed
    so, the supplied class wins over any other class registered under that name in the process."""
    import keras

    return {**{keras.saving.get_registered_name(obj): obj for obj in custom.values()}, **custom}


def scope(custom: dict[str, Any]) -> Any:
    """A scope in which Keras deserialises the custom classes by name."""
    import keras

    return keras.saving.custom_object_scope(by_name(custom))
