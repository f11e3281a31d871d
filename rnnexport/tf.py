"""TensorFlow is imported here, lazily, so that the command line starts instantly."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any


# Whether this process is the command line's alone (`own_process`), so that process-wide settings
# may serve it.
_owned = False


def own_process() -> None:
    """Say that this process runs rnnexport and nothing else (the command line does)."""
    global _owned
    _owned = True


def _import_collector_paused() -> None:
    """Import TensorFlow with Python's cyclic garbage collector paused, then freeze what the import
    made. The import makes about 500,000 objects that live as long as the process, and the
    collector scanned them over and over: 0.8-1.3 s of a 4-5 s import, and 0.35 s of the full
    collections of a conversion after it (`benchmarks/convert_vs_hand.py`). Freezing is
    process-wide, so only a process rnnexport owns does it."""
    import gc

    # The cycles the import leaves as garbage are frozen too, never collected: a bounded few MiB
    # (the peak memory did not change), where collecting them would cost the time saved.
    enabled = gc.isenabled()
    gc.disable()
    try:
        import tensorflow  # noqa: F401
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def tensorflow() -> Any:
    """Import TensorFlow with its Python-side log noise turned down (unless already set up)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _owned and "tensorflow" not in sys.modules:
        _import_collector_paused()
    import tensorflow as tf

    if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="keras")
        warnings.filterwarnings("ignore", module="tensorflow")
    return tf


def function(python: Any = None, **options: Any) -> Any:
    """`tf.function(python, **options)` without AutoGraph, also as a decorator. rnnexport's traced
    code writes its loops and branches as TensorFlow ops, and a Keras model runs unconverted either
    way (AutoGraph leaves Keras alone; Keras traces `predict` and its exports so too); converting
    only cost time, 0.03-0.08 s per function parsed, transformed and compiled."""
    tf = tensorflow()
    if python is None:
        return lambda decorated: tf.function(decorated, autograph=False, **options)
    return tf.function(python, autograph=False, **options)


def threads() -> int:
    """Threads a runtime may use (onnxruntime, LiteRT): `RNNEXPORT_THREADS`, which fleet workers
    set so that N of them share the cores; 0 where unset (the runtime's own default)."""
    value = os.environ.get("RNNEXPORT_THREADS", "")
    return int(value) if value.isdigit() else 0


# Distributions whose versions the numbers depend on, as pip names them.
DEPENDENCIES = ("rnnexport", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu",
                "ai-edge-litert", "numpy")


def versions() -> dict[str, str]:
    """Versions of what the numbers depend on, for reports; what is not installed is left out."""
    import platform
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in DEPENDENCIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def environment(with_tensorflow: bool = True) -> dict[str, object]:
    """What else the numbers depend on: machine, TF32, oneDNN, determinism, runtimes' back ends.
    Without `with_tensorflow` (a check that ran no TensorFlow), TensorFlow's facts are None."""
    import platform

    found: dict[str, object] = {
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "tf32": None,
        "onednn": None,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "op_determinism": None,
        "gpus": [],
    }
    if with_tensorflow:
        tf = tensorflow()
        from tensorflow.python.framework import config as tf_config
        from tensorflow.python.util import _pywrap_util_port

        found.update({
            "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
            "onednn": bool(_pywrap_util_port.IsMklEnabled()),
            "op_determinism": bool(tf_config.is_op_determinism_enabled()),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        })
    try:
        import onnxruntime

        found["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except ImportError:
        found["onnxruntime_providers"] = []
    return found
