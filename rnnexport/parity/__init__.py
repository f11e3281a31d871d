"""The parity engine: same inputs to the reference and to each export, every output compared.

It knows nothing of formats. `run` gives what each side computed, `compare_run` turns that into
results, `check` does both and closes what was opened."""

from rnnexport.parity.check import check, compare_run
from rnnexport.parity.compare import REL_FLOOR, compare_layers, compare_output
from rnnexport.parity.drift import locate
from rnnexport.parity.results import CaseResult, Drift, Export, ExportResult, LayerDrift, OutputComparison
from rnnexport.parity.run import ExportOutputs, ExportUnderTest, ReferenceOutputs, RunResults, closers, run, stream

__all__ = [
    "REL_FLOOR", "CaseResult", "Drift", "Export", "ExportOutputs", "ExportResult", "ExportUnderTest", "LayerDrift",
    "OutputComparison", "ReferenceOutputs", "RunResults", "check", "closers", "compare_layers", "compare_output",
    "compare_run", "locate", "run", "stream",
]
