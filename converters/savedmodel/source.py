"""Source plugin for TF2 SavedModel directories whose recurrence is a functional While loop, as
tf.keras 2.3 to 2.15 (`model.save(dir)`), `tf.saved_model.save` of a `tf.Module`, and rnnexport's
own SavedModel target write them.

Two routes, tried in order:
- the tf.keras model config in the Keras metadata: the model is rebuilt by the Keras source's
  Keras 2 path (as for `.h5` files) with the weights of the SavedModel's layers;
- otherwise the serving function's While loops are lowered to TF1 control flow and the cells in
  their bodies recognised by the TF1 matchers (`loops`).
Either way the reference is the SavedModel's own serving signature. A SavedModel with no loop
and no Keras config (a signature traced at one length) is left to the unrolled-graph source.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport_converters.keras import config as keras_config
from rnnexport_converters.keras import custom as keras_custom
from rnnexport_converters.keras import legacy as keras_legacy
from rnnexport_converters.keras.source import OpenedKeras
from rnnexport_converters.savedmodel import loops
from rnnexport_converters.savedmodel.contents import METADATA_FILE, SavedModelContents, has_loop
from rnnexport_converters.savedmodel.reference import SignatureReference, fixed_time, load_signature, probe_inputs
from rnnexport_converters.tf1.frozen import UnrolledGraphSource
from rnnexport.device import Device
from rnnexport.errors import SourceError, UnsupportedModelError
from rnnexport.options import SourceOptions
from rnnexport.plugins import OpenedSource, Source
from rnnexport.tf import tensorflow


class Tf2SavedModelSource(Source):
    name = "tf2-savedmodel"
    description = "TF2 SavedModel directories with While loops or Keras metadata (tf.keras 2.x model.save, tf.Module)"

    def sniff(self, path: Path) -> bool:
        directory = path.parent if path.name == "saved_model.pb" else path
        if not (directory / "saved_model.pb").is_file():
            return False
        return (directory / METADATA_FILE).is_file() or has_loop(directory)

    def open(self, source: Path | Any, options: SourceOptions) -> OpenedSource:
        if not isinstance(source, Path):
            raise SourceError("the tf2-savedmodel source reads directories, not objects")
        path = source.parent if source.name == "saved_model.pb" else source
        tensorflow()
        contents = SavedModelContents(path)
        contents.check_safe(options.unsafe)
        config, root_class = contents.keras_model_config()
        if config is not None:
            return _open_keras(source, contents, config, options)
        if not has_loop(path):
            # A signature traced at one length: its steps are unrolled in the graph.
            return UnrolledGraphSource().open(source, options)
        return loops.open_loops(source, contents, root_class, options)


def _open_keras(label: Path, contents: SavedModelContents, config: dict[str, Any],
                options: SourceOptions) -> OpenedSource:
    """Route one: the tf.keras config rebuilt as the Keras 2 `.h5` path does, weights from the
    SavedModel's layer objects."""
    custom = keras_custom.resolve(options.custom_objects)
    try:
        keras_config.check_loadable(config, options.unsafe, custom)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{label}: {exc}") from None
    name = contents.signature_name()
    loaded, signature = load_signature(contents.path, name)
    weights = _LayerWeights(contents.path, loaded)
    model, notes = keras_legacy.build_keras2_model(contents.path, config, custom, weights.load)
    fmt = f"TF2 SavedModel (tf.keras {contents.tensorflow_version}, Keras config in the metadata)"
    return OpenedKerasSavedModel(str(label), model, fmt, notes, options, custom, contents.path, name, signature)


class _LayerWeights:
    """Loads each rebuilt layer's weights from the SavedModel's object of the same position:
    tf.keras saves the k-th layer that has weights as `layer_with_weights-k`, its variables in
    the order of `layer.weights`, which is the order Keras 3 keeps too."""

    def __init__(self, path: Path, loaded: Any) -> None:
        self.path = path
        self.loaded = loaded

    def load(self, model: Any, original_names: Any) -> None:
        index = 0
        for layer in model.layers:
            expected = layer.get_weights()
            if not expected:
                continue
            saved = getattr(self.loaded, f"layer_with_weights-{index}", None)
            index += 1
            if saved is None or not hasattr(saved, "variables"):
                raise SourceError(f"{self.path}: the SavedModel has no weights for layer '{layer.name}' "
                                  f"(no object layer_with_weights-{index - 1})")
            arrays = [np.asarray(v.numpy()) for v in saved.variables]
            shapes = [a.shape for a in arrays]
            if shapes != [w.shape for w in expected]:
                raise UnsupportedModelError(
                    f"{self.path}: layer '{layer.name}' is saved with weights of shapes {shapes}, Keras 3 expects "
                    f"{[w.shape for w in expected]}")
            layer.set_weights(arrays)


def _pairs(ours: list[str], theirs: list[str], what: str, path: Path) -> list[tuple[str, str]]:
    """The export's names paired with the signature's: by name, or the only one with the only one."""
    if set(ours) == set(theirs):
        return [(name, name) for name in ours]
    if len(ours) == len(theirs) == 1:
        return [(ours[0], theirs[0])]
    raise UnsupportedModelError(f"{path}: the model's {what}s ({', '.join(ours)}) are not the signature's "
                                f"({', '.join(theirs)}); rnnexport cannot tell which is which")


class OpenedKerasSavedModel(OpenedKeras):
    """A tf.keras model rebuilt from a SavedModel's metadata; its reference is the signature."""

    def __init__(self, label: str, model: Any, fmt: str, notes: list[str], options: SourceOptions,
                 custom: dict[str, Any], path: Path, signature_name: str, signature: Any) -> None:
        super().__init__(label, model, fmt, notes, options, custom)
        self.path = path
        self.signature_name = signature_name
        self.signature_fixed = fixed_time(signature)
        theirs_in = sorted(signature.structured_input_signature[1])
        theirs_out = sorted(signature.structured_outputs)
        self.input_pairs = _pairs([t.name for t in self.info.inputs], theirs_in, "input", path)
        self.output_pairs = _pairs([t.name for t in self.info.outputs], theirs_out, "output", path)
        # A causal model returning every step is served shorter sequences padded to the traced length.
        self.pads = self.info.causal and all(t.time_axis == 1 for t in self.info.outputs)
        notes = self.info.notes
        if self.signature_fixed is not None:
            notes += (f"the SavedModel's signature '{signature_name}' is traced for {self.signature_fixed} steps: it "
                      "is the reference at that length; at the others, the signature frozen and lowered with its "
                      "time axis freed, once it reproduces the signature at that length (else "
                      + ("shorter lengths padded to it)" if self.pads else "that length only)"),)
        self.info = replace(self.info, kind=loops.KIND, notes=notes)

    def reference(self, device: Device) -> SignatureReference:
        probe = None if self.signature_fixed is None else probe_inputs(self.info.inputs, self.signature_fixed)
        return SignatureReference(self.path, self.signature_name, device, self.input_pairs, self.output_pairs,
                                  self.signature_fixed, self.pads, probe, self.info.min_length)
