"""Terminal plumbing for the command line: TensorFlow's C++ noise, and the progress display."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from typing import TextIO


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool) -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null, keeping Python's stderr.

    TensorFlow's C++ runtime logs (oneDNN, CUDA probing) before TF_CPP_MIN_LOG_LEVEL is read, so
    only redirecting the descriptor keeps them off the user's terminal.
    """
    if not enabled or not _writes_to_fd2(sys.stderr):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    python_stderr = sys.stderr
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), write_through=True)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        sys.stderr.close()
        sys.stderr = python_stderr


def native_logs_off() -> bool:
    """Whether the Python API keeps TensorFlow's native logs off the terminal: yes, unless the
    caller asked for them with TF_CPP_MIN_LOG_LEVEL=0."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0"


def _writes_to_fd2(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


class ConsoleProgress:
    """On a terminal: stage lines on stderr and a case counter that redraws in place.

    Scripts and CI logs (stderr not a terminal) get none of it, only the result and errors.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.started = time.monotonic()
        self._open_line = False

    def __call__(self, message: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        stream = sys.stderr
        elapsed = f"{time.monotonic() - self.started:5.1f}s"
        if total == 0:
            self._end_line(stream)
            stream.write(f"[{elapsed}] {message}\n")
        else:
            label = "" if done == total else f" {message}"
            stream.write(f"\r[{elapsed}]   case {done}/{total}{label}\033[K")
            self._open_line = done != total
            if done == total:
                stream.write("\n")
        stream.flush()

    def _end_line(self, stream: TextIO) -> None:
        if self._open_line:
            stream.write("\n")
            self._open_line = False
