"""rnnexport: recurrent TensorFlow models to SavedModel, TFLite and ONNX, for any length, proven.

    >>> import rnnexport
    >>> info = rnnexport.inspect("model.h5")
    >>> result = rnnexport.convert("model.h5", "exports", ConvertOptions(targets=("savedmodel",)))
    >>> bool(result.report)
    True
"""

from rnnexport.version import __version__
from rnnexport.api import ConvertResult, convert, inspect, validate
from rnnexport.options import (
    ConvertOptions,
    ExportOptions,
    SourceOptions,
    SweepOptions,
    ValidateOptions,
)
from rnnexport.tolerance import Tolerance, ToleranceOverrides

__all__ = [
    "__version__",
    "ConvertOptions",
    "ConvertResult",
    "ExportOptions",
    "SourceOptions",
    "SweepOptions",
    "Tolerance",
    "ToleranceOverrides",
    "ValidateOptions",
    "convert",
    "inspect",
    "validate",
]
