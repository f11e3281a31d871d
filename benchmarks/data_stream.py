"""Validating 10k, 50k and 100k sequences: from a directory of .npz shards (streamed in batches)
against the same rows in one .npz read whole, side by side: throughput and peak memory.

    .venv/bin/python benchmarks/data_stream.py [--sizes 10000,50000,100000] [--shard 10000]
                                               [--length 20] [--to onnx]

A GRU tagger (16 units over 8 features, 4 classes per step) is exported with rnnexport; the rows
(length 20) are written once as shards of 10,000 rows, and for each size as one .npz. Each run is
a fresh process that loads the model and then times `rnnexport.validate(..., data=...)` alone;
its peak RSS is the process's maximum resident set. The in-memory path runs its one case twice
(the sweep repeats its first case to catch an export that keeps state), the streamed path once:
the throughput column counts the rows of the set per second of each run, as a user waits for it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def one(work: Path, data: Path, target: str) -> None:
    """In a fresh process: validate once on `data`, print seconds and peak RSS as JSON."""
    import rnnexport
    from rnnexport.options import SweepOptions, ValidateOptions

    rnnexport.inspect(work / "tagger.keras")
    options = ValidateOptions(device="cpu", sweep=SweepOptions(data=data))
    started = time.perf_counter()
    report = rnnexport.validate(work / "tagger.keras", [work / f"tagger.{target}"], options)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak": peak, "passed": report.passed}))


def measure(work: Path, data: Path, target: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--one", str(work), str(data), target],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def prepare(work: Path, sizes: list[int], shard: int, length: int, target: str) -> None:
    import keras
    import numpy as np

    import rnnexport

    keras.utils.set_random_seed(1)
    i = keras.Input((None, 8), name="x")
    x = keras.layers.GRU(16, return_sequences=True)(i)
    keras.Model(i, keras.layers.Dense(4, activation="softmax")(x)).save(work / "tagger.keras")
    rnnexport.convert(work / "tagger.keras", work, rnnexport.ConvertOptions(targets=(target,), validate=False))
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((max(sizes), length, 8)).astype(np.float32)
    for size in sizes:
        (work / f"shards-{size}").mkdir()
        for start in range(0, size, shard):
            np.savez(work / f"shards-{size}" / f"part-{start // shard:04d}.npz", x=rows[start:start + shard])
        np.savez(work / f"all-{size}.npz", x=rows[:size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--shard", type=int, default=10000)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--to", default="onnx", help="the export to validate")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(Path(args.one[0]), Path(args.one[1]), args.one[2])
        return
    from rich.console import Console
    from rich.table import Table

    sizes = [int(s) for s in args.sizes.split(",")]
    table = Table(title=f"validating a GRU tagger's {args.to} export on n sequences of {args.length} steps")
    for column in ("n", "shards: rows/s", "shards: peak RSS (MiB)", "one .npz: rows/s", "one .npz: peak RSS (MiB)",
                   "throughput shards / one .npz"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory(prefix="rnnexport-data-") as tmp:
        work = Path(tmp)
        prepare(work, sizes, args.shard, args.length, args.to)
        for size in sizes:
            streamed = measure(work, work / f"shards-{size}", args.to)
            whole = measure(work, work / f"all-{size}.npz", args.to)
            assert streamed["passed"] and whole["passed"]
            fast, slow = size / streamed["seconds"], size / whole["seconds"]
            table.add_row(f"{size:,}", f"{fast:,.0f}", f"{streamed['peak'] / 2**20:.0f}", f"{slow:,.0f}",
                          f"{whole['peak'] / 2**20:.0f}", f"{fast / slow:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
