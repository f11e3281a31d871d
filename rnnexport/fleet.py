"""Fleets: every model of a run in a worker process of its own, several at a time (or as Ray
tasks), one merged report, and each model's result kept under a key of everything it depends on
so that a rerun re-checks only the models that changed.

A model's entry in the cache (`.rnnexport-cache/` beside the config file, see `rnnexport.cache`)
holds its key, its report entries and the content hash of each export written; a model whose key
and exports are unchanged is not run again. A run that is interrupted keeps the entries of the
models that finished.

    >>> result = run_fleet("validate", config.models, Given(), config, FleetOptions(jobs=2))
    >>> [o.label for o in result.outcomes if o.reused]
    ['models/a.keras']
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnexport import settings
from rnnexport.cache import Cache, content_hash, intact, task_key
from rnnexport.config import Config, ModelEntry
from rnnexport.errors import ConfigError, Interrupted, OutputExistsError, UserError, one_line
from rnnexport.options import ExportOptions
from rnnexport.settings import Given

CACHE = ".rnnexport-cache"
EXECUTORS = ("local", "ray")
# Read by the runtimes (rnnexport.tf.threads) so that N workers share the cores, not N times over.
THREADS = "RNNEXPORT_THREADS"


@dataclass(frozen=True)
class FleetOptions:
    """How a fleet runs: `jobs` workers at a time (local), or Ray tasks (`executor="ray"`,
    `ray_address` None: a local instance) of `threads` cores each (None: the cores shared out
    between the jobs locally, one per Ray task). `rerun` ignores the cache. `cache` None: the
    `.rnnexport-cache` directory beside the config file."""

    jobs: int = 1
    executor: str = "local"
    ray_address: str | None = None
    threads: int | None = None
    rerun: bool = False
    cache: Path | None = None
    retries: int = 1

    def threads_per_worker(self) -> int:
        if self.threads is not None:
            return self.threads
        if self.executor == "ray":
            return 1
        return max(1, (os.cpu_count() or 1) // self.jobs)


@dataclass(frozen=True)
class Task:
    """One model's work, as sent to a worker: everything it needs, picklable."""

    index: int
    command: str
    model: ModelEntry
    given: Given
    config: Config
    export: ExportOptions
    validate: bool
    threads: int
    cwd: Path
    staging: Path | None = None

    @property
    def label(self) -> str:
        return str(self.model.source)


@dataclass
class Outcome:
    """What one model's worker found: its report entries (or why there are none), what it wrote,
    and what it cost. `reused`: taken from the cache, not run."""

    label: str
    exports: list[Any] = field(default_factory=list)
    artifacts: list[Any] = field(default_factory=list)
    error: str = ""
    crashed: bool = False
    seconds: float = 0.0
    peak_rss: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    reused: bool = False
    # The config file's error this model met (a name it gives is none of its outputs): the run's.
    refused: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.exports) and all(self.exports)


@dataclass
class FleetResult:
    report: Any
    outcomes: list[Outcome]
    artifacts: list[Any] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.report.passed


# --- in the worker -------------------------------------------------------------------------------

def _pin_threads(threads: int) -> None:
    """Before TensorFlow starts: this many threads for its op pools, onnxruntime and LiteRT."""
    os.environ[THREADS] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from rnnexport.tf import tensorflow

    tf = tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _slim(export: Any) -> Any:
    """A report entry without its cases' input arrays: what the report shows, small to send and keep."""
    cases = tuple(dataclasses.replace(c, case=dataclasses.replace(c.case, inputs={})) for c in export.cases)
    return dataclasses.replace(export, cases=cases)


def run_task(task: Task) -> Outcome:
    """Convert or validate one model, in the process this is called in (a fresh worker)."""
    import resource

    from rnnexport import runs

    started = time.perf_counter()
    outcome = Outcome(task.label)
    try:
        # Config paths are relative to where the run started; a Ray worker starts elsewhere.
        try:
            os.chdir(task.cwd)
        except OSError:
            raise UserError(f"{task.cwd}: not a directory on the machine this worker runs on; a fleet on a "
                            "cluster needs its models and `out` on a file system every node shares") from None
        _pin_threads(task.threads)
        if task.command == "convert":
            given = dataclasses.replace(task.given, out=task.staging)
            converted = runs.convert_models([task.model], given, task.config, task.export, False, task.validate)
            report, outcome.artifacts = converted.report, list(converted.artifacts)
        else:
            report = runs.validate_models([task.model], task.given, task.config)
        if report is not None:
            outcome.exports = [_slim(e) for e in report.exports]
            outcome.meta = {"device": report.device, "seed": report.seed, "versions": report.versions,
                            "environment": report.environment}
    except ConfigError as exc:
        outcome.error = outcome.refused = exc.cli_message
    except UserError as exc:
        outcome.error = exc.cli_message
    except Exception as exc:  # noqa: BLE001 - a bug met on one model fails that model, not the fleet
        outcome.error = f"internal error: {one_line(exc)}"
    outcome.seconds = time.perf_counter() - started
    outcome.peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return outcome


# --- the driver ----------------------------------------------------------------------------------

def _failed_entries(task: Task, reason: str, destinations: Sequence[tuple[str, Path]]) -> list[Any]:
    """Failing report entries for a model that produced none (it crashed, or could not be read)."""
    from rnnexport.parity import ExportResult
    from rnnexport.tolerance import FLOAT32_TOLERANCE

    return [ExportResult(source=task.label, source_kind="unknown", target=target, path=str(path),
                         tolerance=FLOAT32_TOLERANCE["cpu"], device="-", reference_device="-", cases=(),
                         error=reason) for target, path in destinations or [("unknown", Path("-"))]]


def _destinations(task: Task, out: Path | None) -> list[tuple[str, Path]]:
    """Each export of the model, as (target, main path): where `convert` writes, what `validate` reads
    (a config that does not say is refused here, before any worker starts)."""
    from rnnexport import plugins, runs
    from rnnexport.plan import export_paths

    if task.command == "convert":
        return [(t.name, p) for t, p in export_paths(task.model.source, settings.targets(task.given, task.config), out)]
    exports = runs.exports_of(task.model, task.config)
    found = []
    for path in exports:
        try:
            found.append((plugins.find_target_for(path).name, path))
        except UserError:
            found.append(("unknown", path))
    return found


def _crashed(task: Task, why: str) -> Outcome:
    return Outcome(task.label, error=f"the worker running this model died ({why}); nothing of it was kept",
                   crashed=True)


def _moved(outcome: Outcome, staging: Path, out: Path) -> None:
    """Report entries and artifacts renamed from the worker's staging directory to `out`."""
    def moved(path: str | Path) -> Path:
        return out / Path(path).relative_to(staging)

    outcome.exports = [dataclasses.replace(e, path=str(moved(e.path))) if Path(e.path).is_relative_to(staging)
                       else e for e in outcome.exports]
    outcome.artifacts = [dataclasses.replace(a, path=moved(a.path)) for a in outcome.artifacts]


def run_fleet(command: str, models: Sequence[ModelEntry], given: Given, config: Config,
              options: FleetOptions = FleetOptions(), export: ExportOptions = ExportOptions(),
              force: bool = False, validate: bool = True,
              on_done: Callable[[Outcome, int, int], None] | None = None) -> FleetResult:
    """`convert` or `validate` every model in its own worker; one report in the models' order.

    `convert` writes each model's exports to a staging directory inside `out` and moves them into
    place when the model is done; an existing export is replaced only with `force`, or when it is
    the one this cache recorded for the model. `on_done(outcome, done, total)` is told of each model.
    With --fail-fast the first model that fails stops the run: the workers still running are ended,
    and every model not finished is reported as not run."""
    from rnnexport.parity import ExportResult
    from rnnexport.parity.results import not_run_because

    if command not in ("convert", "validate"):
        raise ValueError(command)
    if options.executor not in EXECUTORS:
        raise UserError(f"unknown executor '{options.executor}'; choose one of: {', '.join(EXECUTORS)}")
    if options.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {options.jobs}")
    out = (given.out or config.out) if command == "convert" else None
    if command == "convert" and out is None:
        raise UserError("give --out, or `out` in the config file")
    cache = Cache(options.cache or config.path.parent / CACHE)
    threads = options.threads_per_worker()
    tasks = [Task(i, command, m, given, config, export, validate, threads, Path.cwd()) for i, m in enumerate(models)]
    destinations = {t.index: _destinations(t, out) for t in tasks}
    keys = {t.index: task_key(t, [p for _, p in destinations[t.index]], out) for t in tasks}
    outcomes: dict[int, Outcome] = {}
    previous: dict[int, Outcome] = {}
    for task in tasks:
        cached = cache.load(command, task.model, out)
        if cached is None:
            continue
        key, outcome = cached
        previous[task.index] = outcome
        if not options.rerun and key == keys[task.index] and intact(outcome):
            outcome.reused = True
            outcomes[task.index] = outcome
    to_run = [t for t in tasks if t.index not in outcomes]
    if command == "convert":
        _check_destinations(to_run, out, export, force, previous)
    done = 0
    for outcome in outcomes.values():
        done += 1
        if on_done:
            on_done(outcome, done, len(tasks))

    def told(outcome: Outcome) -> None:
        nonlocal done
        done += 1
        if on_done:
            on_done(outcome, done, len(tasks))

    def failing(outcome: Outcome) -> bool:
        return given.fail_fast and not outcome.passed

    def finished(task: Task, outcome: Outcome) -> bool:
        """Keep what a model's worker found; whether the run stops there (--fail-fast)."""
        if not outcome.exports and (outcome.error or task.validate):
            outcome.exports = _failed_entries(task, outcome.error or "no export was checked",
                                              destinations[task.index])
        if not (outcome.crashed or outcome.refused):
            cache.save(command, task.model, out, keys[task.index], outcome)
        outcomes[task.index] = outcome
        told(outcome)
        return failing(outcome)

    first = next((outcome.label for outcome in outcomes.values() if failing(outcome)), "")
    if to_run and not first:
        if command == "convert":
            _convert(to_run, out, options, finished)
        else:
            with closing(_execute(to_run, options)) as finishing:
                for task, outcome in finishing:
                    if finished(task, outcome):
                        break
        first = next((outcomes[t.index].label for t in tasks if t.index in outcomes and failing(outcomes[t.index])), "")
    for task in (t for t in tasks if t.index not in outcomes):
        outcome = Outcome(task.label, error=not_run_because(first), crashed=True)
        outcome.exports = [ExportResult.not_run(task.label, target, str(path), first)
                           for target, path in destinations[task.index] or [("unknown", Path("-"))]]
        outcomes[task.index] = outcome
        told(outcome)
    ordered = [outcomes[t.index] for t in tasks]
    refused = next((outcome.refused for outcome in ordered if outcome.refused), "")
    if refused:
        raise ConfigError(refused)
    return FleetResult(_merged(ordered), ordered, [a for o in ordered for a in o.artifacts])


def _execute(tasks: Sequence[Task], options: FleetOptions) -> Generator[tuple[Task, Outcome], None, None]:
    from rnnexport import executors

    if options.executor == "ray":
        return executors.on_ray(tasks, options.ray_address, options.retries, _crashed)
    return executors.in_processes(tasks, options.jobs, _crashed)


def _check_destinations(tasks: Sequence[Task], out: Path, export: ExportOptions, force: bool,
                        previous: dict[int, Outcome]) -> None:
    """Before any worker starts: the exports' paths are distinct and writable, the targets' options
    valid, and nothing existing would be replaced without `force` but what this cache wrote."""
    from rnnexport.options import ConvertOptions
    from rnnexport.plan import plan_exports

    if not tasks:
        return
    options = ConvertOptions(targets=settings.targets(tasks[0].given, tasks[0].config), force=True, export=export)
    plan = plan_exports([t.model.source for t in tasks], out, options)
    for task, planned in zip(tasks, plan):
        ours = previous.get(task.index)
        recorded = ours.hashes if ours else {}
        for each in planned.exports:
            for dest in each.target.files(each.path, export.streaming):
                if (dest.exists() or dest.is_symlink()) and not force and recorded.get(str(dest)) != content_hash(dest):
                    raise OutputExistsError(dest)


def _convert(tasks: Sequence[Task], out: Path, options: FleetOptions,
             finished: Callable[[Task, Outcome], bool]) -> None:
    """Run the conversions, each writing under a staging directory inside `out`, and move each
    model's exports into place as soon as it is done; stop (ending the workers still running)
    once `finished` says so."""
    from rnnexport.plan import Writing

    installed: list[Path] = []
    try:
        with Writing(out) as writing, writing.temporary() as tmp:
            staged = [dataclasses.replace(t, staging=Path(tmp) / str(t.index)) for t in tasks]
            with closing(_execute(staged, options)) as finishing:
                for task, outcome in finishing:
                    if not outcome.error:
                        for artifact in outcome.artifacts:
                            dest = out / Path(artifact.path).relative_to(task.staging)
                            writing.install(Path(artifact.path), dest, force=True)
                            installed.append(dest)
                        _moved(outcome, task.staging, out)
                        outcome.hashes = {str(a.path): content_hash(Path(a.path)) for a in outcome.artifacts}
                    if finished(task, outcome):
                        break
    except KeyboardInterrupt as exc:
        raise Interrupted(getattr(exc, "signum", 2), tuple(installed)) from None


def _merged(outcomes: Sequence[Outcome]) -> Any:
    from rnnexport.reports import ParityReport

    meta = next((o.meta for o in outcomes if o.meta), None)
    if meta is None:
        # No model got as far as a report of its own: the versions and machine still belong in this one.
        from rnnexport.tf import environment, versions

        meta = {"device": "-", "versions": versions(), "environment": environment()}
    report = ParityReport(device=meta.get("device", ""), seed=meta.get("seed", 0),
                          versions=meta.get("versions", {}), environment=meta.get("environment", {}))
    report.exports = [e for o in outcomes for e in o.exports]
    return report
