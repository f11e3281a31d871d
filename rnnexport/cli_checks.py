"""The checks without a source on the command line: `check` (exports against a golden file) and
`compare` (one export against another). `rnnexport.cli` registers them on its group."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rnnexport.cli_options import golden_option, runtime_options, sourceless_options, sweep_options


def _run(fn: Callable[..., int]) -> Callable[..., None]:
    """The command line's error handling (`rnnexport.cli`), looked up when the command runs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from rnnexport.cli import _run as run

        run(fn)(*args, **kwargs)

    return wrapper


def sourceless(params: dict[str, Any], run: Callable[[Any], Any]) -> int:
    from rnnexport import cli

    return cli.sourceless(params, run)


@click.command()
@click.argument("exports", nargs=-1, required=True, metavar="EXPORT...", type=click.Path(path_type=Path))
@golden_option
@sourceless_options
@_run
def check(exports: tuple[Path, ...], golden: Path, **params: Any) -> int:
    """Check EXPORTs against a golden file, with only each export's runtime installed: no source,
    and no TensorFlow for ONNX and TFLite files. The golden file's sweep (streaming cases too) and
    tolerances apply; --atol/--rtol here go over them. Reports and exit codes as `validate`.

    \b
    Examples:
      rnnexport check exports/model.onnx --golden golden.npz --report parity.json
      rnnexport check exports/model.tflite --golden golden.npz --max-latency-ms 20
      rnnexport check int8/model.onnx --golden golden.npz --min-snr 25 --task classify
    """
    from rnnexport.checks import check_golden

    return sourceless(params, lambda progress: check_golden(exports, golden, runtime_options(params, False), progress))


@click.command()
@click.argument("first", metavar="A", type=click.Path(path_type=Path))
@click.argument("second", metavar="B", type=click.Path(path_type=Path))
@sweep_options
@sourceless_options
@_run
def compare(first: Path, second: Path, **params: Any) -> int:
    """Check export B against export A (any two formats of the same interface) over the sweep, with
    no source: A's outputs are the reference, B is allowed A's default tolerance on top of its own
    (each may differ from the source by its own), and latency ratios are against A. The sweep
    follows the interface rnnexport stored in A or B (token ids within the vocabulary, masking,
    lengths inputs); for files another tool wrote, their runtime signatures, and the report says so.

    \b
    Examples:
      rnnexport compare exports/model.onnx exports/model.tflite
      rnnexport compare exports/model.savedmodel exports/model.onnx --lengths 1,64,512 --html ab.html
      rnnexport compare exports/model.onnx int8/model.onnx --min-agreement 0.99
    """
    from rnnexport.checks import compare as compare_exports

    options = runtime_options(params, sweep=True)
    return sourceless(params, lambda progress: compare_exports(first, second, options, progress))
