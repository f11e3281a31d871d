"""The command line over the config file, and tolerances resolved in layers: the rules the API
applies, checked without running a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnexport import config as config_file
from rnnexport.config import Config, ModelEntry
from rnnexport.errors import UserError
from rnnexport.options import SourceOptions
from rnnexport.runs import convert_models
from rnnexport.settings import Given, source_options, targets, validate_options
from rnnexport.tolerance import Tolerance, ToleranceOverrides, check_targets, resolve

CONFIG = """
[tool.rnnexport]
targets = ["onnx"]
out = "exports"
device = "cpu"
seed = 7
lengths = [3, 9]
batches = [2]
data = "all.npz"
models = [
  { source = "a.keras", data = "a.npz", inputs = ["x:0"], step = 5 }, "b.keras",
  { source = "ckpt/model.ckpt", cell = ["lstm:64", "gru:8"], architecture = "arch.json", custom_objects = ["layers:Attention"] },
]

[tool.rnnexport.tolerance."*".tflite]
atol = 1e-3
[tool.rnnexport.tolerance.cpu."*"]
rtol = 2e-4
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "pyproject.toml").write_text(CONFIG)
    return config_file.load(None, tmp_path)


def test_the_config_file_applies_where_the_command_line_gives_nothing(config, tmp_path):
    options = validate_options(Given(), config)
    assert (options.device, options.sweep.seed, options.sweep.lengths, options.sweep.batches) == ("cpu", 7, (3, 9), (2,))
    assert options.sweep.chunks == (1, 5, 17) and options.sweep.data == tmp_path / "all.npz"
    assert targets(Given(), config) == ("onnx",)


def test_the_command_line_wins_over_the_config_file(config, tmp_path):
    given = Given(device="auto", seed=1, lengths=(4,), batches=(1, 3), chunks=(2,), targets=("tflite",))
    options = validate_options(given, config)
    assert (options.device, options.sweep.seed, options.sweep.lengths, options.sweep.batches,
            options.sweep.chunks) == ("auto", 1, (4,), (1, 3), (2,))
    assert targets(given, config) == ("tflite",)


def test_data_comes_from_the_command_line_then_the_model_then_the_file(config, tmp_path):
    model = config.models[0]
    assert validate_options(Given(), config, model).sweep.data == tmp_path / "a.npz"
    assert validate_options(Given(data=Path("cli.npz")), config, model).sweep.data == Path("cli.npz")


def test_source_options_of_a_model_under_the_command_line(config):
    model = config.models[0]
    assert source_options(Given(), model) == SourceOptions(inputs=("x:0",), step=5)
    given = Given(source=SourceOptions(unsafe=True, inputs=("y:0",), step=0))
    assert source_options(given, model) == SourceOptions(unsafe=True, inputs=("y:0",), step=0)


def test_architecture_options_come_from_the_model_entry_unless_given(config, tmp_path):
    model = config.models[2]
    assert source_options(Given(), model) == SourceOptions(
        cells=("lstm:64", "gru:8"), architecture=tmp_path / "arch.json", custom_objects=("layers:Attention",))
    given = Given(source=SourceOptions(cells=("gru:4",), custom_objects=("mine:Cell",)))
    assert source_options(given, model) == SourceOptions(
        cells=("gru:4",), architecture=tmp_path / "arch.json", custom_objects=("mine:Cell",))


def test_tolerance_layers_target_default_source_floor_config_then_command_line(config):
    default, floor = Tolerance(1e-5, 1e-5), Tolerance(5e-5, 0.0)
    file_only = validate_options(Given(), config).tolerance
    assert resolve("onnx", default, None, ToleranceOverrides(), "cpu") == default
    assert resolve("onnx", default, floor, ToleranceOverrides(), "cpu") == Tolerance(5e-5, 1e-5)
    assert resolve("tflite", default, floor, file_only, "cpu") == Tolerance(1e-3, 2e-4)
    assert resolve("tflite", default, floor, file_only, "gpu") == Tolerance(1e-3, 1e-5)
    cli = validate_options(Given(atol={"*": 1e-2}), config).tolerance
    assert resolve("tflite", default, floor, cli, "cpu") == Tolerance(1e-2, 2e-4)


def test_a_tolerance_for_an_unknown_target_is_refused(config):
    known = ("onnx", "savedmodel", "tflite")
    check_targets(validate_options(Given(atol={"onnx": 1e-3, "*": 1e-4}), config).tolerance, known)
    with pytest.raises(UserError, match="--atol/--rtol: unknown target 'tflit'; known targets are: onnx, savedmodel, "
                                        "tflite, \\*"):
        check_targets(validate_options(Given(rtol={"tflit": 1e-3}), config).tolerance, known)


def test_converting_needs_somewhere_to_write():
    with pytest.raises(UserError, match="give --out, or `out` in the config file"):
        convert_models([ModelEntry(Path("a.keras"))], Given(), Config(path=Path("pyproject.toml")))


def test_an_empty_target_list_means_the_default_and_report_paths_come_from_the_command_line_first(config, tmp_path):
    from rnnexport.settings import report_paths

    assert targets(Given(), Config(path=Path("pyproject.toml"), targets=())) == ("savedmodel",)
    with_reports = Config(path=Path("pyproject.toml"), reports={"json": Path("r.json"), "html": Path("r.html")})
    assert report_paths({"json": Path("cli.json"), "junit": None, "html": None}, with_reports) == {
        "json": Path("cli.json"), "html": Path("r.html")}
