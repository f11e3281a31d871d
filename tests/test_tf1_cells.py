"""TF1 cells and what surrounds them, on graphs written by the real TF1 classes
(tests/tf1_cells_helper.py): the projected, peephole and clipped LSTMCell and GRUBlockCell under
dynamic_rnn; dense layers, conv1d, Conv2D and pooling before the cells; dense layers between
them; heads after them, also per static_rnn step."""

import numpy as np
import pytest
from conftest import TESTS, UNTIMED, checked_exports, export_result, run_python

import rnnexport
from rnnexport import plugins
from rnnexport.device import resolve_device
from rnnexport.errors import UnsupportedModelError

LENGTH = 10
SWEEP = {1, 2, 3, LENGTH, 4 * LENGTH}
DENSE_NOTE = "front end before the recurrent layers: Dense(7, activation=relu); every export computes it"
PROJECTED = "LSTM(units=8, forget_bias=0.6, peepholes, num_proj=6, cell_clip=0.8, proj_clip=0.5)"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf1_cells")
    run_python(TESTS / "tf1_cells_helper.py", "write", str(out), legacy_keras=True)
    return out


def _convert(path, out, *targets, outputs=()):
    source = rnnexport.SourceOptions(outputs=outputs)
    return rnnexport.convert(path, out, rnnexport.ConvertOptions(targets=targets, source=source, validation=UNTIMED))


def _recurrent(info):
    return [(layer.kind, layer.details["runner"]) for layer in info.layers if layer.recurrent]


def test_projected_lstm_under_dynamic_rnn_frozen_converts_to_onnx_and_tflite(files, tmp_path):
    result = _convert(files / "lstm_projection_dynamic.pb", tmp_path, "onnx", "tflite")
    for target, export, checked in checked_exports(result, 1e-5):
        assert checked == SWEEP, target
    # ONNX's fused LSTM has no projection, LiteRT's has peepholes, projection and both clips.
    assert export_result(result, "onnx").details["recurrent_ops"] == {"Loop": 1}
    assert export_result(result, "tflite").details["recurrent_ops"] == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1}


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
    assert DENSE_NOTE in info.notes


def test_dense_relu_front_end_converts_and_the_lstm_still_fuses(files, tmp_path):
    result = _convert(files / "dense_relu_static", tmp_path, "onnx")
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == SWEEP
    assert export_result(result, "onnx").details["recurrent_ops"] == {"LSTM": 1}


def test_a_dense_layer_on_every_steps_slice_is_one_front_end(files, tmp_path):
    info = rnnexport.inspect(files / "per_step_front_static")
    assert DENSE_NOTE in info.notes
    result = _convert(files / "per_step_front_static", tmp_path, "savedmodel")
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == SWEEP


def test_tf_layers_dense_before_and_after_dynamic_rnn(files, tmp_path):
    info = rnnexport.inspect(files / "layers_dense_dynamic.pb")
    assert DENSE_NOTE in info.notes
    assert [layer.kind for layer in info.layers if not layer.recurrent] == [
        "Dense(7, activation=relu)", "matmul + bias"]
    # A dense front end works step by step, so the export also streams.
    options = rnnexport.ConvertOptions(targets=("onnx",), export=rnnexport.ExportOptions(streaming=True),
                                       validation=UNTIMED)
    result = rnnexport.convert(files / "layers_dense_dynamic.pb", tmp_path, options)
    for _, export, checked in checked_exports(result, 1e-5):
        assert {c.case.length for c in export.checked if c.case.chunk is None} == SWEEP
        assert len([c for c in export.checked if c.case.chunk is not None]) == 6
        assert {c.reference_method for c in export.checked if c.case.chunk is None} == {
            "source", f"source, fed at 'x:0' with its {LENGTH} steps freed"}
    assert export_result(result, "onnx").details["recurrent_ops"] == {"GRU": 1}


def test_conv2d_front_end_says_which_lengths_it_takes(files):
    info = rnnexport.inspect(files / "conv_gru_dynamic.pb")
    assert _recurrent(info) == [("GRUCell(units=8)", "dynamic_rnn"), ("GRUCell(units=6)", "dynamic_rnn")]
    assert ("front end before the recurrent layers: Conv2D(4, kernel=3x2, strides=2x1, padding=VALID, "
            "activation=relu); every export computes it") in info.notes
    assert any("turns T input steps into the recurrent layers' steps: Conv2D T' = floor((T - 3) / 2) + 1; the "
               "export accepts 3 or more steps" in note for note in info.notes)
    assert [layer.kind for layer in info.layers if not layer.recurrent] == [
        "Conv2D(4, kernel=3x2, strides=2x1, padding=VALID, activation=relu)",
        "matmul + bias + activation + matmul + bias + activation"]


def test_conv2d_front_end_converts_and_is_checked_from_its_minimum_length(files, tmp_path):
    assert rnnexport.inspect(files / "conv_gru_dynamic.pb").min_length == 3
    result = _convert(files / "conv_gru_dynamic.pb", tmp_path, "onnx")
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
            "shorter than the 3 steps the front end's windows need")
        assert reference.serves({"x": np.zeros((1, 3, 5), np.float32)}) == ""
    finally:
        reference.close()


def test_convolutions_and_pooling_stacked_before_the_cells(files, tmp_path):
    info = rnnexport.inspect(files / "conv_pool_stack_gru.pb")
    assert [layer.kind for layer in info.layers if layer.name.startswith("frontend_")] == [
        "Conv2D(4, kernel=3x2, strides=1x1, padding=SAME, activation=relu)",
        "MaxPool2D(2x2, strides=2x2, padding=VALID)",
        "Conv2D(3, kernel=2x2, strides=1x1, padding=VALID, activation=tanh)"]
    assert info.min_length == 4
    assert any("Conv2D T' = ceil(T / 1) (SAME padding: step t also reads up to 1 later steps); then MaxPool2D T' = "
               "floor((T - 2) / 2) + 1; then Conv2D T' = floor((T - 2) / 1) + 1; the export accepts 4 or more steps"
               in note for note in info.notes)
    result = _convert(files / "conv_pool_stack_gru.pb", tmp_path, "tflite")
    for _, export, checked in checked_exports(result, 1e-5):
        assert checked == {4, 5, LENGTH, 4 * LENGTH}
    assert export_result(result, "tflite").details["recurrent_ops"] == {"WHILE": 1}


def test_conv1d_over_time_before_an_lstm_that_still_fuses(files, tmp_path):
    info = rnnexport.inspect(files / "conv1d_lstm_dynamic.pb")
    assert [layer.kind for layer in info.layers if not layer.recurrent] == [
        "Conv1D(6, kernel=3, strides=1, padding=VALID, activation=relu)"]
    assert info.min_length == 3
    result = _convert(files / "conv1d_lstm_dynamic.pb", tmp_path, "onnx")
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == {3, 4, LENGTH, 4 * LENGTH}
    assert export_result(result, "onnx").details["recurrent_ops"] == {"LSTM": 1}


def test_a_convolution_front_end_does_not_stream(files, tmp_path):
    options = rnnexport.ConvertOptions(targets=("onnx",), export=rnnexport.ExportOptions(streaming=True))
    with pytest.raises(UnsupportedModelError, match=r"cannot stream: the front end's Conv2D\(4, kernel=3x2, strides=2x1, "
                                                    r"padding=VALID, activation=relu\) looks ahead: with VALID padding over time each "
                                                    r"output step reads up to 2 later input steps and its stride 2 "
                                                    r"keeps one step in 2, which a chunk does not have yet"):
        rnnexport.convert(files / "conv_gru_dynamic.pb", tmp_path, options)


def test_conv2d_front_end_of_a_checkpoint_is_checked_at_every_length(files, tmp_path):
    # The checkpoint's graph is frozen and re-imported with a free length, as a frozen graph is.
    result = _convert(files / "conv_gru_dynamic", tmp_path, "savedmodel", outputs=("y",))
    for _, export, checked in checked_exports(result, 1e-5):
        assert checked == {3, 4, LENGTH, 4 * LENGTH}
        assert f"source, fed at 'x:0' with its {LENGTH} steps freed" in {c.reference_method for c in export.checked}


def test_per_step_head_on_static_rnn_outputs_then_stack(files, tmp_path):
    info = rnnexport.inspect(files / "static_per_step_head.pb")
    assert [layer.kind for layer in info.layers if not layer.recurrent] == ["matmul + bias + activation"]
    assert info.outputs[0].shape == (None, None, 4)
    result = _convert(files / "static_per_step_head.pb", tmp_path, "onnx")
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == SWEEP
    assert export_result(result, "onnx").details["recurrent_ops"] == {"GRU": 1}


def test_dense_layer_between_recurrent_layers(files, tmp_path):
    info = rnnexport.inspect(files / "dense_between_layers.pb")
    assert [(layer.name, layer.kind) for layer in info.layers] == [
        ("lower/rnn/gru_cell", "GRUCell(units=8)"), ("between_1_0", "Dense(7, activation=tanh)"),
        ("upper/rnn/lstm_cell", "LSTM(units=6, forget_bias=1)")]
    result = _convert(files / "dense_between_layers.pb", tmp_path, "onnx")
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == SWEEP
    assert export_result(result, "onnx").details["recurrent_ops"] == {"GRU": 1, "LSTM": 1}


def test_gru_block_cell_converts_as_a_fused_gru(files, tmp_path):
    info = rnnexport.inspect(files / "gru_block_dynamic.pb", rnnexport.SourceOptions(outputs=("y",)))
    assert _recurrent(info) == [("GRUBlockCell(units=8)", "dynamic_rnn")]
    result = _convert(files / "gru_block_dynamic.pb", tmp_path, "onnx", outputs=("y",))
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
        "a weight; rnnexport places dense layers, convolutions and pooling there. To export from that op's result, "
        "cut the graph with --inputs Relu:0")
