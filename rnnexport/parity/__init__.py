"""The parity engine: same inputs to the reference and to each export, every output compared.

It knows nothing of formats. `run` gives what each side computed, `compare_run` turns that into
results, `check` does both and closes what was opened."""

from rnnexport.parity.check import CheckOptions, check, compare_run
from rnnexport.parity.compare import REL_FLOOR, compare_layers, compare_output
from rnnexport.parity.drift import locate
from rnnexport.parity.latency import Latency, LatencyGate
from rnnexport.parity.results import CaseResult, Drift, Export, ExportResult, LayerDrift, OutputComparison, OutputStats
from rnnexport.parity.run import (
    Expected,
    ExportOutputs,
    ExportUnderTest,
    ReferenceOutputs,
    RunResults,
    closers,
    run,
    stream,
    sweep,
)

__all__ = [
    "REL_FLOOR", "CaseResult", "CheckOptions", "Drift", "Expected", "Export", "ExportOutputs", "ExportResult",
    "ExportUnderTest", "LayerDrift", "Latency", "LatencyGate", "OutputComparison", "OutputStats", "ReferenceOutputs",
    "RunResults", "check", "closers", "compare_layers", "compare_output", "compare_run", "locate", "run", "stream",
    "sweep",
]
