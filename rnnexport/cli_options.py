"""The command line's options: those its commands share, one flag per option an installed target
declares, and what the user gave, for the API to lay over the config file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource


def _parse_list(value: str | None, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'", param_hint=name) from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter("values must be positive integers", param_hint=name)
    return numbers


def _parse_tolerances(values: tuple[str, ...], name: str) -> dict[str, float]:
    parsed = {}
    for value in values:
        target, _, number = value.rpartition("=")
        try:
            tolerance = float(number)
        except ValueError:
            raise click.BadParameter(f"expected a number or TARGET=NUMBER, got '{value}'", param_hint=name) from None
        if tolerance < 0 or tolerance != tolerance:
            raise click.BadParameter(f"tolerance must be a non-negative number, got '{value}'", param_hint=name)
        parsed[target or "*"] = tolerance
    return parsed


def _apply(fn: Callable[..., Any], options: list[Callable[..., Any]]) -> Callable[..., Any]:
    for option in reversed(options):
        fn = option(fn)
    return fn


def sweep_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Which cases the sweep runs."""
    return _apply(fn, [
        click.option("--lengths", metavar="N,N,...",
                     help="Sequence lengths to check [default: 1, 2, short, source length, 4x beyond]."),
        click.option("--batches", metavar="N,N,...", default="1,3", show_default=True, help="Batch sizes to check."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs."),
        click.option("--chunks", metavar="N,N,...", default="1,5,17", show_default=True,
                     help="Chunk sizes the streaming check feeds streaming exports."),
        click.option("--data", type=click.Path(exists=True, path_type=Path),
                     help="Check on the arrays of this .npz (keyed by input name) instead of random inputs; or "
                          "stream a directory of .npz shards or TFRecord files through in batches."),
    ])


def judging_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How exports are judged: tolerances, latency, when to stop."""
    return _apply(fn, [
        click.option("--atol", multiple=True, metavar="[NAME=]X",
                     help="Absolute tolerance, for every output of every target, or by NAME for one target or "
                          "one output (repeatable): --atol 1e-4 --atol tflite=1e-3 --atol logits=1e-4."),
        click.option("--rtol", multiple=True, metavar="[NAME=]X",
                     help="Relative tolerance, as --atol. An output passes where every element has "
                          "|export - reference| <= atol + rtol * |reference|."),
        click.option("--fail-fast", is_flag=True,
                     help="End the run at the first case an export fails: the rest of its sweep, and every source "
                          "after it (reported as not run)."),
        click.option("--latency-repeats", type=click.IntRange(min=0), default=3, show_default=True,
                     help="Timed calls per shape of the sweep, after its own call, for the latency table (0: none)."),
        click.option("--max-latency-ms", multiple=True, metavar="[TARGET=]MS",
                     help="Fail an export whose median latency at some shape of the sweep exceeds MS (repeatable)."),
        click.option("--min-speedup", multiple=True, metavar="[TARGET=]X",
                     help="Fail an export that is not at least X times faster than the source (compare: than "
                          "the first export) at every shape of the sweep (repeatable)."),
    ])


def report_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Where the report goes, and how much of it the terminal shows."""
    return _apply(fn, [
        click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report here."),
        click.option("--junit", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write a JUnit XML report here (a test case per export and case) for CI systems."),
        click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write a Markdown summary here, e.g. for a pull-request comment."),
        click.option("--html", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write a self-contained HTML report here, with error against length per export."),
        click.option("--json", "as_json", is_flag=True, help="Print the JSON report on stdout instead of the table."),
        click.option("-q", "--quiet", is_flag=True, help="No progress and no table; the exit code tells."),
        click.option("-v", "--verbose", is_flag=True,
                     help="List every case under its export, then the seconds each phase of the run took."),
    ])


def quantized_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The thresholds a quantized export is judged by, instead of its tolerance."""
    return _apply(fn, [
        click.option("--min-snr", type=float, metavar="DB",
                     help="Quantized exports (int8, int16x8, ONNX dynamic int8): the SNR every output must reach "
                          "[default: per mode, int8 20 dB, int16x8 30 dB]."),
        click.option("--min-agreement", type=click.FloatRange(0, 1), metavar="FRACTION",
                     help="Quantized exports: the share of top-1 decisions of class-score outputs that must agree "
                          "with the source [default: 0.99]."),
        click.option("--max-kl", type=click.FloatRange(0), metavar="NATS",
                     help="Quantized exports: the largest mean KL divergence of class-score outputs "
                          "[default: per mode, int8 0.01, int16x8 0.001]."),
        click.option("--task", type=click.Choice(["classify"]),
                     help="classify: every output is class scores (logits where not probabilities), judged by "
                          "top-1 agreement when quantized."),
    ])


def validation_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = report_options(fn)
    fn = quantized_options(fn)
    fn = _apply(fn, [
        click.option("--save-golden", type=click.Path(dir_okay=False, path_type=Path), metavar="GOLDEN.npz",
                     help="Also save the sweep's inputs and the source's outputs (with the sweep, tolerances and "
                          "the source's checksum) here, for `rnnexport check` where only an export's runtime is "
                          "installed."),
        click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
                     help="Read settings from this TOML file [default: [tool.rnnexport] of ./pyproject.toml]; "
                          "options given here override it."),
    ])
    fn = judging_options(fn)
    fn = sweep_options(fn)
    fn = click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
                      help="Where to run reference and exports; auto picks a GPU when TensorFlow sees one.")(fn)
    return source_options(fn)


def source_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--unsafe", is_flag=True, help="Let Keras load Lambda layers (runs code from the file)."),
        click.option("--inputs", metavar="NAME,...",
                     help="TF1 and frozen graphs: the tensors to export from, e.g. x:0 (found automatically where "
                          "unambiguous). Any tensor may be named: the graph is cut there, e.g. Mfcc:0 to drop an "
                          "audio front end."),
        click.option("--outputs", metavar="NAME,...",
                     help="TF1 and frozen graphs: the tensors to export to, e.g. logits:0, any tensor of the graph "
                          "(found automatically where unambiguous). SavedModels: the signature's output keys, "
                          "e.g. output_0."),
        click.option("--step", type=click.IntRange(min=0),
                     help="TF1 checkpoint directories: restore this global step instead of the newest."),
        click.option("--custom-objects", metavar="MODULE:NAME,...",
                     help="Keras files: the custom layer classes they use, e.g. mypkg.layers:Attention."),
        click.option("--cell", metavar="KIND:UNITS,...",
                     help="Checkpoints saved without a graph: their recurrent layers, first to last, "
                          "e.g. lstm:64 or gru:128,gru:64 (TF1 cell class names accepted)."),
        click.option("--architecture", type=click.Path(dir_okay=False, path_type=Path),
                     help="Checkpoints saved without a graph: a Keras model file or JSON config whose "
                          "weights the checkpoint fills."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


TARGET_OPTION = "target_option__"
# Flags of `convert` declared above the target options' decorator, which it cannot see.
CONVERT_FLAGS = {"--to", "-o", "--out", "--force", "--validate", "--no-validate"}


def _option_key(item: Any) -> str:
    return f"{TARGET_OPTION}{item.target}__{item.name}".replace("-", "_")


def _declared(target: Any) -> list[Any]:
    from rnnexport import target_options

    try:
        return target_options.declared(target.name, target.Options)
    except TypeError:
        return []  # `Options` is not a dataclass: the target gets no flags, and the rest still works


def _sharing() -> dict[str, list[Any]]:
    """Options of several targets with one flag, name, kind and default share one flag (`--quantize`
    of tflite and onnx), keyed by the first one's key; the value goes to each target that takes it."""
    from rnnexport import plugins

    groups: dict[tuple[Any, ...], list[Any]] = {}
    for target in plugins.targets():
        for item in _declared(target):
            groups.setdefault((item.flag, item.name, item.spec.kind, item.default), []).append(item)
    return {_option_key(items[0]): items for items in groups.values()}


def target_option_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per option an installed target declares, typed and documented by the declaration:
    the option's own flag (shared by the targets that declare the same option), or
    `--<target>-<name>` where another option has that flag already."""
    taken = CONVERT_FLAGS | {o for p in getattr(fn, "__click_params__", []) for o in (*p.opts, *p.secondary_opts)}
    options = []
    for key, items in _sharing().items():
        item = items[0]
        flag = item.flag if item.flag not in taken else f"--{item.target}-{item.name.replace('_', '-')}"
        taken.add(flag)
        spec = item.spec
        text = spec.help if len(items) == 1 else " ".join(f"{each.target}: {each.spec.help}" for each in items)
        if spec.kind is bool:
            flags = f"{flag}/--no-{flag[2:]}" if item.default else flag
            options.append(click.option(flags, key, is_flag=True, default=bool(item.default),
                                        show_default=bool(item.default), help=text))
            continue
        choices = tuple(dict.fromkeys(c for each in items for c in each.spec.choices))
        kind = click.Choice(choices) if choices else \
            click.IntRange(spec.minimum, spec.maximum) if spec.kind is int else \
            click.FloatRange(spec.minimum, spec.maximum) if spec.kind is float else str
        options.append(click.option(flag, key, type=kind, default=item.default,
                                    show_default=item.default is not None, help=text))
    for option in reversed(options):
        fn = option(fn)
    return fn


def target_values(params: dict[str, Any], targets: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """The target options given on the command line, by target; the others keep their defaults. A
    shared flag's value goes to each target whose choices take it; one of `targets` (the --to
    targets, when given) that declares the option but not that value is refused."""
    chosen: dict[str, dict[str, Any]] = {}
    for key, items in _sharing().items():
        if key not in params or not is_given(key):
            continue
        value = params[key]
        for item in items:
            if item.spec.choices and value not in item.spec.choices:
                if targets and "all" not in targets and item.target in targets:
                    raise click.BadParameter(f"target '{item.target}' does not take '{value}'; it takes: "
                                             f"{', '.join(item.spec.choices)}", param_hint=item.flag)
                continue
            chosen.setdefault(item.target, {})[item.name] = value
    return chosen


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (value or "").split(",") if n.strip())


def source_values(params: dict[str, Any]) -> Any:
    from rnnexport.options import SourceOptions

    return SourceOptions(unsafe=params["unsafe"], inputs=_names(params["inputs"]), outputs=_names(params["outputs"]),
                         step=params["step"], custom_objects=_names(params["custom_objects"]),
                         cells=_names(params["cell"]), architecture=params["architecture"])


def is_given(name: str) -> bool:
    """Whether the user set option `name` on the command line (it then overrides the config file)."""
    source = click.get_current_context().get_parameter_source(name)
    return source is not None and source is not ParameterSource.DEFAULT


def _parse_numbers(values: tuple[str, ...], name: str) -> dict[str, float]:
    """`[TARGET=]X` values, each positive, by target (`*` for every one)."""
    parsed = _parse_tolerances(values, name)
    for key, value in parsed.items():
        if value <= 0:
            raise click.BadParameter(f"expected a positive number, got {value:g}", param_hint=name)
    return parsed


def judging(params: dict[str, Any]) -> dict[str, Any]:
    """The judging options given, as `Given` fields."""
    return {
        "atol": _parse_tolerances(params["atol"], "--atol"),
        "rtol": _parse_tolerances(params["rtol"], "--rtol"),
        "fail_fast": params["fail_fast"],
        "latency_repeats": params["latency_repeats"] if is_given("latency_repeats") else None,
        "max_latency_ms": _parse_numbers(params["max_latency_ms"], "--max-latency-ms"),
        "min_speedup": _parse_numbers(params["min_speedup"], "--min-speedup"),
    }


def sweep_given(params: dict[str, Any]) -> dict[str, Any]:
    """The sweep options given, as `Given` fields (None: not given)."""

    def given(name: str, value: Any) -> Any:
        return value if is_given(name) else None

    return {
        "lengths": _parse_list(params["lengths"], "--lengths"),
        "batches": given("batches", _parse_list(params["batches"], "--batches")),
        "seed": given("seed", params["seed"]),
        "chunks": given("chunks", _parse_list(params["chunks"], "--chunks")),
        "data": params["data"],
    }


def given_settings(params: dict[str, Any], **more: Any) -> Any:
    """What the command line gave, for the API to lay over the config file."""
    from rnnexport.settings import Given
    from rnnexport.thresholds import ThresholdOverrides

    return Given(
        device=params["device"] if is_given("device") else None,
        source=source_values(params),
        thresholds=ThresholdOverrides(params["min_snr"], params["min_agreement"], params["max_kl"]),
        task=params["task"],
        save_golden=params["save_golden"],
        **sweep_given(params),
        **judging(params),
        **more,
    )


def fleet_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run each model in a worker process of its own, several at a time or on Ray, resumably."""
    options = [
        click.option("-j", "--jobs", type=click.IntRange(min=1),
                     help="Run each model in its own worker process, N at a time, each with its share of the "
                          "cores; a model whose inputs, options and exports are unchanged since the last such "
                          "run is not run again (see --rerun)."),
        click.option("--executor", type=click.Choice(["local", "ray"]),
                     help="Where the workers run: local processes, or Ray tasks (pip install 'rnnexport[ray]') "
                          "[default: local]."),
        click.option("--ray-address", metavar="ADDRESS",
                     help="With --executor ray: the cluster to send the models to [default: a local instance]."),
        click.option("--rerun", is_flag=True, help="With --jobs or --executor: run every model again, even those "
                                                   "whose result is up to date."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def fleet_values(params: dict[str, Any]) -> Any:
    """The fleet's options when one was asked for (--jobs, --executor, --ray-address, --rerun), else None."""
    if not any(params[name] for name in ("jobs", "executor", "ray_address", "rerun")):
        return None
    from rnnexport.fleet import FleetOptions

    if params["ray_address"] and params["executor"] != "ray":
        raise click.UsageError("--ray-address goes with --executor ray")
    return FleetOptions(jobs=params["jobs"] or 1, executor=params["executor"] or "local",
                        ray_address=params["ray_address"], rerun=params["rerun"])


def runtime_options(params: dict[str, Any], sweep: bool) -> Any:
    """The options of a check without a source: judging, and for `compare` the sweep."""
    from rnnexport.options import SweepOptions, ValidateOptions
    from rnnexport.thresholds import ThresholdOverrides
    from rnnexport.tolerance import ToleranceOverrides

    judged = judging(params)
    swept = sweep_given(params) if sweep else {}
    defaults = SweepOptions()
    return ValidateOptions(
        device=params["device"],
        sweep=SweepOptions(**{k: v if v is not None else getattr(defaults, k) for k, v in swept.items()}),
        tolerance=ToleranceOverrides(atol=judged["atol"], rtol=judged["rtol"]),
        fail_fast=judged["fail_fast"],
        latency_repeats=params["latency_repeats"],
        max_latency_ms=judged["max_latency_ms"],
        min_speedup=judged["min_speedup"],
        thresholds=ThresholdOverrides(params["min_snr"], params["min_agreement"], params["max_kl"]),
        task=params["task"],
    )


golden_option = click.option(
    "--golden", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="GOLDEN.npz",
    help="The golden file `convert` or `validate --save-golden` wrote: the sweep's inputs and the source's outputs.")
runtime_device = click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
                              help="Where to run the exports (gpu asks TensorFlow which GPU there is).")


def sourceless_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`check` and `compare`: the device, judging (quantized exports' thresholds too) and report options."""
    return runtime_device(judging_options(quantized_options(report_options(fn))))
