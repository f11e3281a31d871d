"""The catalogue of bad inputs and faults (issue 20): every one a clear refusal or a failing check,
never a traceback, never a half-written or changed export.

Each refused case asserts the exit code, one stderr line naming the file, no traceback, and that
the output directory's previous export is byte-identical with nothing added. The bad files are
built once for the module; checks that need no conversion run in-process through click's runner,
and only signals, concurrency and the fresh-interpreter checks run as processes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import catalogue_helper as poison
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, run_python, without_progress
from keras_models import build

import rnnexport
from rnnexport.cli import cli
from rnnexport.errors import OutputExistsError

SAMPLES = ROOT / "samples"
LEFTOVERS = (".rnnexport-", ".rnnexport.lock")
# Ops that reach files or Python, grafted into a frozen graph's output besides WriteFile.
SIDE_EFFECTS = ("ReadFile", "MatchingFiles", "PrintV2", "PyFunc")


def _keras_files(out: Path) -> None:
    import keras

    build("lstm").save(out / "lstm.keras")
    build("embedding").save(out / "tokens.keras")
    i = keras.Input((None, 5), name="x")
    x = keras.layers.GRU(4, return_sequences=True, name="gru")(i)
    keras.Model(i, keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)).save(out / "lambda.keras")

    @keras.saving.register_keras_serializable(package="catalogue")
    class Scale(keras.layers.Layer):
        def call(self, t):
            return t * 2.0

    keras.Model(i, Scale(name="scale")(x)).save(out / "custom.keras")
    keras.saving.get_custom_objects().pop("catalogue>Scale")
    nan = keras.Model(i, keras.layers.Dense(2, name="d")(x))
    weights = nan.get_layer("gru").get_weights()
    weights[0][0, 0] = np.nan
    nan.get_layer("gru").set_weights(weights)
    nan.save(out / "nan.keras")
    c = keras.Input((None, 4), name="x")
    conv = keras.layers.Conv1D(6, 5, padding="valid", name="conv")(c)
    keras.Model(c, keras.layers.GRU(3, name="gru")(conv)).save(out / "conv.keras")


def _damaged(out: Path) -> None:
    rng = np.random.default_rng(0)
    good = (out / "lstm.keras").read_bytes()
    (out / "empty.keras").write_bytes(b"")
    (out / "truncated.keras").write_bytes(good[: len(good) // 2])
    (out / "random.keras").write_bytes(rng.bytes(4096))
    (out / "random.h5").write_bytes(rng.bytes(4096))
    frozen = (SAMPLES / "unrolled_lstm.pb").read_bytes()
    (out / "empty.pb").write_bytes(b"")
    (out / "random.pb").write_bytes(rng.bytes(4096))
    (out / "truncated.pb").write_bytes(frozen[: len(frozen) // 3])
    shutil.copytree(SAMPLES / "tf1_tagger", out / "no_data")
    next((out / "no_data").glob("*.data-*")).unlink()
    shutil.copytree(SAMPLES / "tf1_tagger", out / "short_data")
    data = next((out / "short_data").glob("*.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    shutil.copytree(SAMPLES / "tf1_tagger", out / "no_index")
    next((out / "no_index").glob("*.index")).unlink()
    np.savez(out / "float_ids.npz", tokens=np.full((2, 5), 1.5))
    np.savez(out / "string_ids.npz", tokens=np.array([["a", "b"]]))
    np.savez(out / "wrong_key.npz", y=np.zeros((2, 5, 5), np.float32), z=np.zeros((2, 5, 5), np.float32))
    np.savez(out / "wrong_width.npz", x=np.zeros((2, 5, 3), np.float32))
    np.save(out / "single.npy", np.zeros((2, 5, 5), np.float32))
    (out / "not_npz.npz").write_bytes(rng.bytes(256))
    (out / "regular_file").write_text("a file where a directory is expected\n")
    (out / "broken.toml").write_text("[tool.rnnexport\nmodels = \n")
    # Two models read with different settings (convert in separate calls); the second's data is bad.
    (out / "two_groups.toml").write_text(
        f'[tool.rnnexport]\nlengths = [3]\nmodels = ["{out / "lstm.keras"}", '
        f'{{ source = "{out / "tokens.keras"}", data = "{out / "float_ids.npz"}" }}]\n')


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("catalogue")
    _keras_files(out)
    _damaged(out)
    victims = out / "victims"
    victims.mkdir()
    for where in ("output", "restore", "branch"):
        poison.poisoned_checkpoint(SAMPLES / "tf1_tagger", out / f"ckpt_{where}", victims / f"ckpt_{where}", where)
    for where in ("output", "branch"):
        poison.poisoned_frozen(SAMPLES / "unrolled_lstm.pb", out / f"frozen_{where}.pb", victims / f"frozen_{where}",
                               where)
    for op in SIDE_EFFECTS:
        poison.poisoned_frozen(SAMPLES / "unrolled_lstm.pb", out / f"frozen_{op}.pb", victims / op, "output", op)
    exports = out / "exports"
    rnnexport.convert(out / "lstm.keras", exports, rnnexport.ConvertOptions(validate=False))
    poison.poisoned_savedmodel(exports / "lstm.savedmodel", out / "savedmodel_output", victims / "savedmodel")
    (out / "previous.onnx").write_bytes(np.random.default_rng(2).bytes(1024))
    broken = out / "broken_exports"
    broken.mkdir()
    shutil.copytree(exports / "lstm.savedmodel", broken / "truncated.savedmodel")
    pb = broken / "truncated.savedmodel" / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:200])
    (broken / "random.onnx").write_bytes(np.random.default_rng(3).bytes(2048))
    (broken / "random.tflite").write_bytes(np.random.default_rng(1).bytes(2048))
    (broken / "empty.savedmodel").mkdir()
    return out


@pytest.fixture(scope="module")
def legacy_h5(tmp_path_factory) -> Path:
    """A Keras 2 `.h5` with a Lambda layer and one with a custom class, written by tf-keras."""
    out = tmp_path_factory.mktemp("legacy")
    script = out / "write.py"
    script.write_text(
        "import sys, tensorflow as tf\n"
        "L = tf.keras.layers\n"
        "i = tf.keras.Input((None, 5), name='x')\n"
        "x = L.GRU(4, return_sequences=True, name='gru')(i)\n"
        "tf.keras.Model(i, L.Lambda(lambda t: t * 2.0, name='double')(x)).save(sys.argv[1] + '/lambda.h5')\n"
        "class Scale(L.Layer):\n"
        "    def call(self, t):\n"
        "        return t * 2.0\n"
        "tf.keras.Model(i, Scale(name='scale')(x)).save(sys.argv[1] + '/custom.h5')\n")
    run_python(script, str(out), legacy_keras=True)
    return out


def _snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` (hidden ones too) with its content's hash."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(directory.rglob("*"))}


@pytest.fixture
def previous(files, tmp_path) -> Path:
    """An output directory holding a previous export, as a user's has."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(files / "previous.onnx", out / "previous.onnx")
    return out


def _one_line_naming(stderr: str, named: str) -> None:
    """One line of error, naming `named`. A bad option is click's usage error: its error line
    follows click's own two-line reminder of the usage."""
    lines = [line for line in without_progress(stderr) if line.strip() and not line.startswith(("Usage: ", "Try '"))]
    assert len(lines) == 1, stderr
    assert named in lines[0], (named, stderr)
    assert "Traceback" not in stderr and "internal error" not in stderr


def _no_leftovers(out: Path) -> None:
    if out.is_dir():
        assert not [p.name for p in out.iterdir() if p.name.startswith(LEFTOVERS)]


# (name, arguments with {f} for the files and {out} for the output directory, exit code, what stderr names)
REFUSED = [
    ("missing source", ["convert", "{f}/nowhere.keras"], "nowhere.keras"),
    ("empty .keras", ["convert", "{f}/empty.keras"], "empty.keras"),
    ("truncated .keras", ["convert", "{f}/truncated.keras"], "truncated.keras"),
    ("random .keras", ["convert", "{f}/random.keras"], "random.keras"),
    ("random .h5", ["convert", "{f}/random.h5"], "random.h5"),
    ("empty .pb", ["convert", "{f}/empty.pb"], "empty.pb"),
    ("random .pb", ["convert", "{f}/random.pb"], "random.pb"),
    ("truncated .pb", ["convert", "{f}/truncated.pb"], "truncated.pb"),
    ("checkpoint without .data", ["convert", "{f}/no_data"], "no_data/model.ckpt"),
    ("checkpoint with truncated .data", ["convert", "{f}/short_data"], "short_data/model.ckpt"),
    ("checkpoint without .index", ["convert", "{f}/no_index"], "no_index"),
    ("wrong --outputs name", ["convert", str(SAMPLES / "tf1_tagger"), "--outputs", "nothere:0"], "tf1_tagger"),
    ("wrong --inputs name", ["convert", str(SAMPLES / "unrolled_lstm.pb"), "--inputs", "nothere"], "unrolled_lstm.pb"),
    ("--data float64 token ids", ["convert", "{f}/tokens.keras", "--data", "{f}/float_ids.npz"], "float_ids.npz"),
    ("--data strings", ["convert", "{f}/tokens.keras", "--data", "{f}/string_ids.npz"], "string_ids.npz"),
    ("--data without the input's key", ["convert", "{f}/lstm.keras", "--data", "{f}/wrong_key.npz"], "wrong_key.npz"),
    ("--data of the wrong width", ["convert", "{f}/lstm.keras", "--data", "{f}/wrong_width.npz"], "wrong_width.npz"),
    ("--data a single .npy", ["convert", "{f}/lstm.keras", "--data", "{f}/single.npy"], "single.npy"),
    ("--data not an archive", ["convert", "{f}/lstm.keras", "--data", "{f}/not_npz.npz"], "not_npz.npz"),
    ("lengths the source cannot run", ["convert", "{f}/conv.keras", "--lengths", "1,2"], "conv.keras"),
    ("--out under a regular file", ["convert", "{f}/lstm.keras", "--out", "{f}/regular_file/out"], "regular_file"),
    ("--out a regular file", ["convert", "{f}/lstm.keras", "--out", "{f}/regular_file"], "regular_file"),
    ("--report under a regular file", ["convert", "{f}/lstm.keras", "--report", "{f}/regular_file/r.json"],
     "regular_file/r.json"),
    ("--junit under a regular file", ["convert", "{f}/lstm.keras", "--junit", "{f}/regular_file/r.xml"],
     "regular_file/r.xml"),
    ("--markdown under a regular file", ["convert", "{f}/lstm.keras", "--markdown", "{f}/regular_file/r.md"],
     "regular_file/r.md"),
    ("--html under a regular file", ["validate", "{f}/lstm.keras", "{f}/exports/lstm.savedmodel", "--html",
                                     "{f}/regular_file/r.html"], "regular_file/r.html"),
    ("--out with a target suffix, two targets", ["convert", "{f}/lstm.keras", "--out", "{out}/m.onnx", "--to", "all"],
     "m.onnx"),
    ("existing export without --force", ["convert", "{f}/lstm.keras", "--out", "{out}/previous.onnx", "--to", "onnx"],
     "--force"),
    ("unknown target", ["convert", "{f}/lstm.keras", "--to", "nope"], "nope"),
    ("zero length", ["convert", "{f}/lstm.keras", "--lengths", "0"], "--lengths"),
    ("lengths not numbers", ["convert", "{f}/lstm.keras", "--lengths", "a,b"], "--lengths"),
    ("unknown target option value", ["convert", "{f}/lstm.keras", "--to", "tflite", "--quantize", "int3"], "int3"),
    ("broken config file", ["convert", "--config", "{f}/broken.toml"], "broken.toml"),
    ("config whose second model's data is bad", ["convert", "--config", "{f}/two_groups.toml", "--out", "{out}"],
     "float_ids.npz"),
    ("Lambda layer without --unsafe", ["convert", "{f}/lambda.keras"], "lambda.keras: layer 'double'"),
    ("custom class Keras cannot find", ["convert", "{f}/custom.keras"], "custom.keras: layer 'scale'"),
    ("checkpoint whose output writes a file", ["convert", "{f}/ckpt_output"], "'exfiltrate' (WriteFile)"),
    ("checkpoint whose restore writes a file", ["convert", "{f}/ckpt_restore"], "'exfiltrate' (WriteFile)"),
    ("frozen graph whose output writes a file", ["convert", "{f}/frozen_output.pb"], "'exfiltrate' (WriteFile)"),
    ("SavedModel whose signature writes a file", ["convert", "{f}/savedmodel_output"], "WriteFile"),
    *((f"frozen graph whose output runs {op}", ["convert", f"{{f}}/frozen_{op}.pb"], f"'exfiltrate' ({op})")
      for op in SIDE_EFFECTS),
]


@pytest.mark.parametrize("name, args, named", REFUSED, ids=[case[0] for case in REFUSED])
def test_refused_in_one_line_with_nothing_written(files, previous, name, args, named):
    argv = [a.format(f=files, out=previous) for a in args]
    if argv[0] == "convert" and "--out" not in argv and "--config" not in argv:
        argv += ["--out", str(previous)]
    before = _snapshot(previous)
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, (result.exit_code, result.output)
    _one_line_naming(result.stderr, named)
    assert "Error" in result.stderr
    assert _snapshot(previous) == before
    assert not list((files / "victims").iterdir())


def test_untrusted_graph_branches_the_outputs_never_reach_are_not_run(files, tmp_path):
    for source in ("ckpt_branch", "frozen_branch.pb"):
        result = CliRunner().invoke(cli, ["convert", str(files / source), "--out", str(tmp_path), "--lengths", "3",
                                          "--batches", "1"])
        assert result.exit_code == 0, result.output
    assert not list((files / "victims").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_branch.savedmodel", "frozen_branch.savedmodel"]


def test_the_refused_savedmodel_writes_its_file_when_run_and_unsafe_lifts_the_refusal(files):
    """The poisoned SavedModel is a real threat: TensorFlow running its signature writes the file
    (which the refusals above kept from happening). With --unsafe it is the user's to trust."""
    import tensorflow as tf

    victim = files / "victims" / "savedmodel"
    try:
        result = CliRunner().invoke(cli, ["inspect", str(files / "savedmodel_output"), "--unsafe"])
        assert result.exit_code == 0, result.output
        signature = tf.saved_model.load(str(files / "savedmodel_output")).signatures["serving_default"]
        signature(x=tf.zeros([1, 3, 5]))
        assert victim.read_text() == "pwned"
    finally:
        victim.unlink(missing_ok=True)


@pytest.mark.parametrize("source", ["lambda.h5", "custom.h5"])
def test_keras2_refusals_name_the_file_and_the_layer(legacy_h5, source, tmp_path):
    layer = {"lambda.h5": "double", "custom.h5": "scale"}[source]
    result = CliRunner().invoke(cli, ["convert", str(legacy_h5 / source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    _one_line_naming(result.stderr, f"{source}: layer '{layer}'")
    assert not (tmp_path / "out").exists()


def test_corrupt_exports_fail_validation_with_a_reason(files):
    broken = files / "broken_exports"
    names = ("truncated.savedmodel", "random.onnx", "random.tflite", "empty.savedmodel")
    result = CliRunner().invoke(cli, ["validate", str(files / "lstm.keras"), *(str(broken / n) for n in names),
                                      "--lengths", "3"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for name in names:
        line = next(line for line in result.stdout.splitlines() if "FAIL" in line and f" {name}:" in line)
        assert "cannot" in line or "not" in line, line


def test_an_export_under_validation_is_not_run_when_it_would_write_a_file(files, tmp_path):
    """An export is as untrusted as a source: a SavedModel whose signature writes a file fails
    validation naming the op, and the file never appears."""
    victim = tmp_path / "victim"
    evil = poison.poisoned_savedmodel(files / "exports" / "lstm.savedmodel", tmp_path / "evil.savedmodel", victim)
    result = CliRunner().invoke(cli, ["validate", str(files / "lstm.keras"), str(evil), "--lengths", "3"])
    assert result.exit_code == 1, result.output
    line = next(line for line in result.stdout.splitlines() if "FAIL" in line and "evil.savedmodel" in line)
    assert "WriteFile" in line and "Traceback" not in result.output
    assert not victim.exists()


def test_not_enough_free_space_is_refused_before_anything_is_written(files, tmp_path):
    """On a 1 MiB file system the exports cannot fit: exit 2, one line, nothing written."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        result = subprocess.run([sys.executable, "-m", "rnnexport", "convert", str(files / "lstm.keras"), "--to",
                                 "all", "--out", str(small / "out")], capture_output=True, text=True, timeout=600)
        assert result.returncode == 2, result.stderr
        _one_line_naming(result.stderr, str(small / "out"))
        assert "MiB free on this disk" in result.stderr
        assert not (small / "out").exists() or not any((small / "out").iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_nan_weights_fail_and_are_reported_as_nan(files, tmp_path):
    result = CliRunner().invoke(cli, ["convert", str(files / "nan.keras"), "--out", str(tmp_path), "--to",
                                      "savedmodel", "--lengths", "3", "--batches", "1", "-v"])
    assert result.exit_code == 1, result.output
    assert "NaN/Inf: 6 in export, 6 in reference" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("nan.keras"))
    assert "NaN/Inf" in row and row.rstrip().endswith("FAIL")
    # The export reproduces its source's NaN layer by layer: no layer diverges with a finite error.
    assert "max abs err 0" not in result.stdout and "first diverging layer" not in result.stdout
    _no_leftovers(tmp_path)


def test_out_with_a_target_suffix_names_the_export(files, tmp_path):
    named = tmp_path / "exports" / "m.savedmodel"
    result = CliRunner().invoke(cli, ["convert", str(files / "lstm.keras"), "--out", str(named), "--no-validate"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["m.savedmodel"]
    assert (named / "saved_model.pb").is_file()


def test_api_errors_speak_the_api_language(files, previous):
    with pytest.raises(OutputExistsError, match=r"previous.onnx: already exists; pass force=True to overwrite"):
        rnnexport.convert(files / "lstm.keras", previous / "previous.onnx", rnnexport.ConvertOptions(targets=("onnx",)))


def _python(code: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _convert(out: Path, *sources: Path) -> subprocess.Popen:
    args = [str(s) for s in sources] + ["--out", str(out), "--lengths", "3,40", "--batches", "1"]
    # A terminal's Ctrl-C reaches a process whose SIGINT is not ignored, as a test worker's may be.
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"from rnnexport.cli import main; sys.argv = ['rnnexport', 'convert', *{args!r}]; main()")
    return _python(code, out.parent)


def _signal_when_writing(runs: dict[str, subprocess.Popen], outs: dict[str, Path],
                         signals: dict[str, signal.Signals]) -> None:
    """Send each run its signal as soon as it has started writing its exports under its directory.
    The runs are watched all at once: one left waiting while another was watched could reach the
    end of its run (its last writes record the verdict) and exit before its signal came."""
    waiting = dict(runs)
    deadline = time.monotonic() + 240
    while waiting and time.monotonic() < deadline:
        for name, process in list(waiting.items()):
            if process.poll() is not None:
                raise AssertionError(f"{name}: the run ended before it was signalled: {process.communicate()}")
            if any(p.name.startswith(f".rnnexport-{process.pid}-") for p in outs[name].iterdir()):
                process.send_signal(signals[name])
                del waiting[name]
        time.sleep(0.05)
    assert not waiting, f"never started writing: {sorted(waiting)}"


def test_signals_kill_and_concurrent_runs(files, tmp_path):
    """SIGINT and SIGTERM exit 130 and 143 saying what is complete; SIGKILL leaves temporaries named
    by the dead process, which the next run removes; two runs at once on one directory end with one
    complete export and one clear refusal. Each output directory held a previous export, unchanged.
    (One test, so that the processes' TensorFlow start-ups overlap.)"""
    sources = [files / "lstm.keras", files / "tokens.keras"]
    outs = {name: tmp_path / name for name in ("int", "term", "kill")}
    for out in outs.values():
        out.mkdir()
        shutil.copy(files / "previous.onnx", out / "previous.onnx")
    before = _snapshot(outs["int"])
    runs = {name: _convert(out, *sources) for name, out in outs.items()}
    # A fresh interpreter: the Python API prints nothing (TensorFlow's native logs included), and
    # the command line's refusal is the one line on the real stderr.
    fresh = _python("import sys, rnnexport; rnnexport.inspect('lstm.keras'); from rnnexport.cli import main; "
                    f"sys.argv = ['rnnexport', 'convert', 'short_data', '--out', {str(tmp_path / 'fresh')!r}]; main()",
                    files)
    _signal_when_writing(runs, outs, {"int": signal.SIGINT, "term": signal.SIGTERM, "kill": signal.SIGKILL})
    for name, code in (("int", 130), ("term", 143)):
        _, stderr = runs[name].communicate(timeout=240)
        assert runs[name].returncode == code, stderr
        assert "\n".join(without_progress(stderr.strip())) == (f"Interrupted by SIG{name.upper()}: no export was complete, none was left under its "
                                  "name; no report was written")
        assert _snapshot(outs[name]) == before
    runs["kill"].communicate(timeout=60)
    killed = runs["kill"].pid
    assert [p.name.startswith(f".rnnexport-{killed}-") for p in outs["kill"].iterdir()
            if p.name.startswith(".rnnexport-")] == [True]
    # A run killed while replacing exports with --force: one moved aside before its replacement
    # arrived (put back), one after (removed).
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (outs["kill"] / f".rnnexport-{gone.pid}-old-kept.onnx").write_bytes(b"kept")
    (outs["kill"] / f".rnnexport-{gone.pid}-old-previous.onnx").write_bytes(b"replaced")
    # Two runs on the directory the killed runs left: one writes, the other is refused.
    pair = [_convert(outs["kill"], files / "lstm.keras"), _convert(outs["kill"], files / "lstm.keras")]
    results = [(p, *p.communicate(timeout=400)) for p in pair]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [(p.returncode, err) for p, _, err in results]
    refused = next(err for p, _, err in results if p.returncode == 2)
    _one_line_naming(refused, str(outs["kill"]))
    assert "another rnnexport run" in refused or "already exists" in refused
    assert sorted(p.name for p in outs["kill"].iterdir()) == ["kept.onnx", "lstm.savedmodel", "previous.onnx"]
    assert (outs["kill"] / "kept.onnx").read_bytes() == b"kept"
    assert _snapshot(outs["kill"])["previous.onnx"] == before["previous.onnx"]
    _, stderr = fresh.communicate(timeout=240)
    assert fresh.returncode == 2
    _one_line_naming(stderr, "short_data/model.ckpt")
    assert not (tmp_path / "fresh").exists()


def test_debug_shows_the_traceback(files, tmp_path):
    result = CliRunner().invoke(cli, ["--debug", "convert", str(files / "short_data"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith(f"Error: {files / 'short_data' / 'model.ckpt'}: ")
    assert not (tmp_path / "out").exists()
