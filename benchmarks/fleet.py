"""A fleet of small generated models converted and validated with --jobs 1 and --jobs 2 side by
side: wall time, each worker's peak memory, and the speed-up.

    .venv/bin/python benchmarks/fleet.py [--models 12] [--to savedmodel,onnx] [--rounds 1]

Twelve models (LSTM, GRU, SimpleRNN, bidirectional LSTM; 8 to 16 units over 4 to 8 features) are
written to a temporary directory with a config file listing them, then converted with
`rnnexport.fleet.run_fleet` (what `rnnexport convert --config fleet.toml --jobs N` runs) into a
fresh `out` each time, every model in a worker of its own (forked from a server started before
the first timed run); the rounds alternate --jobs 1 and --jobs 2 so that the machine's load falls
on both. Peak memory is each worker's maximum resident
set (`ru_maxrss`), which includes what the forked worker shares with its server (TensorFlow and
Keras imported once). Absolute times drift with the machine's load: read the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KINDS = ("lstm", "gru", "simple-rnn", "bi-lstm")


def write_models(directory: Path, count: int) -> list[str]:
    import keras

    names = []
    for n in range(count):
        kind, units, features = KINDS[n % len(KINDS)], 8 + 4 * (n % 3), 4 + 2 * (n % 3)
        keras.utils.set_random_seed(n)
        i = keras.Input((None, features), name="x")
        cell = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple-rnn": keras.layers.SimpleRNN,
                "bi-lstm": keras.layers.LSTM}[kind](units, return_sequences=True)
        x = keras.layers.Bidirectional(cell)(i) if kind == "bi-lstm" else cell(i)
        name = f"m{n:02d}_{kind}.keras"
        keras.Model(i, keras.layers.Dense(3)(x)).save(directory / name)
        names.append(name)
    return names


def run(config_path: Path, out: Path, jobs: int) -> tuple[float, list, bool]:
    from rnnexport import config as config_file
    from rnnexport.fleet import FleetOptions, run_fleet
    from rnnexport.settings import Given

    config = config_file.load(config_path, config_path.parent)
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = run_fleet("convert", config.models, Given(out=out), config,
                       FleetOptions(jobs=jobs, rerun=True, cache=out.parent / f"cache-{jobs}"), force=True)
    return time.perf_counter() - started, result.outcomes, result.passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=12)
    parser.add_argument("--to", default="savedmodel,onnx", help="targets, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs (--jobs 1, then --jobs 2)")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    # The workers' server (which imports TensorFlow once) is started before the first timed run.
    from multiprocessing import forkserver, get_context

    from rnnexport.executors import PRELOAD

    get_context("forkserver").set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    with tempfile.TemporaryDirectory(prefix="rnnexport-fleet-") as tmp:
        work = Path(tmp)
        names = write_models(work, args.models)
        targets = ", ".join(f'"{t}"' for t in args.to.split(","))
        (work / "fleet.toml").write_text(f"models = [{', '.join(repr(n) for n in names)}]\n"
                                         f"targets = [{targets}]\ndevice = \"cpu\"\nbatches = [1, 3]\n")
        times: dict[int, list[float]] = {1: [], 2: []}
        peaks: dict[int, list[int]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for jobs in (1, 2):
                seconds, outcomes, passed = run(work / "fleet.toml", work / f"out-{jobs}", jobs)
                assert passed, [o.error for o in outcomes if not o.passed]
                times[jobs].append(seconds)
                peaks[jobs] += [o.peak_rss for o in outcomes]
    table = Table(title=f"{args.models} models to {args.to}, converted and validated, {os.cpu_count()} cores")
    for column in ("--jobs", "threads per worker", "wall time (s)", "peak RSS per worker (MiB, median / max)",
                   "speed-up"):
        table.add_column(column, justify="right")
    one = statistics.median(times[1])
    for jobs in (1, 2):
        wall = statistics.median(times[jobs])
        table.add_row(str(jobs), str(max(1, (os.cpu_count() or 1) // jobs)), f"{wall:.1f}",
                      f"{statistics.median(peaks[jobs]) / 2**20:.0f} / {max(peaks[jobs]) / 2**20:.0f}",
                      f"{one / wall:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
