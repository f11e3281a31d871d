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

THIRD_PARTY = '''
from rnnexport.tolerance import Tolerance
from rnnexport.plugins import Target


class EchoTarget(Target):
    name = "echo"
    description = "a third-party target"
    suffix = ".echo"

    def export(self, model, path):
        path.write_text("echo")

    def detect(self, path):
        return path.suffix == ".echo"

    def runner(self, path, device):
        raise NotImplementedError

    def default_tolerance(self, device, path):
        return Tolerance(0.0, 0.0)
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
    assert re.search(r"^  ghost +BROKEN: AttributeError", table, re.M)


def test_builtins_register_through_entry_points():
    assert [e.value for e in plugins.source_entries()] == [
        "rnnexport_converters.keras.source:KerasSource", "rnnexport_converters.tf1.checkpoint:Tf1CheckpointSource",
        "rnnexport_converters.tf1.frozen:UnrolledGraphSource"]
    assert [e.value for e in plugins.target_entries()] == [
        "rnnexport_converters.onnx.target:OnnxTarget", "rnnexport_converters.savedmodel.target:SavedModelTarget",
        "rnnexport_converters.tflite.target:TfliteTarget"]
    assert all(e.distribution == "rnnexport" for e in plugins.source_entries() + plugins.target_entries())


def test_every_registered_plugin_has_a_test_fixture():
    """A plugin without coverage fails here: the test suite must grow with the registry."""
    covered = {"keras": "tests/test_keras_source.py", "savedmodel": "tests/test_savedmodel_target.py",
               "onnx": "tests/test_onnx_target.py", "tflite": "tests/test_tflite_target.py",
               "tf1-checkpoint": "tests/test_tf1_source.py", "unrolled-graph": "tests/test_unrolled_source.py"}
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
