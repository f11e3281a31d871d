"""Plugins are found through entry points, exactly as a third-party package declares them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rnnexport import plugins
from rnnexport.errors import PluginError, SourceError

from conftest import ROOT

THIRD_PARTY = '''
from dataclasses import dataclass

from rnnexport.plugins import Target
from rnnexport.target_options import option


@dataclass(frozen=True)
class EchoOptions:
    label: str = option("echo", "A label the echo target writes beside its export.")


class EchoRunner:
    name = "echo"
    device = "CPU (echo)"

    def __init__(self, path):
        import tensorflow as tf

        self.function = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(self, inputs):
        return {k: v.numpy() for k, v in self.function(**inputs).items()}


class EchoTarget(Target):
    name = "echo"
    description = "a third-party target"
    suffix = ".echo"
    Options = EchoOptions

    def export(self, model, path, options, streaming):
        import tensorflow as tf

        tf.saved_model.save(model.module, str(path), signatures={"serving_default": model.sequence})
        (path / "label.txt").write_text(options.label)

    def detect(self, path):
        return path.suffix == ".echo"

    def runner(self, path, device):
        return EchoRunner(path)
'''


@pytest.fixture
def third_party(tmp_path: Path) -> Path:
    """A distribution on sys.path with its own dist-info: found without installing anything."""
    (tmp_path / "echo_plugin.py").write_text(THIRD_PARTY)
    info = tmp_path / "echo_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [rnnexport.targets]
        echo = echo_plugin:EchoTarget
        ghost = echo_plugin:DoesNotExist
    """))
    return tmp_path


def test_entry_point_plugin_is_found_and_a_broken_one_is_listed(third_party):
    env = {**os.environ, "PYTHONPATH": str(third_party)}
    result = subprocess.run([sys.executable, "-m", "rnnexport", "plugins", "--json"], capture_output=True,
                            text=True, env=env, check=True)
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["echo"]["distribution"] == "echo-plugin" and rows["echo"]["error"] is None
    assert rows["echo"]["description"] == "a third-party target"
    assert "AttributeError" in rows["ghost"]["error"]
    assert rows["savedmodel"]["error"] is None and rows["keras"]["error"] is None
    table = subprocess.run([sys.executable, "-m", "rnnexport", "plugins"], capture_output=True, text=True,
                           env=env, check=True).stdout
    assert table.splitlines()[0].split() == ["kind", "name", "what", "it", "does", "entry", "point"]
    assert re.search(r"^target +ghost +BROKEN: AttributeError.* echo_plugin:DoesNotExist from echo-plugin$", table, re.M)
    assert re.search(r"^target +echo +a third-party target ", table, re.M)


def test_a_third_party_target_converts_validates_and_gets_its_declared_option_as_a_flag(third_party, tmp_path):
    from keras_models import build

    model = tmp_path / "lstm.keras"
    build("lstm").save(model)
    env = {**os.environ, "PYTHONPATH": str(third_party)}
    help_text = subprocess.run([sys.executable, "-m", "rnnexport", "convert", "--help"], capture_output=True,
                               text=True, env=env, check=True).stdout
    assert "--label TEXT" in help_text and "A label the echo target writes" in help_text
    result = subprocess.run([sys.executable, "-m", "rnnexport", "convert", str(model), "--to", "echo", "--label",
                             "hello", "--out", str(tmp_path / "out"), "--lengths", "1,9", "--batches", "2"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "lstm.echo" / "label.txt").read_text() == "hello"
    assert re.search(r"^lstm\.keras +echo +CPU \(echo\) +3/3 .* PASS$", result.stdout, re.M), result.stdout
    assert "PASS: 1/1 exports match their source" in result.stdout


def test_target_options_are_checked_against_the_declaration(tmp_path):
    import rnnexport
    from rnnexport.errors import UserError
    from rnnexport.options import ConvertOptions, ExportOptions

    def convert(target_options):
        options = ConvertOptions(targets=("tflite",), export=ExportOptions(target_options=target_options))
        return rnnexport.convert(ROOT / "samples" / "gru_fixed.keras", tmp_path, options)

    with pytest.raises(UserError, match="target 'tflite' option 'quantize': 'int4' is not supported; supported are: "
                                        "float16, dynamic-range, int8, int16x8"):
        convert({"tflite": {"quantize": "int4"}})
    with pytest.raises(UserError, match="target 'tflite' has no option 'batches'; its options are: batch, "
                                        "calibration, form, integer_io, quantize, select_ops"):
        convert({"tflite": {"batches": 2}})
    with pytest.raises(UserError, match="target 'onnx' option 'opset': 12 is out of range; expected from 13 to 18"):
        convert({"onnx": {"opset": 12}})
    with pytest.raises(UserError, match="options given for target 'tfilte', which is not installed"):
        convert({"tfilte": {"batch": 2}})
    assert list(tmp_path.iterdir()) == []


def test_builtins_register_through_entry_points():
    assert [e.value for e in plugins.source_entries()] == [
        "rnnexport_converters.keras.source:KerasSource", "rnnexport_converters.tf1.checkpoint:Tf1CheckpointSource",
        "rnnexport_converters.savedmodel.source:Tf2SavedModelSource", "rnnexport_converters.tf1.frozen:UnrolledGraphSource"]
    assert [e.value for e in plugins.target_entries()] == [
        "rnnexport_converters.onnx.target:OnnxTarget", "rnnexport_converters.savedmodel.target:SavedModelTarget",
        "rnnexport_converters.tflite.target:TfliteTarget"]
    assert all(e.distribution == "rnnexport" for e in plugins.source_entries() + plugins.target_entries())


def test_every_registered_plugin_has_a_test_fixture():
    """A plugin without coverage fails here: the test suite must grow with the registry."""
    covered = {"keras": "tests/test_keras_source.py", "savedmodel": "tests/test_savedmodel_target.py",
               "onnx": "tests/test_onnx_target.py", "tflite": "tests/test_tflite_target.py",
               "tf1-checkpoint": "tests/test_tf1_source.py", "unrolled-graph": "tests/test_unrolled_source.py",
               "tf2-savedmodel": "tests/test_tf2_savedmodel.py"}
    root = Path(__file__).resolve().parents[1]
    for entry in plugins.source_entries() + plugins.target_entries():
        assert entry.name in covered, f"no tests for plugin '{entry.name}'"
        assert (root / covered[entry.name]).is_file()


def test_lookup_errors_name_what_is_supported(tmp_path):
    with pytest.raises(PluginError, match="target 'onnx2' is not supported; supported are: onnx, savedmodel, tflite"):
        plugins.get_target("onnx2")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(SourceError, match="weights.bin: not a model rnnexport can read; supported sources: keras"):
        plugins.find_source(tmp_path / "weights.bin")
