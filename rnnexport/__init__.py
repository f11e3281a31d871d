"""rnnexport: recurrent TensorFlow models to SavedModel, TFLite and ONNX, for any length, proven.

    >>> import rnnexport
    >>> info = rnnexport.inspect("model.h5")
    >>> result = rnnexport.convert("model.h5", "exports", ConvertOptions(targets=("savedmodel",)))
    >>> bool(result.report)
    True

The names below are imported on first use, so that `import rnnexport.cli` (and `rnnexport
--help`) does not pay for numpy and the API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rnnexport.version import __version__

if TYPE_CHECKING:
    from rnnexport.api import ConvertResult, convert, inspect, inspect_export, validate
    from rnnexport.checks import check_golden, compare
    from rnnexport.options import ConvertOptions, ExportOptions, SourceOptions, SweepOptions, ValidateOptions
    from rnnexport.tolerance import Tolerance, ToleranceOverrides

_WHERE = {
    "ConvertResult": "rnnexport.api",
    "check_golden": "rnnexport.checks",
    "compare": "rnnexport.checks",
    "convert": "rnnexport.api",
    "inspect": "rnnexport.api",
    "inspect_export": "rnnexport.api",
    "validate": "rnnexport.api",
    "ConvertOptions": "rnnexport.options",
    "ExportOptions": "rnnexport.options",
    "SourceOptions": "rnnexport.options",
    "SweepOptions": "rnnexport.options",
    "ValidateOptions": "rnnexport.options",
    "Tolerance": "rnnexport.tolerance",
    "ToleranceOverrides": "rnnexport.tolerance",
}

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
    "check_golden",
    "compare",
    "convert",
    "inspect",
    "inspect_export",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rnnexport' has no attribute '{name}'")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
