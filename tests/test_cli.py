"""The command line: exit codes, one-line errors, output files, and a fast start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnnexport.cli import cli

from conftest import ROOT, heavy_imports, rnnexport_cmd, without_progress
from keras_models import build


@pytest.fixture(scope="module")
def lstm_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "lstm.keras"
    build("lstm").save(path)
    return path


def test_help_and_plugins_do_not_import_tensorflow():
    """Every --help imports none of the heavy modules (numpy and rich included); `plugins` loads
    the source plugins, which use numpy, but no framework."""
    invoke = (
        "from click.testing import CliRunner\n"
        "from rnnexport.cli import cli\n"
        "for args in {commands!r}:\n"
        "    result = CliRunner().invoke(cli, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
    )
    helps = [["--help"], ["convert", "--help"], ["validate", "--help"], ["inspect", "--help"], ["plugins", "--help"]]
    assert heavy_imports("import rnnexport\n" + invoke.format(commands=helps)) == []
    # The table is rich's; no framework.
    assert [m for m in heavy_imports(invoke.format(commands=[["plugins"]])) if m not in ("numpy", "rich")] == []


def test_help_shows_examples_and_exit_codes():
    result = CliRunner().invoke(cli, ["--help"])
    assert "rnnexport convert model.h5 --to savedmodel --out exports/" in result.output
    assert "Exit codes: 0" in result.output
    convert_help = CliRunner().invoke(cli, ["convert", "--help"]).output
    for option in ("--to", "--out", "--force", "--no-validate", "--device", "--lengths", "--atol", "--report", "--json",
                   "--opset", "--batch", "--quantize", "--tflite-select-ops"):
        assert option in convert_help


def test_plugins_lists_builtin_source_and_target():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    rows = json.loads(result.output)
    assert {(r["group"], r["name"], r["distribution"]) for r in rows} >= {
        ("rnnexport.sources", "keras", "rnnexport"),
        ("rnnexport.targets", "savedmodel", "rnnexport"),
        ("rnnexport.targets", "onnx", "rnnexport"),
        ("rnnexport.targets", "tflite", "rnnexport"),
    }
    assert all(r["error"] is None for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "missing.keras"], "Error: missing.keras: no such file or directory"),
        (["convert", "notes.keras", "--out", "out"], "Error: notes.keras: not a Keras model file"),
        (["convert", "notes.txt", "--out", "out"], "Error: notes.txt: not a model rnnexport can read; supported sources: keras"),
        (["convert", "flat.keras", "--out", "out"], "Error: flat.keras: layer 'flatten' (Flatten) is not supported"),
        (["convert", "lstm.keras", "--to", "pdf", "--out", "out"], "Error: target 'pdf' is not supported; supported are: onnx, savedmodel, tflite"),
        (["convert", "lstm.keras", "--atol", "tflit=1e-3", "--out", "out"],
         "Error: --atol/--rtol: unknown target or output 'tflit'; known targets are: onnx, savedmodel, tflite, *; "
         "outputs are: "),
        (["validate", "lstm.keras", "lstm.keras", "--rtol", "onx=1e-3"],
         "Error: --atol/--rtol: unknown target or output 'onx'; known targets are: onnx, savedmodel, tflite, *; "
         "outputs are: "),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, lstm_file, args, message):
    import keras

    (tmp_path / "notes.keras").write_text("not a zip")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "lstm.keras").write_bytes(lstm_file.read_bytes())
    i = keras.Input((6, 2))
    keras.Model(i, keras.layers.Flatten(name="flatten")(keras.layers.LSTM(3, return_sequences=True)(i))).save(tmp_path / "flat.keras")
    result = rnnexport_cmd(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = without_progress(result.stderr.strip())
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "notes.keras").write_text("not a zip")
    result = rnnexport_cmd("--debug", "inspect", "notes.keras", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_existing_output_needs_force(tmp_path, lstm_file):
    runner = CliRunner()
    out = tmp_path / "exports"
    first = runner.invoke(cli, ["convert", str(lstm_file), "--out", str(out), "--no-validate"])
    assert first.exit_code == 0, first.output
    saved = out / "lstm.savedmodel" / "saved_model.pb"
    before = saved.stat().st_mtime_ns
    again = runner.invoke(cli, ["convert", str(lstm_file), "--out", str(out)])
    assert again.exit_code == 2
    assert f"{out / 'lstm.savedmodel'}: already exists; pass --force to overwrite" in again.output
    assert saved.stat().st_mtime_ns == before
    forced = runner.invoke(cli, ["convert", str(lstm_file), "--out", str(out), "--force", "-q"])
    assert forced.exit_code == 0 and forced.output == ""
    assert saved.stat().st_mtime_ns != before
    assert sorted(p.name for p in out.iterdir()) == ["lstm.savedmodel"]


def test_two_sources_with_one_stem_are_refused_before_writing(tmp_path, lstm_file):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "lstm.keras").write_bytes(lstm_file.read_bytes())
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "a" / "lstm.keras"), str(tmp_path / "b" / "lstm.keras"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "lstm.savedmodel: two sources would be exported to the same path" in result.output
    assert not (tmp_path / "out").exists()


def test_gpu_without_a_gpu_is_a_clear_error(lstm_file, tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(cli, ["convert", str(lstm_file), "--out", str(tmp_path), "--device", "gpu"])
    assert result.exit_code == 2
    assert "--device gpu: TensorFlow sees no GPU on this machine" in result.output
    assert not list(tmp_path.iterdir())


def test_json_report_and_device(tmp_path, lstm_file):
    result = CliRunner().invoke(cli, ["convert", str(lstm_file), "--out", str(tmp_path / "e"), "--json",
                                      "--report", str(tmp_path / "r.json"), "--lengths", "1,9,300", "--batches", "2"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    written = json.loads((tmp_path / "r.json").read_text())
    for report in (printed, written):
        assert report["schema_version"] == 3 and report["passed"] is True
        assert report["device"] == "CPU"
        assert {"tensorflow", "keras", "numpy", "python"} <= set(report["versions"])
        (export,) = report["exports"]
        assert export["device"] == "CPU (TensorFlow)"
        assert export["reference_device"] == "CPU (TensorFlow)"
        assert [(c["length"], c["batch"]) for c in export["cases"]] == [(1, 2), (1, 2), (9, 2), (300, 2)]


def test_tolerance_overrides(tmp_path, lstm_file):
    result = CliRunner().invoke(cli, ["convert", str(lstm_file), "--out", str(tmp_path), "--json",
                                      "--atol", "3e-4", "--rtol", "savedmodel=2e-3", "--lengths", "4"])
    export = json.loads(result.output)["exports"][0]
    assert export["tolerance"] == {"atol": 3e-4, "rtol": 2e-3}
    bad = CliRunner().invoke(cli, ["convert", str(lstm_file), "--out", str(tmp_path), "--atol", "x=abc"])
    assert bad.exit_code == 2 and "expected a number or TARGET=NUMBER" in bad.output


def test_user_data_from_npz(tmp_path, lstm_file):
    x = np.random.default_rng(1).standard_normal((4, 55, 5)).astype("float32")
    np.savez(tmp_path / "data.npz", x=x)
    result = CliRunner().invoke(cli, ["convert", str(lstm_file), "--out", str(tmp_path / "e"), "--json",
                                      "--data", str(tmp_path / "data.npz")])
    assert result.exit_code == 0, result.output
    case, again = json.loads(result.output)["exports"][0]["cases"]
    assert (case["kind"], case["batch"], case["length"]) == ("data", 4, 55)
    assert (again["kind"], again["batch"], again["length"], again["passed"]) == ("again", 4, 55, True)
    np.savez(tmp_path / "narrow.npz", x=x[..., :3])
    narrow = CliRunner().invoke(cli, ["convert", str(lstm_file), "--out", str(tmp_path / "g"), "--data",
                                      str(tmp_path / "narrow.npz")])
    assert narrow.exit_code == 2
    assert "narrow.npz: array 'x' has size 3 on axis 2, the model expects 5" in narrow.output
    np.savez(tmp_path / "wrong.npz", y=x[0])
    wrong = CliRunner().invoke(cli, ["convert", str(lstm_file), "--out", str(tmp_path / "f"), "--data",
                                     str(tmp_path / "wrong.npz")])
    assert wrong.exit_code == 2
    assert "wrong.npz: array 'x' has 2 dimensions, the model expects 3" in wrong.output


def test_inspect_shows_what_was_found(tmp_path):
    path = tmp_path / "fixed.keras"
    build("fixed_length").save(path)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 0
    assert "inputs:   x float32[batch, time, 5]" in result.output
    assert "length:   fixed at 12" in result.output
    # The layers as a table, under a rule of dashes.
    layers = result.output.split("layers:\n", 1)[1].splitlines()
    assert layers[0].split() == ["name", "kind", "units", "direction", "details"] and set(layers[1]) == {" ", "-"}
    assert layers[2].split() == ["gru", "GRU", "8", "forward", "return_sequences=True", "reset_after=True"]
    assert "exportable to: onnx, savedmodel, tflite" in result.output
    data = json.loads(CliRunner().invoke(cli, ["inspect", str(path), "--json"]).output)
    assert data["fixed_length"] == 12 and data["exportable"] is True


def test_tensorflow_noise_stays_off_the_terminal(tmp_path, lstm_file):
    result = rnnexport_cmd("convert", str(lstm_file), "--out", str(tmp_path), "--lengths", "3", "--batches", "1")
    assert result.returncode == 0, result.stderr
    assert "absl" not in result.stderr and "oneDNN" not in result.stderr and "cuda" not in result.stderr.lower()
    assert "PASS: 1/1 exports match their source" in result.stdout
    debug = rnnexport_cmd("--debug", "inspect", str(lstm_file))
    assert "oneDNN" in debug.stderr or "absl" in debug.stderr


def test_samples_script_and_readme_samples_exist():
    names = sorted(p.name for p in (ROOT / "samples").iterdir())
    assert names == ["bidirectional_stack.h5", "gru_fixed.keras", "kws_conv_gru.keras", "lstm_unrolled.keras",
                     "lstm_variable.keras", "make_samples.py", "tf1_tagger", "unrolled_lstm.pb"]
    assert sorted(p.name for p in (ROOT / "samples" / "tf1_tagger").iterdir()) == [
        "checkpoint", "model.ckpt.data-00000-of-00001", "model.ckpt.index", "model.ckpt.meta"]
    makefile = (ROOT / "Makefile").read_text()
    assert "--to all" in makefile and "samples/tf1_tagger" in makefile and "samples/*.pb" in makefile


def _same_shape_models(tmp_path: Path) -> None:
    """a.keras and b.keras: the same LSTM layer with other weights."""
    import keras

    build("lstm").save(tmp_path / "a.keras")
    keras.utils.set_random_seed(99)
    i = keras.Input((None, 5), name="x")
    keras.Model(i, keras.layers.LSTM(8, return_sequences=True, name="lstm")(i)).save(tmp_path / "b.keras")


def test_export_of_a_different_model_fails_validate(tmp_path):
    _same_shape_models(tmp_path)
    runner = CliRunner()
    assert runner.invoke(cli, ["convert", str(tmp_path / "b.keras"), "--out", str(tmp_path), "--no-validate",
                               "--to", "all"]).exit_code == 0
    for export in ("b.savedmodel", "b.onnx", "b.tflite"):
        result = runner.invoke(cli, ["validate", str(tmp_path / "a.keras"), str(tmp_path / export)])
        assert result.exit_code == 1, (export, result.output)
        assert "output 'lstm': max abs err" in result.output


def test_the_sweep_starts_at_the_shortest_length_the_source_can_run(tmp_path):
    import keras

    i = keras.Input((None, 4), name="x")
    x = keras.layers.Conv1D(6, 5, padding="valid", name="conv")(i)
    keras.Model(i, keras.layers.GRU(3, name="gru")(x)).save(tmp_path / "conv.keras")
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "conv.keras"), "--out", str(tmp_path / "e"), "-v"])
    assert result.exit_code == 0, result.output
    assert "the source needs at least 5 steps; the default sweep starts there" in result.output
    assert "len=5 batch=1" in result.output and "len=1 batch" not in result.output
    asked = CliRunner().invoke(cli, ["convert", str(tmp_path / "conv.keras"), "--out", str(tmp_path / "e"), "--force",
                                     "--lengths", "1,5", "--to", "onnx"])
    assert asked.exit_code == 0, asked.output
    assert "3 case(s) not checked: the source needs at least 5 steps, this case has 1" in asked.output


def test_export_with_other_inputs_names_the_mismatch(tmp_path, lstm_file):
    other = tmp_path / "tokens.keras"
    build("embedding").save(other)
    assert CliRunner().invoke(cli, ["convert", str(other), "--out", str(tmp_path), "--no-validate"]).exit_code == 0
    result = CliRunner().invoke(cli, ["validate", str(lstm_file), str(tmp_path / "tokens.savedmodel")])
    assert result.exit_code == 1
    assert "the export takes an input 'tokens' that the source does not have (source inputs: x)" in result.output


def test_junit_report_has_a_case_per_export_and_case(tmp_path):
    import xml.etree.ElementTree as ET

    _same_shape_models(tmp_path)
    runner = CliRunner()
    for source in ("a", "b"):
        assert runner.invoke(cli, ["convert", str(tmp_path / f"{source}.keras"), "--out", str(tmp_path),
                                   "--no-validate", "--to", "savedmodel", "--to", "onnx"]).exit_code == 0
    junit = tmp_path / "reports" / "parity.xml"
    result = runner.invoke(cli, ["validate", str(tmp_path / "a.keras"), str(tmp_path / "a.savedmodel"),
                                 str(tmp_path / "b.onnx"), "--lengths", "1,9", "--junit", str(junit), "-q"])
    assert result.exit_code == 1, result.output
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.attrib["tests"] == "10" and root.attrib["failures"] == "5"
    good, bad = root.findall("testsuite")
    assert good.attrib["name"] == "a.keras -> savedmodel a.savedmodel" and good.attrib["failures"] == "0"
    assert [c.attrib["name"] for c in good.findall("testcase")] == [
        "len=1 batch=1", "len=1 batch=1, again", "len=1 batch=3", "len=9 batch=1", "len=9 batch=3"]
    assert all(c.find("failure") is None and "max abs err lstm" in c.find("system-out").text
               for c in good.findall("testcase"))
    properties = {p.attrib["name"]: p.attrib["value"] for p in good.find("properties")}
    assert properties["device"] == "CPU (TensorFlow)" and properties["tolerance"] == "atol 1e-05 rtol 1e-05"
    assert bad.attrib["failures"] == "5"
    failures = [c.find("failure") for c in bad.findall("testcase")]
    assert all(f is not None and "output 'lstm': max abs err" in f.attrib["message"] for f in failures)
    assert all(c.attrib["classname"] == "rnnexport.onnx.a.keras" for c in bad.findall("testcase"))


def _run_main(code: str, *args: str) -> subprocess.CompletedProcess:
    """`rnnexport ARGS` through the console script's `entry_point`, after `code`, in a fresh
    interpreter."""
    script = (f"import sys\nfrom rnnexport.console_script import entry_point\n{code}\nsys.argv = ['rnnexport', *sys.argv[1:]]\n"
              "entry_point()\n")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)


def test_a_finished_command_exits_without_finalizing_after_its_exit_handlers():
    """The console script ends the process without tearing the interpreter down (a second once TensorFlow is
    imported): the exit handlers still run, output to a pipe arrives whole, the exit code holds;
    with a thread still working, the usual exit waits for it."""
    setup = ("import atexit\n"
             "atexit.register(lambda: print('exit handler ran'))\n"
             "class Finalized:\n"
             "    def __del__(self):\n"
             "        print('interpreter finalized')\n"
             "kept = Finalized()\n")
    listed = _run_main(setup, "plugins")
    assert listed.returncode == 0, listed.stderr
    assert "tflite" in listed.stdout and "exit handler ran" in listed.stdout
    assert "interpreter finalized" not in listed.stdout
    refused = _run_main(setup, "inspect", "missing.h5")
    assert refused.returncode == 2 and "missing.h5" in refused.stderr and "exit handler ran" in refused.stdout
    working = ("import threading, time\n"
               "threading.Thread(target=lambda: (time.sleep(1.5), print('thread finished'))).start()\n")
    waited = _run_main(working, "--version")
    assert waited.returncode == 0 and "thread finished" in waited.stdout and "version" in waited.stdout


def test_only_the_command_line_freezes_what_importing_tensorflow_made():
    """The command line imports TensorFlow with the garbage collector paused and freezes the
    import's objects (the collector scanned them for seconds); the API leaves a user's process
    alone."""
    code = "import gc\nfrom rnnexport import tf\n{}tf.tensorflow()\nprint(gc.get_freeze_count(), gc.isenabled())"
    for owned, frozen in (("tf.own_process()\n", True), ("", False)):
        result = subprocess.run([sys.executable, "-c", code.format(owned)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        count, enabled = result.stdout.split()
        assert (int(count) > 100_000) is frozen and enabled == "True"
