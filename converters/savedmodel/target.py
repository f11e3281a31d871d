"""Target plugin for TensorFlow SavedModel directories with a variable-length `serving_default`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnexport.device import Device
from rnnexport.exported import Interface
from rnnexport.version import __version__
from rnnexport_converters.savedmodel import exported
from rnnexport.model import RecurrentModel, TensorInfo
from rnnexport.target_options import NoOptions
from rnnexport.plugins import Target
from rnnexport.runner import Probe, seen_tensor
from rnnexport.tf import tensorflow

if TYPE_CHECKING:
    from rnnexport.exported import ExportContents
    from rnnexport_converters.savedmodel.runtime import SavedModelRunner, SavedModelStreamRunner


class SavedModelTarget(Target):
    name = "savedmodel"
    description = "TensorFlow SavedModel directory, serving_default takes [batch, time, ...]"
    suffix = ".savedmodel"
    streams = True

    def export(self, model: RecurrentModel, path: Path, options: NoOptions, streaming: bool) -> None:
        from rnnexport_converters.savedmodel.runtime import INITIAL_STATE, SIGNATURE, STEP

        tf = tensorflow()
        signatures = {SIGNATURE: model.sequence.get_concrete_function()}
        if streaming:
            entry_points = model.streaming()
            signatures[STEP] = entry_points.step.get_concrete_function()
            signatures[INITIAL_STATE] = entry_points.initial_state.get_concrete_function()
        tf.saved_model.save(model.module, str(path), signatures=signatures)
        metadata = {"version": __version__, "source": model.info.path, "source_kind": model.info.kind,
                    "interface": Interface.of(model.info).to_dict()}
        if streaming:
            metadata.update(states=[s.name for s in entry_points.states],
                            state_holds={s.name: s.holds for s in entry_points.states})
        exported.write_metadata(path, metadata)

    def detect(self, path: Path) -> bool:
        return path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file())

    def interface(self, path: Path, device: Device) -> tuple[list[TensorInfo], list[TensorInfo]]:
        from rnnexport_converters.savedmodel.runtime import SavedModelRunner

        function = SavedModelRunner(path, device)._fn
        specs = function.structured_input_signature[1]
        return ([seen_tensor(name, spec.dtype.name, spec.shape.as_list()) for name, spec in specs.items()],
                [seen_tensor(name, spec.dtype.name, spec.shape.as_list(), output=True)
                 for name, spec in function.structured_outputs.items()])

    def stored_interface(self, path: Path) -> Interface | None:
        metadata = exported.read_metadata(path) or {}
        return Interface.from_dict(metadata["interface"]) if "interface" in metadata else None

    def runner(self, path: Path, device: Device) -> SavedModelRunner:
        from rnnexport_converters.savedmodel.runtime import SavedModelRunner

        return SavedModelRunner(path, device)

    def stream_runner(self, path: Path, device: Device) -> SavedModelStreamRunner | None:
        from rnnexport_converters.savedmodel.runtime import STEP, SavedModelStreamRunner, has_signature, load

        if not has_signature(path, STEP):
            return None
        return SavedModelStreamRunner(load(path), device)

    def probe(self, path: Path, device: Device) -> Probe:
        from rnnexport_converters.savedmodel.runtime import SavedModelProbe

        return SavedModelProbe(path, device)

    def contents(self, path: Path) -> ExportContents | None:
        return exported.contents(path)

    def record_parity(self, path: Path, summary: Mapping[str, Any]) -> None:
        metadata = exported.read_metadata(path)
        if metadata is not None:
            exported.write_metadata(path, {**metadata, "parity": dict(summary)})
