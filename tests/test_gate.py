"""The pre-deployment gate: the config file, every report format read back, drift located to a
layer and a time step, determinism, and exports that are broken in every way a CI run meets."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from rnnexport.cli import cli
from rnnexport.reports import SCHEMA_FILE

from conftest import rnnexport_cmd

SCHEMA = json.loads(SCHEMA_FILE.read_text())
ZERO_STEPS = 9


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory) -> Path:
    """A directory with two.keras (LSTM, LSTM, Dense) and its ONNX, TFLite and SavedModel exports."""
    import keras

    out = tmp_path_factory.mktemp("gate")
    keras.utils.set_random_seed(5)
    i = keras.Input((None, 4), name="x")
    x = keras.layers.LSTM(6, return_sequences=True, name="lstm_1")(i)
    x = keras.layers.LSTM(5, return_sequences=True, name="lstm_2")(x)
    keras.Model(i, keras.layers.Dense(3, name="out")(x)).save(out / "two.keras")
    result = CliRunner().invoke(cli, ["convert", str(out / "two.keras"), "--to", "onnx", "--to", "tflite",
                                      "--to", "savedmodel", "--out", str(out), "--no-validate"])
    assert result.exit_code == 0, result.output
    return out


def _valid(report: dict) -> dict:
    jsonschema.validate(report, SCHEMA)
    return report


def _reparse_all(json_path: Path, junit_path: Path, markdown_path: Path, html_path: Path) -> dict:
    """Read every report format back; returns the JSON, checked against its schema."""
    report = _valid(json.loads(json_path.read_text()))
    root = ET.parse(junit_path).getroot()
    cases = sum(len(e["cases"]) + (1 if e["error"] else 0) for e in report["exports"])
    assert root.tag == "testsuites" and int(root.attrib["tests"]) == cases
    assert len(root.findall("testsuite")) == len(report["exports"])
    markdown = markdown_path.read_text()
    table = markdown.split("| source |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == len(report["exports"])
    page = _Page()
    page.feed(html_path.read_text())
    # Per source, one chart of every export's error against length, one against chunk size.
    charts = {(e["source"], c["kind"] == "streaming") for e in report["exports"] for c in e["cases"]
              if not c["skipped"] and c["length"] is not None}
    assert page.tags.get("svg", 0) == len(charts)
    assert "http" not in "".join(page.sources), "the HTML report must not fetch anything"
    return report


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.sources: list[str] = []
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.sources += [v for k, v in attrs if k in ("src", "href") and v]
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.titles.append(data)


def test_config_file_end_to_end(two_layers, tmp_path, monkeypatch):
    """[tool.rnnexport] in ./pyproject.toml converts and checks; the command line overrides it."""
    (tmp_path / "pyproject.toml").write_text(f"""
[project]
name = "my-models"

[tool.rnnexport]
models = ["{two_layers / 'two.keras'}"]
targets = ["onnx", "tflite"]
out = "exports"
lengths = [1, 12]
batches = [2]
seed = 3

[tool.rnnexport.tolerance."*"]
tflite = {{ atol = 2e-5 }}

[tool.rnnexport.tolerance.cpu]
tflite = {{ rtol = 3e-5 }}

[tool.rnnexport.reports]
json = "reports/parity.json"
junit = "reports/parity.xml"
markdown = "reports/parity.md"
html = "reports/parity.html"
""")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    converted = runner.invoke(cli, ["convert", "-q"])
    assert converted.exit_code == 0, converted.output
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["two.onnx", "two.tflite"]
    checked = runner.invoke(cli, ["validate", "--lengths", "1,5", "--atol", "onnx=4e-5", "-q"])
    assert checked.exit_code == 0, checked.output
    reports = tmp_path / "reports"
    report = _reparse_all(reports / "parity.json", reports / "parity.xml", reports / "parity.md",
                          reports / "parity.html")
    assert report["passed"] and report["seed"] == 3
    onnx, tflite = report["exports"]
    assert (onnx["target"], tflite["target"]) == ("onnx", "tflite")
    assert [(c["length"], c["batch"]) for c in onnx["cases"]] == [(1, 2), (1, 2), (5, 2)]
    assert onnx["tolerance"] == {"atol": 4e-5, "rtol": 1e-5}
    assert tflite["tolerance"] == {"atol": 2e-5, "rtol": 3e-5}


def test_readme_config_example_is_a_valid_config():
    import tomllib

    from conftest import ROOT
    from rnnexport import config

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Config file"):readme.index("### Reports")]
    text = section.split("```toml\n", 1)[1].split("```", 1)[0]
    parsed = config.parse(ROOT / "pyproject.toml", tomllib.loads(text)["tool"]["rnnexport"])
    assert [m.source.name for m in parsed.models] == ["tagger.keras", "kws.pb", "asr.keras"]
    assert parsed.models[2].atol == (("logits", 1e-4), ("tflite", 1e-3))
    assert parsed.models[2].max_latency_ms == (("tflite", 20.0),)
    assert parsed.models[1].inputs == ("Mfcc:0",) and parsed.targets == ("savedmodel", "onnx", "tflite")
    assert set(parsed.reports) == {"json", "junit", "markdown", "html"}


def test_config_given_with_config_and_per_model_settings(two_layers, tmp_path):
    config = tmp_path / "gate.toml"
    config.write_text(f"""
device = "cpu"
batches = [1]
lengths = [7]

[[models]]
source = "{two_layers / 'two.keras'}"
exports = ["{two_layers / 'two.onnx'}"]
""")
    result = CliRunner().invoke(cli, ["validate", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    (export,) = _valid(json.loads(result.output))["exports"]
    assert [(c["length"], c["batch"]) for c in export["cases"]] == [(7, 1), (7, 1)]


def test_config_models_read_differently_are_checked_together_before_writing(two_layers, tmp_path):
    """Models with their own settings convert in separate calls; two with one stem still collide."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "two.keras").write_bytes((two_layers / "two.keras").read_bytes())
    config = tmp_path / "gate.toml"
    config.write_text(f"""
out = "{tmp_path / 'out'}"
models = ["{tmp_path / 'a' / 'two.keras'}", {{ source = "{tmp_path / 'b' / 'two.keras'}", unsafe = true }}]
""")
    result = CliRunner().invoke(cli, ["convert", "--config", str(config)])
    assert result.exit_code == 2
    assert "two.savedmodel: two sources would be exported to the same path" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ("lenghts = [1]", "[tool.rnnexport] 'lenghts': unknown key; known keys are: models, targets"),
    ("lengths = \"1,2\"", "[tool.rnnexport] 'lengths': expected a non-empty list of positive integers, got '1,2'"),
    ("batches = [0]", "[tool.rnnexport] 'batches': expected a non-empty list of positive integers, got [0]"),
    ("seed = 1.5", "[tool.rnnexport] 'seed': expected an integer >= 0, got 1.5"),
    ("device = \"tpu\"", "[tool.rnnexport] 'device': expected one of auto, cpu, gpu, got 'tpu'"),
    ("targets = [\"pdf\"]", "[tool.rnnexport] 'targets': unknown target 'pdf'"),
    ("models = [{ exports = [\"m.onnx\"] }]", "[tool.rnnexport.models[0]] 'source': missing"),
    ("models = [{ source = \"m.keras\", export = [\"m.onnx\"] }]", "[tool.rnnexport.models[0]] 'export': unknown key"),
    ("[tolerance.cpu]\nonnx = { atl = 1e-4 }", "[tool.rnnexport.tolerance.cpu.onnx] 'atl': unknown key"),
    ("[tolerance.cpu]\nonnx = { atol = -1 }", "[tool.rnnexport.tolerance.cpu.onnx] 'atol': expected a non-negative"),
    ("[tolerance.tpu]", "[tool.rnnexport.tolerance] 'tpu': unknown key; known keys are: *, cpu, gpu"),
    ("[reports]\nxml = \"r.xml\"", "[tool.rnnexport.reports] 'xml': unknown key; known keys are: json, junit"),
    ("models = [{ source = \"m.keras\", max_latency_ms = { tflit = 5 } }]",
     "[tool.rnnexport.models[0]] 'max_latency_ms': unknown target 'tflit'; known targets are: onnx, savedmodel"),
    ("models = [{ source = \"m.keras\", min_speedup = { onnx = 0 } }]",
     "[tool.rnnexport.models[0]] 'min_speedup': 'onnx': expected a positive number, got 0"),
    ("models = [{ source = \"m.keras\", atol = 1e-4 }]",
     "[tool.rnnexport.models[0]] 'atol': expected a table of NAME = number, NAME a target, output or *"),
    ("lengths = [1", "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, text, message):
    config = tmp_path / "gate.toml"
    config.write_text(text + "\n")
    result = CliRunner().invoke(cli, ["validate", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {config}: ") and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_config_per_model_tolerances_per_output_and_latency_gates_per_target(two_layers, tmp_path):
    """What the command line takes per output or target, a model of the config file declares;
    the command line still wins, and a name that is no target or output of the model is refused
    naming the file and the model, with workers too."""
    config = tmp_path / "gate.toml"
    config.write_text(f"""batches = [2]
lengths = [3]

[[models]]
source = "{two_layers / 'two.keras'}"
exports = ["{two_layers / 'two.onnx'}", "{two_layers / 'two.tflite'}"]
atol = {{ out = 2e-4, tflite = 1e-3 }}
rtol = {{ out = 0 }}
max_latency_ms = {{ tflite = 1e-9 }}
""")
    result = CliRunner().invoke(cli, ["validate", "--config", str(config), "--json", "--latency-repeats", "1"])
    assert result.exit_code == 1, result.output
    onnx, tflite = _valid(json.loads(result.output))["exports"]
    assert onnx["tolerance"] == {"atol": 1e-5, "rtol": 1e-5, "outputs": {"out": {"atol": 2e-4, "rtol": 0.0}}}
    assert tflite["tolerance"] == {"atol": 1e-3, "rtol": 1e-5, "outputs": {"out": {"atol": 2e-4, "rtol": 0.0}}}
    assert onnx["passed"] and onnx["latency"]["gate"]["max_ms"] is None
    assert tflite["latency"]["gate"]["max_ms"] == 1e-9 and not tflite["latency"]["passed"]
    assert all(c["passed"] for c in tflite["cases"]) and not tflite["passed"]
    # The command line over the model: --atol out=... over its output's, a gate for every target.
    over = CliRunner().invoke(cli, ["validate", "--config", str(config), "--json", "--latency-repeats", "1",
                                    "--max-latency-ms", "1e9", "--atol", "out=3e-4"])
    assert over.exit_code == 0, over.output
    for export in json.loads(over.output)["exports"]:
        assert export["tolerance"]["outputs"] == {"out": {"atol": 3e-4, "rtol": 0.0}}
        assert export["latency"]["gate"]["max_ms"] == 1e9

    config.write_text(config.read_text().replace("out = 2e-4", "scorez = 2e-4"))
    for workers in ([], ["--jobs", "1"]):
        refused = CliRunner().invoke(cli, ["validate", "--config", str(config), *workers])
        assert refused.exit_code == 2 and "Traceback" not in refused.output, refused.output
        # After the progress lines (stderr), one line.
        assert refused.output.strip().splitlines()[-1] == (
            f"Error: {config}: [tool.rnnexport.models[0]] model '{two_layers / 'two.keras'}' atol/rtol: unknown target "
            "or output 'scorez'; known targets are: onnx, savedmodel, tflite, *; outputs are: out"), refused.output


def _plant_onnx(two_layers: Path, tmp_path: Path) -> Path:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(two_layers / "two.onnx"))
    node = next(n for n in proto.graph.node if n.op_type == "LSTM" and n.name.startswith("lstm_2"))
    weights = next(i for i in proto.graph.initializer if i.name == node.input[1])
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * np.float32(1.05), weights.name))
    planted = tmp_path / "planted.onnx"
    onnx.save(proto, str(planted))
    return planted


def _plant_savedmodel(two_layers: Path, tmp_path: Path) -> Path:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(two_layers / "two.savedmodel"))
    serving = loaded.signatures["serving_default"]
    kernel = next(v for v in serving.variables if v.name.startswith("lstm_2/lstm_cell/kernel"))
    kernel.assign(kernel * 1.05)
    planted = tmp_path / "planted.savedmodel"
    tf.saved_model.save(loaded, str(planted), signatures={"serving_default": serving})
    return planted


@pytest.mark.parametrize("plant", [_plant_onnx, _plant_savedmodel], ids=["onnx", "savedmodel"])
def test_drift_planted_in_one_layer_is_located_to_it(two_layers, tmp_path, plant):
    """The export's lstm_2 input weights are off by 5% and the inputs are zero for ZERO_STEPS steps:
    lstm_1's output stays exactly 0 until then, so lstm_2 (and the output) drift from that step."""
    planted = plant(two_layers, tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 24, 4)).astype(np.float32)
    x[:, :ZERO_STEPS] = 0
    data = tmp_path / "zeros_first.npz"
    np.savez(data, x=x)
    reports = {kind: tmp_path / f"parity.{kind}" for kind in ("json", "xml", "md", "html")}
    result = CliRunner().invoke(cli, [
        "validate", str(two_layers / "two.keras"), str(planted), "--data", str(data),
        "--report", str(reports["json"]), "--junit", str(reports["xml"]), "--markdown", str(reports["md"]),
        "--html", str(reports["html"])])
    assert result.exit_code == 1, result.output
    report = _reparse_all(reports["json"], reports["xml"], reports["md"], reports["html"])
    drift = report["exports"][0]["drift"]
    assert (drift["output"], drift["first_bad_step"], drift["first_layer"]) == ("out", ZERO_STEPS, "lstm_2")
    layers = {layer["name"]: layer for layer in drift["layers"]}
    assert list(layers) == ["lstm_1", "lstm_2", "out"]
    assert layers["lstm_1"]["matches"] is True and layers["lstm_1"]["max_abs"] < 1e-6
    assert layers["lstm_2"]["matches"] is False and layers["lstm_2"]["first_bad_step"] == ZERO_STEPS
    assert layers["lstm_2"]["max_abs"] > 1e-3
    where = (f"first diverging layer 'lstm_2' (LSTM) from time step {ZERO_STEPS}")
    assert where in result.output and where in reports["md"].read_text() and where in reports["html"].read_text()
    assert "layers before it match: lstm_1" in result.output


def test_tflite_probe_finds_every_layer_of_a_good_export(two_layers):
    """The TFLite interpreter's kept tensors reproduce each layer of the source, so a drift there
    would be located as it is in ONNX."""
    from rnnexport_converters.tflite.runtime import TfliteProbe
    from rnnexport.api import _open
    from rnnexport.options import SourceOptions
    from rnnexport.tolerance import Tolerance
    from rnnexport.parity import compare_layers

    x = np.random.default_rng(1).standard_normal((1, 11, 4)).astype(np.float32)
    layers = _open(two_layers / "two.keras", SourceOptions()).layer_outputs({"x": x})
    found = compare_layers(layers, TfliteProbe(two_layers / "two.tflite").tensors({"x": x}), Tolerance(1e-5, 1e-5))
    assert [(f.name, f.matches) for f in found] == [("lstm_1", True), ("lstm_2", True), ("out", True)]


def test_same_config_and_seed_give_the_same_report(two_layers, tmp_path):
    reports = []
    for run in range(2):
        path = tmp_path / f"run{run}.json"
        result = rnnexport_cmd("validate", str(two_layers / "two.keras"), str(two_layers / "two.onnx"),
                               str(two_layers / "two.tflite"), "--seed", "11", "--lengths", "3,40", "--report",
                               str(path), "-q")
        assert result.returncode == 0, result.stderr
        report = _valid(json.loads(path.read_text()))
        for export in report["exports"]:
            assert export.pop("timing")["seconds"] > 0
            # Wall times: the same shapes are timed, the milliseconds differ from run to run.
            latency = export.pop("latency")
            assert [(s["case"], s["median_ms"] > 0) for s in latency["shapes"]] == [
                (f"len={n} batch={b}", True) for n in (3, 40) for b in (1, 3)]
            # The source timed like the exports, compiled: tens of times slower than they are, not thousands.
            assert latency["reference_timing"] == ("a tf.function traced once for any batch and length, as "
                                                   "model.predict runs it") and latency["reference_eager"] == ""
            assert all(0 < s["speedup"] < 500 and s["reference_median_ms"] > 0 for s in latency["shapes"]), latency
        reports.append(report)
    assert reports[0] == reports[1]
    environment = reports[0]["environment"]
    assert environment["tf32"] in (True, False) and isinstance(environment["onednn"], bool)
    assert "CPUExecutionProvider" in environment["onnxruntime_providers"]
    assert {"tensorflow", "keras", "tf2onnx", "onnxruntime", "ai-edge-litert", "numpy"} <= set(reports[0]["versions"])
    assert [e["device"] for e in reports[0]["exports"]] == [
        "CPU (onnxruntime CPUExecutionProvider)", "CPU (LiteRT, XNNPACK delegate)"]


def _broken_exports(two_layers: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Exports broken in each way a gate meets, and what the report must say of each."""
    import onnx

    onnx_bytes = (two_layers / "two.onnx").read_bytes()
    tflite_bytes = (two_layers / "two.tflite").read_bytes()
    cases = {}
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_bytes[: len(onnx_bytes) // 2])
    cases["truncated onnx"] = (truncated, "onnxruntime cannot load it")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(tflite_bytes[:8] + bytes(b ^ 0x5A for b in tflite_bytes[8:200]) + tflite_bytes[200:])
    cases["corrupted tflite"] = (corrupt, f"{corrupt}: not a readable TFLite flatbuffer")
    wrong = tmp_path / "actually_tflite.onnx"
    wrong.write_bytes(tflite_bytes)
    cases["wrong format"] = (wrong, "onnxruntime cannot load it")
    unknown = tmp_path / "model.bin"
    unknown.write_bytes(b"\x00" * 64)
    cases["unknown format"] = (unknown, "not an export rnnexport can run")
    empty_savedmodel = tmp_path / "broken.savedmodel"
    empty_savedmodel.mkdir()
    (empty_savedmodel / "saved_model.pb").write_bytes(b"not a protobuf")
    cases["corrupted savedmodel"] = (empty_savedmodel, "cannot load the SavedModel")
    proto = onnx.load(str(two_layers / "two.onnx"))
    # out = log(-|out|): NaN, or -Inf where out is 0.
    last = next(n for n in proto.graph.node if "out" in n.output)
    last.output[list(last.output).index("out")] = "out_raw"
    proto.graph.node.extend([onnx.helper.make_node("Abs", ["out_raw"], ["out_abs"]),
                             onnx.helper.make_node("Neg", ["out_abs"], ["out_neg"]),
                             onnx.helper.make_node("Log", ["out_neg"], ["out"])])
    nan = tmp_path / "nan.onnx"
    onnx.save(proto, str(nan))
    cases["NaN outputs"] = (nan, "NaN/Inf: 12 in export, 0 in reference")
    cases["missing export"] = (tmp_path / "gone.onnx", "gone.onnx: no such file or directory")
    return cases


def test_broken_exports_fail_with_a_reason_and_never_crash(two_layers, tmp_path):
    import keras

    cases = _broken_exports(two_layers, tmp_path)
    i = keras.Input((None, 4), name="x")
    keras.Model(i, keras.layers.GRU(3, return_sequences=True, name="gru")(i)).save(tmp_path / "other.keras")
    assert CliRunner().invoke(cli, ["convert", str(tmp_path / "other.keras"), "--to", "onnx", "--out",
                                    str(tmp_path / "other"), "--no-validate"]).exit_code == 0
    cases["export of a different model"] = (tmp_path / "other" / "other.onnx", "the export has no output 'out'")
    report_path = tmp_path / "parity.json"
    result = rnnexport_cmd("validate", str(two_layers / "two.keras"), *(str(p) for p, _ in cases.values()),
                           "--lengths", "2", "--batches", "2", "--report", str(report_path),
                           "--junit", str(tmp_path / "parity.xml"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    report = _valid(json.loads(report_path.read_text()))
    assert not report["passed"]
    assert [e["path"] for e in report["exports"]] == [str(p) for p, _ in cases.values()]
    for (name, (_, reason)), export in zip(cases.items(), report["exports"]):
        assert not export["passed"] and export["validated"], name
        said = export["error"] or " ".join(o["reason"] for c in export["cases"] for o in c["outputs"])
        said += " ".join(c["error"] for c in export["cases"])
        assert reason in said, (name, said)
        assert re.search(r"\bFAIL\b", result.stdout)
    junit = ET.parse(tmp_path / "parity.xml").getroot()
    assert int(junit.attrib["failures"]) + int(junit.attrib["errors"]) >= len(cases)
    assert result.stdout.strip().endswith(f"FAIL: 0/{len(cases)} exports match their source")


def test_missing_source_fails_every_export(two_layers, tmp_path):
    report_path = tmp_path / "parity.json"
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "gone.keras"), str(two_layers / "two.onnx"),
                                      "--report", str(report_path)])
    assert result.exit_code == 1, result.output
    (export,) = _valid(json.loads(report_path.read_text()))["exports"]
    assert export["target"] == "onnx" and not export["passed"]
    assert export["error"] == f"the source cannot be read: {tmp_path / 'gone.keras'}: no such file or directory"
    assert "FAIL: 0/1 exports match their source" in result.output


def test_tolerances_per_device_and_target_layer_under_the_command_line(tmp_path):
    """Config tables for every device, then the device's own, then the command line: later wins."""
    import tomllib

    from rnnexport import config
    from rnnexport.tolerance import FLOAT32_TOLERANCE, ToleranceOverrides

    parsed = config.parse(tmp_path / "gate.toml", tomllib.loads("""
[tolerance."*"]
"*" = { atol = 2e-5 }
tflite = { atol = 5e-5, rtol = 5e-5 }
[tolerance.gpu]
"*" = { atol = 3e-4 }
"""))
    cpu, gpu = FLOAT32_TOLERANCE["cpu"], FLOAT32_TOLERANCE["gpu"]
    resolved = {(t, d): parsed.tolerance.apply(t, FLOAT32_TOLERANCE[d], d)
                for t in ("onnx", "tflite") for d in ("cpu", "gpu")}
    assert (resolved["onnx", "cpu"].atol, resolved["onnx", "cpu"].rtol) == (2e-5, cpu.rtol)
    assert (resolved["tflite", "cpu"].atol, resolved["tflite", "cpu"].rtol) == (5e-5, 5e-5)
    assert (resolved["onnx", "gpu"].atol, resolved["onnx", "gpu"].rtol) == (3e-4, gpu.rtol)
    assert (resolved["tflite", "gpu"].atol, resolved["tflite", "gpu"].rtol) == (3e-4, 5e-5)
    command_line = ToleranceOverrides(atol={"tflite": 1e-3}, under=parsed.tolerance)
    assert command_line.apply("tflite", gpu, "gpu").atol == 1e-3
    assert command_line.apply("onnx", gpu, "gpu").atol == 3e-4
