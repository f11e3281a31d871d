"""Wall time of `rnnexport --help` (the median of several runs, each a fresh process), beside a bare
Python start on the same interpreter, and which heavy modules the help imports.

    .venv/bin/python benchmarks/help_time.py [--repeats 9]

The target is under 0.3 s on an idle machine; on a loaded one read the difference to the bare
start, which is what rnnexport adds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("numpy", "tensorflow", "keras", "tf2onnx", "onnxruntime", "rich")


def wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    script = Path(sys.executable).with_name("rnnexport")
    help_command = [str(script), "--help"] if script.is_file() else [sys.executable, "-m", "rnnexport", "--help"]
    bare_command = [sys.executable, "-c", "pass"]
    helps, bares = [], []
    for _ in range(args.repeats):  # alternated, so that a burst of load hits both alike
        helps.append(wall(help_command))
        bares.append(wall(bare_command))
    probe = ("import sys\nsys.argv = ['rnnexport', '--help']\nfrom rnnexport.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    help_s, bare_s = statistics.median(helps), statistics.median(bares)
    print(f"{' '.join(help_command[-2:])}: median {help_s:.3f} s over {args.repeats} runs "
          f"(min {min(helps):.3f}, max {max(helps):.3f})")
    print(f"bare python start:  median {bare_s:.3f} s; rnnexport adds {help_s - bare_s:.3f} s")
    print(f"heavy modules imported by --help: {imported.stderr.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
