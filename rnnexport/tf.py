"""TensorFlow is imported here, lazily, so that the command line starts instantly."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any


def tensorflow() -> Any:
    """Import TensorFlow with its Python-side log noise turned down (unless already set up)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="keras")
        warnings.filterwarnings("ignore", module="tensorflow")
    return tf


def versions() -> dict[str, str]:
    """Versions of what the numbers depend on, for reports."""
    import platform

    import numpy as np

    found = {"python": platform.python_version(), "numpy": np.__version__}
    tf = tensorflow()
    found["tensorflow"] = tf.__version__
    import keras

    found["keras"] = keras.__version__
    return found
