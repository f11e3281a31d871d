"""A first run as the README tells it: its command-line block top to bottom in a fresh directory,
what a CI log shows while it runs, -q silence and what -v adds."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT, rnnexport_cmd

PHASE = re.compile(r"^\[ *(\d+\.\d)s\] (.+)$")  # conftest.PROGRESS, with its parts


def quick_start() -> list[list[str]]:
    """The commands of the first bash block under the README's "Command line", in order."""
    section = (ROOT / "README.md").read_text().split("\n## Command line\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple:
    """Each quick-start command run as a user runs it (stderr a pipe, as in CI), in a directory
    holding only the samples: (directory, [(args, completed process)])."""
    work = tmp_path_factory.mktemp("first-run")
    (work / "samples").symlink_to(ROOT / "samples")
    ran = []
    for args in quick_start():
        assert args[0] == "rnnexport", args
        ran.append((args, rnnexport_cmd(*args[1:], cwd=work)))
    return work, ran


def _run(first_run, *words: str) -> subprocess.CompletedProcess:
    return next(result for args, result in first_run[1] if all(w in args for w in words))


def test_the_readme_quick_start_runs_top_to_bottom(first_run):
    work, ran = first_run
    assert [args[1] for args, _ in ran] == ["inspect", "convert", "validate", "convert", "plugins"]
    for args, result in ran:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert {p.name for p in (work / "exports").iterdir()} == {"gru_fixed.savedmodel", "gru_fixed.onnx",
                                                               "gru_fixed.tflite"}
    import onnx

    replaced = onnx.load(str(work / "exports" / "gru_fixed.onnx"), load_external_data=False)
    assert next(o.version for o in replaced.opset_import if o.domain in ("", "ai.onnx")) == 18


def test_a_ci_log_gets_one_line_per_phase_with_elapsed_seconds(first_run):
    result = _run(first_run, "convert", "all")
    lines = [PHASE.match(line) for line in result.stderr.splitlines()]
    assert all(lines), result.stderr
    phases = [m.group(2) for m in lines]
    source = "samples/gru_fixed.keras"
    assert phases == [
        "loading TensorFlow",
        f"reading {source}",
        f"building the model of {source}",
        f"exporting {source} to onnx",
        f"exporting {source} to savedmodel",
        f"exporting {source} to tflite",
        f"opening the exports of {source}",
        f"checking {source} on onnx, savedmodel, tflite: 11 cases",
        phases[8],
        f"recording the verdict in the exports of {source}",
    ]
    assert re.fullmatch(r"  11 cases checked in \d+\.\ds", phases[8])
    seconds = [float(m.group(1)) for m in lines]
    assert seconds == sorted(seconds) and seconds[0] < seconds[-1]
    assert "PASS: 3/3 exports match their source" in result.stdout
    validated = _run(first_run, "validate")
    assert [PHASE.match(line).group(2) for line in validated.stderr.splitlines()][:2] == [
        "loading TensorFlow", f"reading {source}"]


def test_quiet_prints_nothing(first_run):
    result = _run(first_run, "-q")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verbose_puts_each_exports_notes_under_it_then_where_the_time_went(first_run):
    out = _run(first_run, "validate").stdout.splitlines()
    onnx_head = out.index("onnx exports/gru_fixed.onnx (reference on CPU (TensorFlow))")
    tflite_head = out.index("tflite exports/gru_fixed.tflite (reference on CPU (TensorFlow))")
    onnx_note = out.index("  onnx gru_fixed.onnx: recurrent ops GRU x2")
    tflite_note = next(i for i, line in enumerate(out) if line.startswith("  tflite gru_fixed.tflite: recurrent ops "))
    assert onnx_head < onnx_note < tflite_head < tflite_note, "\n".join(out)
    assert out[onnx_note + 1].startswith("  ok   len=1 batch=1 ")
    assert all(line.startswith(("  ok ", "    not fused")) for line in out[tflite_note + 1:tflite_note + 4])
    spent = out[out.index("time spent"):]
    rows = {re.split(r"  +", line)[0]: line for line in spent[3:]}
    for phase in ("starting Python and rnnexport", "loading TensorFlow", "reading samples/gru_fixed.keras",
                  "checking samples/gru_fixed.keras on onnx, tflite: 7 cases", "total",
                  "checks: running onnx gru_fixed.onnx", "checks: running tflite gru_fixed.tflite"):
        assert re.search(r"  \d+\.\d\d", rows[phase]), spent
    total = float(re.split(r"  +", rows["total"])[1])
    assert total > 0 and total == pytest.approx(
        sum(float(re.split(r"  +", line)[1]) for line in spent[3:] if line in rows.values()
            and not line.startswith(("total", "checks:"))), abs=0.05)


def test_help_answers_without_loading_the_api():
    """`rnnexport --help` as the console script runs it, timed by the benchmark script."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "help_time.py"), "--repeats", "3"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"--help: median \d\.\d{3} s over 3 runs", result.stdout), result.stdout
    assert "heavy modules imported by --help: []" in result.stdout


class _Terminal:
    """What a terminal looks like to rnnexport and rich: a stream that says it is a tty."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        raise OSError("not a real descriptor")


def _sweep(progress) -> None:
    with progress:
        progress("loading TensorFlow", 0, 0)
        progress("checking m.keras on onnx: 3 cases", 0, 0)
        for done, case in enumerate(("len=1 batch=1", "len=1 batch=1, again", "len=9 batch=3")):
            progress(case, done, 3)
        progress("done", 3, 3)


def test_progress_on_a_terminal_is_a_live_display(monkeypatch):
    from rnnexport.console import ConsoleProgress

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = ConsoleProgress(enabled=True)
    assert progress.mode == "live"
    _sweep(progress)
    shown = "".join(terminal.written)
    assert "\x1b[" in shown  # drawn and redrawn in place, not line by line
    assert "loading TensorFlow" in shown and "checking m.keras on onnx: 3 cases" in shown
    assert "3/3" in shown and "\u2713" in shown and "[" not in shown.replace("\x1b[", "")
    assert [phase for phase, _ in progress.timings()][-2:] == ["loading TensorFlow",
                                                               "checking m.keras on onnx: 3 cases"]


def test_progress_off_a_terminal_is_plain_lines_and_a_long_sweep_says_it_is_alive(monkeypatch, capsys):
    from rnnexport.console import ConsoleProgress

    monkeypatch.setattr(ConsoleProgress, "HEARTBEAT", 0.0)
    progress = ConsoleProgress(enabled=True)
    assert progress.mode == "lines"
    _sweep(progress)
    lines = [PHASE.match(line).group(2) for line in capsys.readouterr().err.splitlines()]
    assert lines[:2] == ["loading TensorFlow", "checking m.keras on onnx: 3 cases"]
    assert lines[2:5] == ["  case 1/3: len=1 batch=1", "  case 2/3: len=1 batch=1, again", "  case 3/3: len=9 batch=3"]
    assert re.fullmatch(r"  3 cases checked in \d+\.\ds", lines[5]) and len(lines) == 6
    quiet = ConsoleProgress(enabled=False)
    _sweep(quiet)
    assert capsys.readouterr().err == "" and len(quiet.timings()) >= 2


def test_inputs_and_outputs_help_says_any_tensor_and_savedmodel_output_keys():
    from click.testing import CliRunner

    from rnnexport.cli import cli

    for command in ("convert", "validate", "inspect"):
        text = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
        assert "Any tensor may be named: the graph is cut there" in text, command
        assert "SavedModels: the signature's output keys, e.g. output_0" in text, command
