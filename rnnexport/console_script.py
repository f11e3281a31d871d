"""The `rnnexport` console script (and `python -m rnnexport`): the command in a process of its own."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

from rnnexport.cli import main
from rnnexport.tf import own_process


def entry_point() -> NoReturn:
    """The `rnnexport` console script and `python -m rnnexport`: a process of its own, which the
    command then ends without tearing the interpreter down (`_exit`)."""
    own_process()
    try:
        main()
    except SystemExit as exc:
        _exit(exc.code)
    _exit(0)


def _exit(code: object) -> NoReturn:
    """Exit with `code` once the exit handlers have run, without finalizing the interpreter:
    with TensorFlow imported that takes about a second (`benchmarks/convert_vs_hand.py`), and a
    finished command has nothing left to release. A thread still working gets the usual exit,
    which waits for it."""
    working = [t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.main_thread()]
    if working or not (code is None or isinstance(code, int)):
        sys.exit(code)
    atexit._run_exitfuncs()  # what the usual exit runs first: logging, Ray, multiprocessing, temporary files
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None where the process started with the descriptor closed
                stream.flush()
        except (OSError, ValueError):  # a reader that stopped reading (`| head`) or a closed stream
            pass
    os._exit(code or 0)
