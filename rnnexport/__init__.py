"""rnnexport: recurrent TensorFlow models to SavedModel, TFLite and ONNX, for any length, proven.

    >>> import rnnexport
    >>> info = rnnexport.inspect("model.h5")
    >>> result = rnnexport.convert("model.h5", "exports", ConvertOptions(targets=("savedmodel",)))
    >>> bool(result.report)
    True
"""

__version__ = "0.1.0"

from rnnexport.api import ConvertResult, convert, inspect, validate  # noqa: E402
from rnnexport.options import (  # noqa: E402
    ConvertOptions,
    ExportOptions,
    SourceOptions,
    SweepOptions,
    ValidateOptions,
)
from rnnexport.tolerance import Tolerance, ToleranceOverrides  # noqa: E402

__all__ = [
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
