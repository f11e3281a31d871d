"""Route two of the TF2 SavedModel source: a serving function with no Keras config behind it (a
`tf.Module`, a subclassed `keras.Model`, rnnexport's own SavedModel export). Its While loops are
lowered to TF1 loops (`lowering`) and read by the TF1 recognition, the same that reads frozen
`dynamic_rnn` graphs; the reference is that lowered graph, the signature's own computation with
its weights frozen. What the recognition cannot read, `inspect` shows as the model's problem
beside the signature, rather than an op-level error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnexport_converters.savedmodel.contents import SavedModelContents
from rnnexport_converters.savedmodel.lowering import lowered
from rnnexport_converters.savedmodel.reference import fixed_time, load_signature
from rnnexport_converters.tf1.frozen import FrozenGraph
from rnnexport_converters.tf1.opened import OpenedTf1
from rnnexport.device import Device
from rnnexport.errors import UnsupportedModelError, UserError, one_line
from rnnexport.model import RecurrentModel, SourceInfo, TensorInfo
from rnnexport.options import SourceOptions
from rnnexport.plugins import OpenedSource
from rnnexport.runner import ReferenceRunner

KIND = "tf2-savedmodel"


class LoweredGraph(FrozenGraph):
    kind = KIND


def _describe(contents: SavedModelContents, root_class: str) -> str:
    written = f"TensorFlow {contents.tensorflow_version}"
    if root_class:
        return f"TF2 SavedModel of a subclassed tf.keras {root_class} ({written}, While loops)"
    return f"TF2 SavedModel of tf.functions ({written}, While loops)"


def open_loops(label: Path, contents: SavedModelContents, root_class: str, options: SourceOptions) -> OpenedSource:
    name = contents.signature_name()
    # `loaded` stays alive while the signature is frozen: the signature only references its variables.
    loaded, signature = load_signature(contents.path, name)
    title = _describe(contents, root_class)
    note = f"signature '{name}' frozen, its While loops lowered to TF1 loops; the reference runs that graph"
    try:
        graph_def, outputs = lowered(signature)
        return OpenedTf1(label, LoweredGraph(contents.path, graph_def, title, note, outputs), options)
    except UserError as exc:
        problem = str(exc).removeprefix(f"{label}: ").removeprefix(f"{contents.path}: ")
    except Exception as exc:  # noqa: BLE001 - freezing and lowering raise many types on graphs they cannot take
        problem = f"its signature '{name}' cannot be frozen and lowered to TF1 loops: {one_line(exc)}"
    return OpenedUnrecognised(label, signature, title, problem)


def _tensor(name: str, spec: Any) -> TensorInfo:
    shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else ()
    return TensorInfo(name, spec.dtype.name, shape, 1 if len(shape) >= 3 else None)


class OpenedUnrecognised(OpenedSource):
    """A SavedModel read but not understood: `inspect` shows its signature and what blocks it."""

    def __init__(self, label: Path, signature: Any, fmt: str, problem: str) -> None:
        self.problem = problem
        inputs = tuple(_tensor(n, s) for n, s in sorted(signature.structured_input_signature[1].items()))
        outputs = tuple(_tensor(n, s) for n, s in sorted(signature.structured_outputs.items()))
        notes = ("rnnexport found the signature but could not recognise the recurrence in its While loops",)
        self.info = SourceInfo(str(label), KIND, fmt, inputs, outputs, (), fixed_time(signature), False, notes,
                               (problem,))

    def _refuse(self) -> UserError:
        return UnsupportedModelError(f"{self.info.path}: {self.problem}")

    def recurrent_model(self) -> RecurrentModel:
        raise self._refuse()

    def reference(self, device: Device) -> ReferenceRunner:
        raise self._refuse()
