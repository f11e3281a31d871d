"""Several models in one run, as the command line and a config file ask for them: each model read
with its own settings, every destination checked before anything is written, one report.

    >>> config = rnnexport.config.load(Path("gate.toml"), Path.cwd())
    >>> result = convert_models(config.models, Given(), config)
    >>> result.passed
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rnnexport import api, plugins, settings
from rnnexport.config import Config, ModelEntry
from rnnexport.errors import Interrupted, UserError
from rnnexport.options import ConvertOptions, ExportOptions, SourceOptions
from rnnexport.parity import ExportResult
from rnnexport.plan import export_paths, plan_exports
from rnnexport.reports import ParityReport
from rnnexport.settings import Given


def _combine(report: ParityReport | None, more: ParityReport | None) -> ParityReport | None:
    if report is None or more is None:
        return more if report is None else report
    report.exports += more.exports
    return report


def one_golden(given: Given, models: Sequence[ModelEntry]) -> Given:
    """`given`, once checked that a golden file to save (`save_golden`) keeps one model's sweep."""
    if given.save_golden is not None and len(models) != 1:
        raise UserError(f"{given.save_golden}: a golden file keeps the sweep of one source; {len(models)} were given")
    return given


def convert_models(models: Sequence[ModelEntry], given: Given, config: Config,
                   export: ExportOptions = ExportOptions(), force: bool = False, validate: bool = True,
                   progress: api.Progress | None = None) -> api.ConvertResult:
    """Convert every model to the targets and `out` the command line or the config file names.

    Models read and judged with the same settings convert in one call, whatever their order;
    models read or judged with different settings (their own tolerances) in separate calls, every one of them prepared (sources read, data
    and destinations checked) before the first writes, so that nothing is written when one of
    them would fail."""
    out = given.out or config.out
    if out is None:
        raise UserError("give --out, or `out` in the config file")
    targets = settings.targets(given, config)
    groups: dict[tuple[SourceOptions, Path | None, tuple[object, ...]], list[ModelEntry]] = {}
    for model in models:
        groups.setdefault((settings.source_options(given, model), model.data, model.judging), []).append(model)
    calls = [(ConvertOptions(targets=targets, force=force, validate=validate, source=source, export=export,
                             validation=settings.validate_options(given, config, group[0])), group)
             for (source, _, _), group in groups.items()]
    plan_exports([m.source for m in models], out, calls[0][0])
    prepared = [api.prepare([m.source for m in group], out, options, progress) for options, group in calls]
    result = api.ConvertResult()
    for each in prepared:
        if result.failed:  # --fail-fast: nothing more is written
            result.report.exports += each.not_run(result.failed)
            continue
        try:
            converted = each.write(progress)
        except Interrupted as exc:
            raise Interrupted(exc.signum, (*(a.path for a in result.artifacts), *exc.completed)) from None
        result.artifacts += converted.artifacts
        result.report = _combine(result.report, converted.report)
        result.failed = converted.failed
    return result


def exports_of(model: ModelEntry, config: Config) -> tuple[Path, ...]:
    """The exports of a config model: those it lists, else those `targets` wrote under `out`."""
    if model.exports:
        return model.exports
    if not (config.targets and config.out):
        raise UserError(f"{config.path}: model '{model.source}' lists no exports, and the config has no `targets` "
                        "and `out` to find them by")
    return tuple(path for _, path in export_paths(model.source, config.targets, config.out))


def validate_models(models: Sequence[ModelEntry], given: Given, config: Config,
                    progress: api.Progress | None = None) -> ParityReport:
    """Check every model's exports against it; one report. With --fail-fast, the models after
    the first that fails are not checked (each export a failing entry saying so)."""
    report = None
    failed = ""
    for model in models:
        exports = exports_of(model, config)
        if failed:
            report.exports += [not_run(str(model.source), path, failed) for path in exports]
            continue
        checked = api.validate(model.source, list(exports),
                               settings.validate_options(given, config, model),
                               settings.source_options(given, model), progress=progress)
        report = _combine(report, checked)
        if given.fail_fast and not checked.passed:
            failed = str(model.source)
    return report if report is not None else ParityReport()


def not_run(source: str, path: Path, first: str) -> ExportResult:
    """The entry of an export the run stopped before (--fail-fast), once `first` failed."""
    try:
        target = plugins.find_target_for(path).name
    except UserError:
        target = "unknown"
    return ExportResult.not_run(source, target, str(path), first)
