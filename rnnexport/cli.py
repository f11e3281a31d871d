"""The `rnnexport` command. Heavy imports happen inside the commands, so `--help` is instant."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rnnexport.version import __version__
from rnnexport.cli_options import (
    fleet_options,
    fleet_values,
    given_settings,
    is_given,
    source_options,
    source_values,
    target_option_flags,
    target_values,
    validation_options,
)
from rnnexport import cli_checks
from rnnexport.config import Config, ModelEntry
from rnnexport.console import ConsoleProgress, native_stderr_silenced
from rnnexport.errors import Interrupted, UserError, one_line

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class BadInput(click.ClickException):
    exit_code = EXIT_BAD_INPUT


def _terminated(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _interrupted(exc: KeyboardInterrupt, command: str) -> int:
    """Say what an interrupted run left complete; the exit code a shell gives a signal's death."""
    signum = getattr(exc, "signum", signal.SIGINT)
    completed = [str(path) for path in getattr(exc, "completed", ())]
    done = ""
    if command == "convert":
        done = (f"complete: {', '.join(completed)}; nothing else was left under an export's name; " if completed
                else "no export was complete, none was left under its name; ")
    click.echo(f"Interrupted by {signal.Signals(signum).name}: {done}no report was written", err=True)
    # Graphs cut short mid-trace make TensorFlow log unused TensorArrays at exit: noise after the verdict.
    logging.getLogger("tensorflow").disabled = True
    return 128 + signum


def _run(fn: Callable[..., int]) -> Callable[..., None]:
    """Turn the library's typed errors into one-line messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        debug = click.get_current_context().find_root().params.get("debug", False)
        # SIGTERM unwinds like Ctrl-C: temporary directories removed, the output directory unlocked.
        # (Only the main thread may set handlers; an embedding program's other threads keep theirs.)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
        try:
            with native_stderr_silenced(not debug):
                try:
                    code = fn(*args, **kwargs)
                except UserError as exc:
                    if debug:
                        traceback.print_exc()
                        if getattr(exc, "log", ""):
                            click.echo(exc.log, err=True)
                    raise BadInput(exc.cli_message) from None
                except KeyboardInterrupt as exc:
                    if debug:
                        traceback.print_exc()
                    code = _interrupted(exc, fn.__name__)
                except (click.ClickException, click.exceptions.Exit):
                    raise
                except Exception as exc:  # noqa: BLE001 - a bug in rnnexport: one line unless --debug
                    if debug:
                        traceback.print_exc()
                    click.echo(
                        f"Error: internal error: {one_line(exc)}"
                        " (run with --debug for the traceback, and please report it)",
                        err=True,
                    )
                    code = EXIT_INTERNAL
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
        sys.exit(code)

    return wrapper


def _config(params: dict[str, Any]) -> Config:
    from rnnexport import config

    return config.load(params["config"], Path.cwd()) or Config(path=Path("pyproject.toml"))


REPORTS = {"json": "report", "junit": "junit", "markdown": "markdown", "html": "html"}


def _report_paths(params: dict[str, Any], config: Config) -> dict[str, Path]:
    """Where each report goes, checked writable before any conversion or sweep runs."""
    from rnnexport.plan import check_writable
    from rnnexport.settings import report_paths

    paths = report_paths({kind: params[option] for kind, option in REPORTS.items()}, config)
    for kind, path in paths.items():
        check_writable(Path(path), f"{kind} report")
    return paths


def _emit(report: Any, params: dict[str, Any], config: Config, paths: dict[str, Path]) -> int:
    writers = {"json": report.write_json, "junit": report.write_junit, "markdown": report.write_markdown,
               "html": report.write_html}
    for kind, path in paths.items():
        try:
            writers[kind](path)
        except OSError as exc:
            raise UserError(f"{path}: cannot write the {kind} report ({exc.strerror or one_line(exc)})") from None
    if params["as_json"]:
        click.echo(report.to_json())
    elif not params["quiet"]:
        click.echo(report.table(verbose=params["verbose"]))
    return 0 if report.passed else EXIT_FAILED


def _fleet(command: str, models: list[ModelEntry], given: Any, config: Config, params: dict[str, Any],
           paths: dict[str, Path], fleet: Any, **more: Any) -> int:
    """Every model in a worker of its own (--jobs, --executor): a line per model as it finishes."""
    from rnnexport.fleet import run_fleet

    shown = not (params["quiet"] or params["as_json"])

    def done(outcome: Any, count: int, total: int) -> None:
        if not shown:
            return
        if outcome.reused:
            how = "up to date, not re-run"
        elif outcome.crashed:
            how = f"FAIL: {outcome.error}"
        else:
            verdict = "PASS" if outcome.passed else "FAIL" + (f": {outcome.error}" if outcome.error else "")
            how = f"{verdict} ({outcome.seconds:.1f} s, worker peak {outcome.peak_rss / 2**20:.0f} MiB)"
        click.echo(f"[{count}/{total}] {outcome.label}: {how}", err=True)

    result = run_fleet(command, models, given, config, fleet, on_done=done, **more)
    if shown:
        for artifact in (a for o in result.outcomes if not o.reused for a in o.artifacts):
            click.echo(f"wrote {artifact.path}")
    if command == "convert" and not more["validate"] and all(not o.error for o in result.outcomes):
        return 0
    return _emit(result.report, params, config, paths)


def _progress(params: dict[str, Any]) -> ConsoleProgress:
    return ConsoleProgress(enabled=not (params.get("quiet") or params.get("as_json")))


def _timings(progress: ConsoleProgress, report: Any, params: dict[str, Any]) -> None:
    """With -v, where the run's time went, phase by phase."""
    if params["verbose"] and not (params["quiet"] or params["as_json"]):
        from rnnexport.console import render_timings

        exports = [(f"{e.target} {Path(e.path).name}", e.seconds) for e in (report.exports if report else ())]
        click.echo(render_timings(progress.timings(), exports))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnexport")
@click.option("--debug", is_flag=True, help="Show tracebacks and TensorFlow's own logs.")
def cli(debug: bool) -> None:
    """Export recurrent TensorFlow models for any sequence length, and prove parity.

    \b
    Examples:
      rnnexport inspect model.h5
      rnnexport convert model.h5 --to savedmodel --out exports/
      rnnexport validate model.h5 exports/model.savedmodel --report parity.json
      rnnexport check exports/model.onnx --golden golden.npz

    Exit codes: 0 every parity check passed, 1 a parity check failed, 2 bad usage or input,
    3 an internal error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug else "3")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_run
def plugins(as_json: bool) -> int:
    """List installed source and target plugins, including broken ones."""
    from rnnexport import plugins as registry

    entries = [*registry.source_entries(), *registry.target_entries()]
    if as_json:
        rows = [{"group": e.group, "name": e.name, "value": e.value, "distribution": e.distribution,
                 "description": getattr(e.plugin, "description", None), "error": e.error} for e in entries]
        click.echo(json.dumps(rows, indent=2))
        return 0
    from rnnexport.listing import plugins_text

    click.echo(plugins_text(entries, (("source", registry.SOURCE_GROUP), ("target", registry.TARGET_GROUP))))
    return 0


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@source_options
@_run
def inspect(source: Path, as_json: bool, **params: Any) -> int:
    """Show what SOURCE holds: layers, units, inputs, fixed length, what can be exported.

    On an export (SavedModel, ONNX, TFLite) rnnexport wrote: its entry points with their dynamic
    dimensions, recurrent ops, batch policy, streaming states and the parity stored in it.

    \b
    Examples:
      rnnexport inspect samples/gru_fixed.keras
      rnnexport inspect checkpoints/ --step 2000 --outputs logits:0
      rnnexport inspect exports/lstm_variable.onnx
    """
    import rnnexport
    from rnnexport.listing import export_text, source_text

    exported = rnnexport.inspect_export(source)
    if exported is not None:
        click.echo(json.dumps(exported.to_dict(), indent=2) if as_json else export_text(exported))
        return 0
    info = rnnexport.inspect(source, source_values(params))
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
        return 0
    from rnnexport.plugins import targets

    click.echo(source_text(info, [t.name for t in targets()]))
    return 0


@cli.command()
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@click.option("--to", "targets", multiple=True, default=("savedmodel",), show_default=True, metavar="TARGET",
              help="Target format (repeatable), or 'all'. See `rnnexport plugins`.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Directory for the exports, written as <source stem><target suffix> [config: out]; or, with one "
                   "source and one target, the export's own path (exports/m.onnx).")
@click.option("--force", is_flag=True, help="Overwrite existing exports.")
@click.option("--validate/--no-validate", default=True, show_default=True, help="Run the parity sweep.")
@target_option_flags
@click.option("--streaming", is_flag=True,
              help="Also export initial_state(batch) and step(x, *state) entry points that run a chunk at a "
                   "time, and check them chunk by chunk against the whole sequence.")
@validation_options
@fleet_options
@_run
def convert(sources: tuple[Path, ...], targets: tuple[str, ...], out: Path | None, force: bool, validate: bool,
            streaming: bool, **params: Any) -> int:
    """Export SOURCES to each target under --out, then prove each file matches its source.

    Without SOURCES, the models, targets and out of the config file are converted.

    \b
    Examples:
      rnnexport convert model.h5 --to savedmodel --out exports/
      rnnexport convert samples/*.keras --to all --out build/ --report parity.json
      rnnexport convert tf1/model.ckpt --outputs softmax:0 --to onnx --out build/
      rnnexport convert model.keras --streaming --to all --out build/ --chunks 1,5,17
      rnnexport convert --config gate.toml
      rnnexport convert --config fleet.toml --jobs 2 --report parity.json
      rnnexport convert --config fleet.toml --executor ray --ray-address 10.0.0.5:6379
    """
    from rnnexport.options import ExportOptions
    from rnnexport.runs import convert_models, one_golden

    config = _config(params)
    models = [ModelEntry(source=s) for s in sources] or list(config.models)
    if not models:
        raise click.UsageError("give SOURCES, or a config file that lists [[tool.rnnexport.models]]")
    if out is None and config.out is None:
        raise click.UsageError("give --out, or `out` in the config file")
    given = given_settings(params, targets=targets if is_given("targets") else None, out=out, force_golden=force)
    one_golden(given, models)
    export = ExportOptions(target_options=target_values(params, targets if is_given("targets") else None),
                           streaming=streaming)
    paths = _report_paths(params, config)
    fleet = fleet_values(params)
    if fleet is not None:
        return _fleet("convert", models, given, config, params, paths, fleet, export=export, force=force,
                      validate=validate)
    with _progress(params) as progress:
        converted = convert_models(models, given, config, export, force, validate, progress=progress)
    if not (params["quiet"] or params["as_json"]):
        for artifact in converted.artifacts:
            click.echo(f"wrote {artifact.path}")
    code = 0 if converted.report is None else _emit(converted.report, params, config, paths)
    _timings(progress, converted.report, params)
    return code


@cli.command()
@click.argument("paths", nargs=-1, metavar="[SOURCE EXPORT...]", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing --save-golden file.")
@validation_options
@fleet_options
@_run
def validate(paths: tuple[Path, ...], force: bool, **params: Any) -> int:
    """Check existing exports of SOURCE over the parity sweep; exit 1 on any drift.

    Without arguments, every model of the config file is checked against its exports. An
    export or source that cannot be read is a failing check, with the reason, not a crash.

    \b
    Examples:
      rnnexport validate model.h5 exports/model.savedmodel --lengths 1,30,500
      rnnexport validate model.h5 exports/model.onnx --report parity.json --junit parity.xml
      rnnexport validate --config gate.toml --markdown summary.md --html parity.html
      rnnexport validate --config fleet.toml --jobs 4 --junit parity.xml
      rnnexport validate model.h5 exports/model.onnx --save-golden golden.npz
    """
    from rnnexport.runs import one_golden, validate_models

    config = _config(params)
    if len(paths) == 1:
        raise click.UsageError("give the SOURCE and at least one EXPORT of it")
    models = [ModelEntry(source=paths[0], exports=paths[1:])] if paths else list(config.models)
    if not models:
        raise click.UsageError("give SOURCE and EXPORTS, or a config file that lists [[tool.rnnexport.models]]")
    paths = _report_paths(params, config)
    given = one_golden(given_settings(params, force_golden=force), models)
    fleet = fleet_values(params)
    if fleet is not None:
        return _fleet("validate", models, given, config, params, paths, fleet)
    with _progress(params) as progress:
        report = validate_models(models, given, config, progress=progress)
    code = _emit(report, params, config, paths)
    _timings(progress, report, params)
    return code


def sourceless(params: dict[str, Any], run: Callable[[ConsoleProgress], Any]) -> int:
    """`check` and `compare` (rnnexport.cli_checks): no config file, the reports where the options say."""
    config = Config(path=Path("pyproject.toml"))
    paths = _report_paths(params, config)
    with _progress(params) as progress:
        report = run(progress)
    code = _emit(report, params, config, paths)
    _timings(progress, report, params)
    return code


cli.add_command(cli_checks.check)
cli.add_command(cli_checks.compare)


def main() -> None:
    """The command, ending as click ends it (`SystemExit`), for a program that runs it."""
    cli(prog_name="rnnexport")
