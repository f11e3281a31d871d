"""Where a failing export starts to drift: its first failing case and output, and, when the
source gives its layers' outputs and the export shows its insides, the first layer that drifts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rnnexport.parity.compare import compare_layers, layers_by_snr
from rnnexport.parity.results import CaseResult, Drift, LayerDrift
from rnnexport.parity.run import RUN_FAILED, ExportUnderTest, failed_run
from rnnexport.runner import LayerOutputs


def _rows(inputs: Mapping[str, np.ndarray], batch: int | None) -> dict[str, np.ndarray]:
    if batch is None:
        return dict(inputs)
    return {name: np.resize(value, (batch, *value.shape[1:])) for name, value in inputs.items()}


def locate(results: Sequence[CaseResult], export: ExportUnderTest, layer_outputs: LayerOutputs | None
           ) -> Drift | None:
    """Where a failing export drifts first, from its first case with a failing comparison."""
    failing = next((c for c in results if not c.skipped and not c.error and not c), None)
    if failing is None:
        return None
    bad = [o for o in failing.outputs if not o]
    output = min(bad, key=lambda o: (o.first_bad_step is None, o.first_bad_step or 0))
    note, layers = "", ()
    if failing.case.chunk is not None:
        note = "the first failing case is a streaming one; layers are compared on full sequences"
    elif export.probe is None:
        note = f"{export.target} exports do not show their intermediate tensors"
    elif layer_outputs is None:
        note = "the source does not give its layers' outputs"
    else:
        inputs = _rows(failing.case.inputs, export.probe.batch)
        try:
            layers = compare_layers(layer_outputs(inputs), export.probe.tensors(inputs), export.tolerance)
        except Exception as exc:  # noqa: BLE001 - locating is a diagnosis; its failure must not hide the verdict
            # Capped as a run failure is, then told as the comparison's own.
            note = f"comparing layers failed: {failed_run(exc).removeprefix(RUN_FAILED)}"
    return Drift(failing.case.name, output.name, output.first_bad_step, layers, note)


def rank_by_snr(results: Sequence[CaseResult], export: ExportUnderTest, layer_outputs: LayerOutputs | None
                ) -> tuple[LayerDrift, ...]:
    """A quantized export's layers, lowest SNR first, on its longest full-sequence case (where the
    error has accumulated most); empty where the export or the source cannot show its layers."""
    ran = [c for c in results if not c.skipped and not c.error and c.case.chunk is None and c.case.kind != "again"]
    if not ran or export.probe is None or layer_outputs is None:
        return ()
    case = max(ran, key=lambda c: (c.case.length or 0, c.case.batch))
    inputs = _rows(case.case.inputs, export.probe.batch)
    try:
        return layers_by_snr(layer_outputs(inputs), export.probe.tensors(inputs))
    except Exception:  # noqa: BLE001 - ranking is a diagnosis; its failure must not hide the verdict
        return ()
