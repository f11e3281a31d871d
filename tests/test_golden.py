"""The gate kept in CI: golden files checked where only an export's runtime is installed (with
TensorFlow's import blocked), export against export, what the criterion measured, per-output
tolerances, --fail-fast, latency with its gates, and the HTML charts. The fixture runs the
README's commands as written."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from rnnexport.cli import cli
from rnnexport.reports import SCHEMA_FILE

from conftest import ROOT

SCHEMA = json.loads(SCHEMA_FILE.read_text())
STEM = "lstm_variable"
SECTION = "### Golden files, export against export, latency"


def _readme_commands() -> list[list[str]]:
    section = (ROOT / "README.md").read_text().split(SECTION, 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split()[1:] for line in block.splitlines() if line.startswith("rnnexport ")]


def _rnnexport(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnexport", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """The README's golden, check and compare commands, run as written on the sample."""
    work = tmp_path_factory.mktemp("golden")
    (work / "samples").symlink_to(ROOT / "samples")
    ran = [_rnnexport(*command, cwd=work) for command in _readme_commands()]
    return work, ran


def _valid(path: Path) -> dict:
    report = json.loads(path.read_text())
    jsonschema.validate(report, SCHEMA)
    return report


def test_readme_commands_run_and_the_golden_file_holds_the_sweep(readme_run):
    work, ran = readme_run
    assert len(ran) == 5
    for result in ran:
        assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr[-2000:]}"
    convert = ran[0].stdout
    assert "err/allowed" in convert and "latency in ms on this machine" in convert
    # Every export's latency at every full-sequence shape. One trace of this model (a Keras 3
    # TimeDistributed) serves its first shape and fails at a new batch, so from there the source
    # is traced per shape and timed at the longest length of each batch, with the ratio there.
    latency = convert.split("latency in ms on this machine", 1)[1]
    rows = [line.split() for line in latency.splitlines() if line.startswith("len=")]
    assert [row[0] for row in rows] == [f"len={n}" for n in (1, 1, 2, 2, 7, 7, 32, 32, 128, 128)]
    ratios = [[float(r.replace(",", "")) for r in re.findall(r"\((\S+)x\)", " ".join(row))] for row in rows]
    assert [len(found) for found in ratios] == [3, 0, 0, 0, 0, 0, 0, 0, 3, 3], rows
    assert all(row[2] == "-" for row in rows[1:8])
    # Against the compiled source an export is tens of times faster, not thousands (the eager loop).
    assert max(max(found) for found in ratios if found) < 500, rows
    assert ("the source timed as a tf.function traced once for any batch and length, as model.predict runs it; "
            "a tf.function traced for each shape timed") in convert
    assert "at the longest length of each batch only" in convert and "EAGER" not in convert

    with np.load(work / "golden.npz", allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        first = {k: npz[k] for k in npz.files if k.startswith("case0/")}
    assert meta["source_sha256"] == hashlib.sha256((ROOT / "samples" / f"{STEM}.keras").read_bytes()).hexdigest()
    assert meta["sweep"] == {"lengths": None, "batches": [1, 3], "seed": 0, "chunks": [1, 5, 17], "data": None}
    assert meta["tolerance"]["floor"] is None
    names = [c["name"] for c in meta["cases"]]
    assert names[:3] == ["len=1 batch=1", "len=1 batch=1, again", "len=1 batch=3"]
    streamed = [c for c in meta["cases"] if c["kind"] == "streaming"]
    assert [c["chunk"] for c in streamed] == [1, 5, 17, 1, 5, 17]
    assert first["case0/input/features"].shape == (1, 1, 8) and first["case0/output/scores"].shape == (1, 1, 5)


def test_check_needs_no_tensorflow(readme_run, tmp_path):
    """`check` on ONNX and TFLite files (their streaming files too) in a process where
    `import tensorflow` (and keras, tf2onnx) raises: nothing tries to import them."""
    work, _ = readme_run
    blocker = f"""
import importlib.abc, sys
attempted = []
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "tf_keras"):
            attempted.append(name)
            raise ImportError(f"{{name}} is not installed here")
sys.meta_path.insert(0, Blocked())
sys.argv = ["rnnexport", "check", "exports/{STEM}.onnx", "exports/{STEM}.tflite", "--golden", "golden.npz",
            "--report", {str(tmp_path / "r.json")!r}, "--junit", {str(tmp_path / "r.xml")!r}]
try:
    from rnnexport.cli import main
    main()
finally:
    print("ATTEMPTED", attempted, file=sys.stderr)
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", blocker], cwd=work, capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "ATTEMPTED []" in result.stderr
    assert "PASS: 2/2 exports match their source" in result.stdout
    report = _valid(tmp_path / "r.json")
    assert report["environment"]["tf32"] is None and "tensorflow" in report["versions"]
    for export in report["exports"]:
        assert export["source"] == f"samples/{STEM}.keras" and "golden.npz" in export["reference_device"]
        kinds = [c["kind"] for c in export["cases"]]
        assert kinds.count("streaming") == 6 and kinds.count("random") == 10 and export["passed"]
        assert all(c["passed"] for c in export["cases"])
        assert export["latency"]["against"] == "source"
        assert all(s["reference_median_ms"] is None and s["median_ms"] > 0 for s in export["latency"]["shapes"])
        assert export["latency"]["reference_timing"] == "" and export["latency"]["reference_eager"] == ""
    assert "<testsuites" in (tmp_path / "r.xml").read_text()


def test_check_fails_on_drift_and_refuses_what_is_not_a_golden_file(readme_run, tmp_path):
    work, _ = readme_run
    runner = CliRunner()
    with np.load(work / "golden.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"]))
    index = next(i for i, c in enumerate(meta["cases"]) if c["name"] == "len=7 batch=3")
    arrays[f"case{index}/output/scores"] = arrays[f"case{index}/output/scores"].copy()
    arrays[f"case{index}/output/scores"][2, 4, 1] += 0.01
    np.savez(tmp_path / "drifted.npz", **arrays)
    onnx = str(work / "exports" / f"{STEM}.onnx")
    drifted = runner.invoke(cli, ["check", onnx, "--golden", str(tmp_path / "drifted.npz"),
                                  "--report", str(tmp_path / "d.json")])
    assert drifted.exit_code == 1, drifted.output
    assert "scores[2, 4, 1]" in drifted.output and "len=7 batch=3" in drifted.output
    export = _valid(tmp_path / "d.json")["exports"][0]
    assert export["worst"]["case"] == "len=7 batch=3" and export["worst"]["index"] == [2, 4, 1]
    assert 490 < export["worst"]["ratio"] < 1010  # 0.01 over atol 1e-5 + rtol 1e-5 * |reference|

    (tmp_path / "not.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    for bad, message in (("not.npz", "not a golden file (not a readable .npz"),
                         ("other.npz", "not a golden file rnnexport can read"),
                         ("missing.npz", "missing.npz: no such file")):
        refused = runner.invoke(cli, ["check", onnx, "--golden", str(tmp_path / bad)])
        assert refused.exit_code == 2 and message in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1 and "Traceback" not in refused.output


def test_per_output_tolerances_unknown_names_and_fail_fast(readme_run, tmp_path):
    work, _ = readme_run
    runner = CliRunner()
    onnx, golden = str(work / "exports" / f"{STEM}.onnx"), str(work / "golden.npz")
    strict = runner.invoke(cli, ["check", onnx, "--golden", golden, "--atol", "scores=0", "--rtol", "scores=0",
                                 "--atol", "1e-3", "--report", str(tmp_path / "s.json"), "--fail-fast"])
    assert strict.exit_code == 1, strict.output
    export = _valid(tmp_path / "s.json")["exports"][0]
    assert export["tolerance"] == {"atol": 1e-3, "rtol": 1e-5, "outputs": {"scores": {"atol": 0.0, "rtol": 0.0}}}
    assert "stopped at the first failing case" in export["stopped"] and "(--fail-fast)" in strict.output
    assert len(export["cases"]) < 17
    failing = next(c for c in export["cases"] if not c["passed"])
    assert failing["outputs"][0]["worst_ratio"] is None  # an error where nothing is allowed: infinite
    assert "inf" in strict.output

    for option, value, where in (("--atol", "scorez=1e-4", "--atol/--rtol: unknown target or output 'scorez'"),
                                 ("--max-latency-ms", "onx=5", "--max-latency-ms: unknown target 'onx'"),
                                 ("--min-speedup", "tflit=2", "--min-speedup: unknown target 'tflit'")):
        bad = runner.invoke(cli, ["compare", onnx, str(work / "exports" / f"{STEM}.tflite"), option, value])
        assert bad.exit_code == 2 and where in bad.output, bad.output
        assert "known targets are: onnx, savedmodel, tflite, *" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert "scores" in runner.invoke(cli, ["check", onnx, "--golden", golden, "--rtol", "x=1"]).output


def test_compare_across_formats_and_latency_gates(readme_run, tmp_path):
    work, ran = readme_run
    html = (work / "compare.html").read_text()
    assert "chunk size" in html and "tflite lstm_variable.tflite, batch 3" in html
    runner = CliRunner()
    onnx, tflite = str(work / "exports" / f"{STEM}.onnx"), str(work / "exports" / f"{STEM}.tflite")
    result = runner.invoke(cli, ["compare", tflite, onnx, "--lengths", "3,40", "--batches", "2", "--chunks", "7",
                                 "--report", str(tmp_path / "c.json"), "--min-speedup", "1e6"])
    assert result.exit_code == 1, result.output
    export = _valid(tmp_path / "c.json")["exports"][0]
    assert export["target"] == "onnx" and export["source"] == tflite and "LiteRT" in export["reference_device"]
    assert [(c["kind"], c["length"], c.get("chunk")) for c in export["cases"]] == [
        ("random", 3, None), ("again", 3, None), ("random", 40, None), ("streaming", 64, 7)]
    assert all(c["passed"] for c in export["cases"]) and not export["latency"]["passed"]
    assert export["tolerance"] == {"atol": 2e-5, "rtol": 2e-5}  # both defaults: each may be 1e-5 off the source
    shapes = export["latency"]["shapes"]
    assert [s["case"] for s in shapes] == ["len=3 batch=2", "len=40 batch=2"]
    assert all(s["speedup"] == pytest.approx(s["reference_median_ms"] / s["median_ms"], rel=1e-2) for s in shapes)
    assert export["latency"]["reference_timing"] == f"the export {tflite} in its runtime, as the other export"
    assert "speedup over the tflite export" in result.output and "below --min-speedup 1e+06" in result.output

    slow = runner.invoke(cli, ["check", tflite, "--golden", str(work / "golden.npz"), "--max-latency-ms",
                               "tflite=1e-6", "--max-latency-ms", "onnx=1e9"])
    assert slow.exit_code == 1 and "exceeds --max-latency-ms 1e-06" in slow.output
    assert runner.invoke(cli, ["check", tflite, "--golden", str(work / "golden.npz"), "--min-speedup", "2"]
                         ).exit_code == 2

    mismatch = runner.invoke(cli, ["compare", onnx, str(work / "exports" / f"{STEM}.step.onnx")])
    assert mismatch.exit_code == 2 and "do not take and give the same tensors" in mismatch.output


class _Svg(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.charts: list[dict] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.sources += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "svg" and "aria-label" in attrs:
            self.charts.append({"label": attrs["aria-label"], "paths": [], "circles": [], "texts": []})
        elif tag == "path" and self.charts:
            self.charts[-1]["paths"].append(attrs)
        elif tag == "circle" and self.charts:
            self.charts[-1]["circles"].append(attrs)

    def handle_data(self, data):
        if self.charts:
            self.charts[-1]["texts"].append(data)


def test_html_overlays_targets_separates_batches_plots_streaming_and_draws_zero(readme_run, tmp_path):
    """Every export of the source on one chart per kind of case; the SavedModel, checked against
    the golden file with TensorFlow, streaming included."""
    work, _ = readme_run
    exports = [str(work / "exports" / f"{STEM}{suffix}") for suffix in (".savedmodel", ".onnx", ".tflite")]
    result = CliRunner().invoke(cli, ["check", *exports, "--golden", str(work / "golden.npz"), "--html",
                                      str(tmp_path / "r.html"), "--markdown", str(tmp_path / "r.md"),
                                      "--latency-repeats", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("6/6 chunked runs (chunks 1,5,17) match") == 3
    page = _Svg()
    page.feed((tmp_path / "r.html").read_text())
    assert not [s for s in page.sources if "http" in s]
    full, streaming = page.charts
    assert full["label"] == "max abs error against sequence length"
    assert streaming["label"].startswith("max abs error against chunk size")
    for chart, axis in ((full, "sequence length"), (streaming, "chunk size")):
        assert any(axis in t for t in chart["texts"]) and "max abs error (log)" in chart["texts"]
        # One line per export and batch, one colour per export.
        assert len(chart["paths"]) == 6 and len({p["stroke"] for p in chart["paths"]}) == 3
        assert len({p.get("stroke-dasharray") for p in chart["paths"]}) == 2
    # The SavedModel matches exactly: its points sit on the row labelled 0, below the log axis.
    assert "0 (exact)" in full["texts"]
    zero_row = {c["cy"] for c in full["circles"] if c["fill"] == "#0969da"}
    assert len(zero_row) == 1
    others = {float(c["cy"]) for c in full["circles"] if c["fill"] != "#0969da"}
    assert max(others) < float(zero_row.pop())
    markdown = (tmp_path / "r.md").read_text()
    assert "| err/allowed |" in markdown and "#### Latency" in markdown and "on this machine" in markdown


def test_latency_note_flags_an_eager_source_and_one_traced_per_shape_is_timed_at_the_longest_lengths():
    from rnnexport.parity.run import longest
    from rnnexport.reports.text import reference_timing
    from rnnexport.sweep import Case

    cases = [Case(f"len={n} batch={b}", kind, b, n, {}) for n in (1, 7, 40) for b in (1, 3)
             for kind in ("random", "padded")]
    assert longest(cases) == {"len=40 batch=1", "len=40 batch=3"}
    eager = reference_timing("source", "the model called eagerly", "tracing it fails: no numpy() in a graph")
    assert eager == ("the source timed as the model called eagerly; EAGER (tracing it fails: no numpy() in a graph): "
                     "its ratios measure TensorFlow's eager loop, not the source as deployed")
    assert "EAGER" not in reference_timing("source", "the graph in a TF1 Session.run", "")
    assert reference_timing("source", "", "") == "the source was not timed here"


def test_a_source_that_cannot_be_traced_is_timed_eagerly_and_flagged(tmp_path):
    """A Lambda that reads its tensor with numpy runs eagerly only: the reference falls back to
    the eager model, and the latency table says so instead of giving its ratio silently."""
    import keras

    def build(eager_only: bool):
        i = keras.Input((None, 3), name="x")
        x = keras.layers.Lambda(lambda t: t + 0.0 * float(__import__("numpy").asarray(t).sum()),
                                output_shape=(None, 3), name="numpy")(i) if eager_only else i
        return keras.Model(i, keras.layers.Dense(2, name="out")(keras.layers.GRU(4, return_sequences=True)(x)))

    keras.utils.set_random_seed(4)
    plain = build(False)
    plain.save(tmp_path / "plain.keras")
    eager = build(True)
    eager.set_weights(plain.get_weights())
    eager.save(tmp_path / "eager.keras")
    runner = CliRunner()
    made = runner.invoke(cli, ["convert", str(tmp_path / "plain.keras"), "--to", "onnx", "--out", str(tmp_path),
                               "--no-validate"])
    assert made.exit_code == 0, made.output
    checked = runner.invoke(cli, ["validate", str(tmp_path / "eager.keras"), str(tmp_path / "plain.onnx"), "--unsafe",
                                  "--lengths", "3,40", "--batches", "1", "--report", str(tmp_path / "r.json")])
    assert checked.exit_code == 0, checked.output
    latency = _valid(tmp_path / "r.json")["exports"][0]["latency"]
    assert latency["reference_eager"].startswith("tracing it fails: Cannot convert a symbolic tf.Tensor")
    assert latency["reference_timing"].startswith("the model called eagerly; at the longest length of each batch")
    assert [s["reference_median_ms"] is None for s in latency["shapes"]] == [True, False]
    assert "EAGER (tracing it fails: Cannot convert a symbolic tf.Tensor" in checked.output


@pytest.fixture(scope="module")
def int8_and_golden(tmp_path_factory):
    """A tiny classifier's float ONNX export with its golden file, and its int8 ONNX export."""
    import keras

    work = tmp_path_factory.mktemp("int8")
    keras.utils.set_random_seed(5)
    i = keras.Input((None, 4), name="x")
    dense = keras.layers.Dense(3, activation="softmax", name="probs")
    model = keras.Model(i, dense(keras.layers.LSTM(8, return_sequences=True, name="lstm")(i)))
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 6.0, bias])  # decisive class scores, as trained ones are
    model.save(work / "tiny.keras")
    np.savez(work / "calibration.npz", x=np.random.default_rng(7).standard_normal((16, 20, 4)).astype(np.float32))
    sweep = ["--lengths", "1,9,20", "--batches", "1,4", "--latency-repeats", "0"]
    runner = CliRunner()
    made = [runner.invoke(cli, ["convert", str(work / "tiny.keras"), "--to", "onnx", "--out", str(work / "float"),
                                "--save-golden", str(work / "golden.npz"), *sweep]),
            runner.invoke(cli, ["convert", str(work / "tiny.keras"), "--to", "onnx", "--quantize", "int8",
                                "--calibration", str(work / "calibration.npz"), "--out", str(work / "int8"),
                                "--no-validate"])]
    for result in made:
        assert result.exit_code == 0, result.output
    return work, sweep


def test_check_and_compare_judge_a_quantized_export_by_its_thresholds(int8_and_golden, tmp_path):
    work, sweep = int8_and_golden
    runner = CliRunner()
    golden, floating, int8 = str(work / "golden.npz"), str(work / "float" / "tiny.onnx"), str(work / "int8" / "tiny.onnx")
    # Random weights leave a few of the decisions within quantization noise of a tie, so the
    # agreement is declared here as test_quantize's is; the SNR and KL keep int8's defaults.
    passed = runner.invoke(cli, ["check", int8, "--golden", golden, "--min-agreement", "0.9", "--task", "classify",
                                 "--report", str(tmp_path / "ok.json")])
    assert passed.exit_code == 0, passed.output
    export = _valid(tmp_path / "ok.json")["exports"][0]
    assert export["details"]["quantize"] == "int8" and export["passed"]
    assert export["quantized"]["thresholds"] == {"min_snr_db": 20.0, "min_agreement": 0.9, "max_kl": 0.05}
    probs = export["quantized"]["outputs"][0]
    assert probs["class_scores"] == "softmax" and probs["snr_db"] >= 20.0 and probs["top1_agreement"] >= 0.9

    strict = runner.invoke(cli, ["check", int8, "--golden", golden, "--min-agreement", "0.9", "--min-snr", "200",
                                 "--report", str(tmp_path / "strict.json")])
    assert strict.exit_code == 1, strict.output
    judged = _valid(tmp_path / "strict.json")["exports"][0]["quantized"]["outputs"][0]
    assert judged["passed"] is False and judged["thresholds"]["min_snr_db"] == 200.0
    assert any("SNR" in reason and "200" in reason for reason in judged["reasons"]), judged["reasons"]
    assert re.search(r"output 'probs': SNR [\d.]+ dB < 200 dB", strict.output) and "FAIL: 0/1 exports" in strict.output

    # Against its float export, with no source and no golden file: the same thresholds gate it.
    against = runner.invoke(cli, ["compare", floating, int8, *sweep, "--min-agreement", "0.9"])
    assert against.exit_code == 0, against.output
    against = runner.invoke(cli, ["compare", floating, int8, *sweep, "--min-agreement", "0.9", "--max-kl", "1e-9"])
    assert against.exit_code == 1 and "KL" in against.output, against.output
    bad = runner.invoke(cli, ["check", int8, "--golden", golden, "--min-agreement", "2"])
    assert bad.exit_code == 2 and "--min-agreement" in bad.output


@pytest.fixture(scope="module")
def token_exports(tmp_path_factory):
    """A token-id model (Embedding with mask_zero, 50 ids) in every format, not validated."""
    import keras

    work = tmp_path_factory.mktemp("tokens")
    keras.utils.set_random_seed(2)
    i = keras.Input((None,), name="ids", dtype="int32")
    x = keras.layers.Embedding(50, 6, mask_zero=True, name="embed")(i)
    keras.Model(i, keras.layers.GRU(5, return_sequences=True, name="gru")(x)).save(work / "tokens.keras")
    made = CliRunner().invoke(cli, ["convert", str(work / "tokens.keras"), "--to", "all", "--out", str(work),
                                    "--no-validate"])
    assert made.exit_code == 0, made.output
    return work


def test_compare_builds_its_sweep_from_the_interface_rnnexport_stored(token_exports, tmp_path):
    from rnnexport import plugins

    work = token_exports
    for suffix in (".onnx", ".tflite", ".savedmodel"):
        path = work / f"tokens{suffix}"
        (ids,) = plugins.find_target_for(path).stored_interface(path).inputs
        assert (ids.name, ids.vocab_size, ids.mask_value, ids.time_axis) == ("ids", 50, 0.0, 1), suffix
    onnx_file, tflite = str(work / "tokens.onnx"), str(work / "tokens.tflite")
    stored = CliRunner().invoke(cli, ["compare", onnx_file, tflite, "--lengths", "4,9", "--batches", "2",
                                      "--latency-repeats", "0", "--report", str(tmp_path / "stored.json")])
    assert stored.exit_code == 0, stored.output
    assert f"interface as rnnexport stored it in {onnx_file}" in stored.output
    export = _valid(tmp_path / "stored.json")["exports"][0]
    # The mask the Embedding declares gives the padded cases (ids 0 after each row's length).
    assert [c["kind"] for c in export["cases"]].count("padded") >= 1 and export["passed"]

    import onnx

    proto = onnx.load(onnx_file)
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    onnx.save(proto, str(tmp_path / "foreign2.onnx"))
    guessed = CliRunner().invoke(cli, ["compare", str(tmp_path / "foreign.onnx"), str(tmp_path / "foreign2.onnx"),
                                       "--lengths", "4,9", "--batches", "2", "--latency-repeats", "0",
                                       "--report", str(tmp_path / "guessed.json")])
    assert guessed.exit_code == 0, guessed.output
    assert "interface read from the runtime signatures: neither export carries rnnexport's interface" in guessed.output
    export = _valid(tmp_path / "guessed.json")["exports"][0]
    assert "padded" not in [c["kind"] for c in export["cases"]]
    # One foreign file beside one of rnnexport's: the interface the other stored.
    mixed = CliRunner().invoke(cli, ["compare", str(tmp_path / "foreign.onnx"), tflite, "--lengths", "4",
                                     "--batches", "2", "--latency-repeats", "0"])
    assert mixed.exit_code == 0 and f"interface as rnnexport stored it in {tflite}" in mixed.output, mixed.output

    entry = proto.metadata_props.add()
    entry.key, entry.value = "rnnexport.interface", '{"inputs": [{"nam": "ids"}]}'
    onnx.save(proto, str(tmp_path / "garbled.onnx"))
    garbled = CliRunner().invoke(cli, ["compare", str(tmp_path / "garbled.onnx"), tflite])
    assert garbled.exit_code == 2 and "Traceback" not in garbled.output, garbled.output
    assert f"{tmp_path / 'garbled.onnx'}: the interface rnnexport stored in it cannot be read" in garbled.output
