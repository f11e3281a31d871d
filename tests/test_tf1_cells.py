"""TF1 cells and what surrounds them, on graphs written by the real TF1 classes
(tests/tf1_cells_helper.py): the projected, peephole and clipped LSTMCell under dynamic_rnn, a
dense ReLU and a Conv2D before the cells, and heads after them."""

import numpy as np
import pytest
from conftest import TESTS, checked_exports, export_result, run_python

import rnnexport
from rnnexport import plugins
from rnnexport.device import resolve_device
from rnnexport.errors import UnsupportedModelError

LENGTH = 10
SWEEP = {1, 2, 3, LENGTH, 4 * LENGTH}
PROJECTED = "LSTM(units=8, forget_bias=0.6, peepholes, num_proj=6, cell_clip=0.8, proj_clip=0.5)"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf1_cells")
    run_python(TESTS / "tf1_cells_helper.py", "write", str(out), legacy_keras=True)
    return out


def _convert(path, out, *targets):
    return rnnexport.convert(path, out, rnnexport.ConvertOptions(targets=targets))


def _recurrent(info):
    return [(layer.kind, layer.details["runner"]) for layer in info.layers if layer.recurrent]


def test_projected_lstm_under_dynamic_rnn_frozen_converts_to_every_target(files, tmp_path):
    result = _convert(files / "lstm_projection_dynamic.pb", tmp_path, "all")
    for target, export, checked in checked_exports(result, 1e-5):
        assert checked == SWEEP, target
    # No ONNX or TFLite fused LSTM has peepholes with a projection and clips: the cell stays a loop.
    assert export_result(result, "onnx").details["recurrent_ops"] == {"Loop": 1}
    assert export_result(result, "tflite").details["recurrent_ops"] == {"WHILE": 1}


@pytest.mark.parametrize("name", ["lstm_projection_dynamic", "lstm_projection_dynamic.pb"])
def test_projected_lstm_is_read_frozen_and_checkpointed(files, name):
    info = rnnexport.inspect(files / name)
    assert _recurrent(info) == [(PROJECTED, "dynamic_rnn")]
    assert info.outputs[0].shape == (None, None, 6)


@pytest.mark.parametrize("name", ["lstm_projection_final_state", "lstm_projection_final_state.pb"])
def test_time_major_final_projected_state_feeds_the_head(files, name):
    info = rnnexport.inspect(files / name)
    assert _recurrent(info) == [(PROJECTED.replace(", proj_clip=0.5", ""), "dynamic_rnn")]
    assert [t.shape for t in info.inputs] == [(None, None, 5)]
    assert [(layer.kind, layer.details) for layer in info.layers if not layer.recurrent] == [
        ("matmul + bias + activation", {"activation": "softmax"})]
    assert info.outputs[0].shape == (None, 4)


def test_time_major_final_projected_state_checkpoint_passes_at_whole_windows(files, tmp_path):
    result = _convert(files / "lstm_projection_final_state", tmp_path, "onnx")
    for _, export, checked in checked_exports(result, 1e-5):
        assert checked == {LENGTH, 4 * LENGTH}
        assert all("returns only its last step" in c.skipped for c in export.skipped)


@pytest.mark.parametrize("name", ["dense_relu_static", "dense_relu_static.pb"])
def test_dense_relu_before_split_is_the_exports_front_end(files, name):
    info = rnnexport.inspect(files / name)
    assert _recurrent(info) == [("LSTM(units=8, forget_bias=1)", "static_rnn (10 steps)")]
    assert ("front end before the recurrent layers: Dense(7, activation=relu); the exports compute it"
            in info.notes)


def test_dense_relu_front_end_converts_and_the_lstm_still_fuses(files, tmp_path):
    result = _convert(files / "dense_relu_static", tmp_path, "onnx")
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == SWEEP
    assert export_result(result, "onnx").details["recurrent_ops"] == {"LSTM": 1}


def test_conv2d_front_end_says_which_lengths_it_takes(files):
    info = rnnexport.inspect(files / "conv_gru_dynamic.pb")
    assert _recurrent(info) == [("GRUCell(units=8)", "dynamic_rnn"), ("GRUCell(units=6)", "dynamic_rnn")]
    assert ("front end before the recurrent layers: Conv2D(4, kernel=3x2, strides=2x1, padding=VALID, "
            "activation=relu); the exports compute it") in info.notes
    assert any("T' = floor((T - 3) / 2) + 1, so at least 3 steps; the export accepts 3 or more steps" in note
               for note in info.notes)
    assert [layer.kind for layer in info.layers if not layer.recurrent] == [
        "matmul + bias + activation + matmul + bias + activation"]


def test_conv2d_front_end_converts_and_is_checked_from_its_minimum_length(files, tmp_path):
    assert rnnexport.inspect(files / "conv_gru_dynamic.pb").min_length == 3
    result = _convert(files / "conv_gru_dynamic.pb", tmp_path, "onnx", "tflite")
    for target, export, checked in checked_exports(result, 1e-5):
        assert checked == {3, 4, LENGTH, 4 * LENGTH}, target
        assert not export.skipped
        methods = {c.reference_method for c in export.checked}
        assert methods == {"source", f"source, fed at 'x:0' with its {LENGTH} steps freed"}
    assert export_result(result, "onnx").details["recurrent_ops"] == {"GRU": 2}
    path = files / "conv_gru_dynamic.pb"
    reference = plugins.find_source(path).open(path, rnnexport.SourceOptions()).reference(resolve_device("cpu"))
    try:
        assert reference.serves({"x": np.zeros((1, 2, 5), np.float32)}) == (
            "shorter than the 3 steps the convolution front end needs")
        assert reference.serves({"x": np.zeros((1, 3, 5), np.float32)}) == ""
    finally:
        reference.close()


def test_per_step_head_on_static_rnn_outputs_then_stack(files, tmp_path):
    info = rnnexport.inspect(files / "static_per_step_head.pb")
    assert [layer.kind for layer in info.layers if not layer.recurrent] == ["matmul + bias + activation"]
    assert info.outputs[0].shape == (None, None, 4)
    result = _convert(files / "static_per_step_head.pb", tmp_path, "onnx")
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == SWEEP
    assert export_result(result, "onnx").details["recurrent_ops"] == {"GRU": 1}


def test_what_cannot_be_reproduced_is_refused_in_one_line_naming_file_and_op(files):
    path = files / "static_mixed_heads.pb"
    with pytest.raises(UnsupportedModelError, match=rf"^{path}: op 'stack' \(Pack\) joins outputs of the recurrent "
                                                    "layers that went through different projections"):
        rnnexport.inspect(path)
    path = files / "relu_without_weights.pb"
    with pytest.raises(UnsupportedModelError) as refused:
        rnnexport.inspect(path)
    assert str(refused.value) == (
        f"{path}: op 'Relu' (Relu) lies between the inputs and a recurrent cell but follows no MatMul or Conv2D by "
        "a weight; rnnexport places dense layers and a Conv2D there. To export from that op's result, cut the graph "
        "with --inputs Relu:0")
