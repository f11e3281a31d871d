"""The unrolled-graph source: frozen TF1 graphs written by the real TF1 runners, and SavedModels
of Keras `unroll=True` models, re-rolled and checked at their length and beyond."""

import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import UNTIMED, checked_exports, export_result

import rnnexport
from rnnexport.cli import cli
from rnnexport.errors import SourceError, UnsupportedModelError
from rnnexport.options import ConvertOptions, SourceOptions
from rnnexport.plugins import find_source

LENGTH = 10
FROZEN = ["basic_lstm_static", "gru_static", "basic_rnn_static", "bidirectional_static", "two_layer_gru_static",
          "embedded_multi_lstm", "hand_unrolled_lstm", "padded_gru_classifier"]
KERAS = ["keras_lstm", "keras_gru_stack", "keras_simple_rnn"]


def _keras_unrolled(kind):
    import keras

    keras.utils.set_random_seed(3)
    x = keras.Input((LENGTH, 5), name="features")
    if kind == "keras_lstm":
        y = keras.layers.Dense(4, activation="softmax")(keras.layers.LSTM(8, unroll=True, return_sequences=True)(x))
    elif kind == "keras_gru_stack":
        y = keras.layers.GRU(8, unroll=True, return_sequences=True)(x)
        y = keras.layers.Dense(3)(keras.layers.GRU(7, unroll=True)(y))
    else:
        y = keras.layers.SimpleRNN(6, unroll=True, return_sequences=True)(x)
    return keras.Model(x, y)


@pytest.fixture(scope="session")
def keras_savedmodels(tmp_path_factory):
    """Keras 3 `unroll=True` models as SavedModels only: `model.export`, and `tf.saved_model.save`."""
    import tensorflow as tf

    out = tmp_path_factory.mktemp("keras_savedmodels")
    for kind in KERAS:
        model = _keras_unrolled(kind)
        if kind == "keras_gru_stack":
            tf.saved_model.save(model, str(out / kind))
        else:
            model.export(str(out / kind), verbose=False)
    return out


@pytest.fixture(scope="session")
def unrolled_converted(frozen_files, keras_savedmodels, tmp_path_factory):
    """Every fixture converted to every target and validated once: name -> ConvertResult."""
    out = tmp_path_factory.mktemp("unrolled_exports")
    paths = {name: frozen_files / f"{name}.pb" for name in FROZEN}
    paths.update({name: keras_savedmodels / name for name in KERAS})
    options = ConvertOptions(targets=("all",), validation=UNTIMED)
    return {name: rnnexport.convert(path, out, options) for name, path in paths.items()}


@pytest.mark.parametrize("name", FROZEN + KERAS)
def test_every_unrolled_graph_re_rolls_and_passes_at_its_length_and_beyond(unrolled_converted, name):
    targets = set()
    for target, export, checked in checked_exports(unrolled_converted[name], 5e-6):
        targets.add(target)
        if name == "bidirectional_static":
            assert checked == {LENGTH}
        elif name == "keras_gru_stack":
            # Its last step alone is returned: only whole windows of 10 steps have ground truth.
            assert checked == {LENGTH, 4 * LENGTH}
        else:
            assert {1, 2, 3, LENGTH, 4 * LENGTH} <= checked, (target, checked)
            assert not export.skipped
        if name != "bidirectional_static":
            methods = {c.reference_method for c in export.checked if c.case.length == 4 * LENGTH}
            assert methods == {"source in 4 windows of 10 steps, state carried"}
    assert targets == {"savedmodel", "onnx", "tflite"}


def test_inspect_shows_cell_units_unrolled_length_stacking_and_direction(frozen_files, keras_savedmodels):
    stack = rnnexport.inspect(frozen_files / "two_layer_gru_static.pb")
    assert stack.fixed_length == LENGTH and stack.causal
    cells = [layer for layer in stack.layers if layer.recurrent]
    assert [(c.kind, c.units, c.details["layer"], c.direction) for c in cells] == [
        ("GRUCell(units=8)", 8, 0, "forward"), ("GRUCell(units=6)", 6, 1, "forward")]
    assert {c.details["runner"] for c in cells} == {"static_rnn (10 steps)"}
    both = rnnexport.inspect(frozen_files / "bidirectional_static.pb")
    assert [layer.direction for layer in both.layers if layer.recurrent] == ["forward", "backward"]
    assert not both.causal
    hand = rnnexport.inspect(frozen_files / "hand_unrolled_lstm.pb")
    assert [layer.kind for layer in hand.layers] == ["LSTM(units=8, forget_bias=0.7)"]
    keras_stack = rnnexport.inspect(keras_savedmodels / "keras_gru_stack")
    assert [layer.kind for layer in keras_stack.layers] == ["keras GRU(units=8)", "keras GRU(units=7)", "matmul + bias"]
    assert [layer.details.get("runner") for layer in keras_stack.layers][:2] == ["unroll=True (10 steps)"] * 2
    assert keras_stack.inputs[0].name == "inputs" and keras_stack.outputs[0].name == "output_0"
    result = CliRunner().invoke(cli, ["inspect", str(frozen_files / "gru_static.pb")])
    assert result.exit_code == 0, result.output
    assert "unrolled-graph source, frozen TF1 graph (1 cell)" in result.output
    assert re.search(r"^  \S+ +GRUCell\(units=8\) +8 +forward +layer=0  runner=static_rnn \(10 steps\)$", result.output,
                     re.M), result.output


def test_fused_ops_in_the_re_rolled_exports(unrolled_converted):
    assert export_result(unrolled_converted["hand_unrolled_lstm"], "onnx").details["recurrent_ops"] == {"LSTM": 1}
    assert export_result(unrolled_converted["two_layer_gru_static"], "onnx").details["recurrent_ops"] == {"GRU": 2}
    assert export_result(unrolled_converted["basic_rnn_static"], "onnx").details["recurrent_ops"] == {"RNN": 1}
    tflite = export_result(unrolled_converted["keras_lstm"], "tflite").details["recurrent_ops"]
    assert tflite == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1}


def test_a_step_with_other_weights_is_refused_naming_the_op(frozen_files):
    with pytest.raises(UnsupportedModelError) as raised:
        rnnexport.inspect(frozen_files / "altered_step.pb")
    message = str(raised.value)
    assert "step 3 breaks the pattern" in message
    assert ("op 'MatMul_3' reads kernel 'add_6:0', which differs from step 0's 'basic_lstm_cell/kernel' by up to "
            "0.01") in message
    result = CliRunner().invoke(cli, ["convert", str(frozen_files / "altered_step.pb"), "--out", "unused"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_the_padded_deployment_is_served_unpadded_and_agrees(unrolled_converted, frozen_files):
    """Inputs padded to 10 steps with the true lengths fed, class read from the final state: the
    export runs at the true length, without padding, and matches."""
    export = export_result(unrolled_converted["padded_gru_classifier"], "onnx")
    short = [c for c in export.checked if c.case.length == 3]
    assert short and all(c.passed for c in short)
    assert {c.reference_method for c in short} == {"source, padded from 3 to 10 steps with the true lengths"}
    assert "lengths len=10 batch=3 true=10,6,1" in {c.case.name for c in export.checked}
    info = rnnexport.inspect(frozen_files / "padded_gru_classifier.pb")
    assert [(t.name, t.role) for t in info.inputs] == [("x", "data"), ("lengths", "lengths")]
    assert info.outputs[0].shape == (None, 4)


def test_bad_files_are_clear_errors(tmp_path, frozen_files):
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SourceError, match="garbage.pb: not a TensorFlow GraphDef"):
        rnnexport.inspect(garbage)
    result = CliRunner().invoke(cli, ["inspect", str(garbage)])
    assert result.exit_code == 2 and "not a TensorFlow GraphDef" in result.output
    with pytest.raises(SourceError, match="no tensor 'nope' in the graph; its placeholders are x$"):
        rnnexport.inspect(frozen_files / "gru_static.pb", SourceOptions(inputs=("nope",)))
    info = rnnexport.inspect(frozen_files / "gru_static.pb", SourceOptions(inputs=("x:0",), outputs=("y:0",)))
    assert info.inputs[0].name == "x"


def test_the_re_rolled_model_equals_the_graph_beyond_its_length(frozen_files):
    """Direct check, outside the parity engine: the rebuilt Keras model at 25 steps against the
    frozen graph run in windows with its state fed back by hand."""
    import tensorflow as tf

    path = frozen_files / "basic_rnn_static.pb"
    opened = find_source(path).open(path, SourceOptions())
    x = np.random.default_rng(5).standard_normal((2, 25, 5)).astype(np.float32)
    cell = opened.cells[0]
    with tf.compat.v1.Session(graph=opened.source.graph) as session:
        state, pieces = np.zeros((2, 8), np.float32), []
        for start in range(0, 30, LENGTH):
            window = np.zeros((2, LENGTH, 5), np.float32)
            window[:, :min(LENGTH, 25 - start)] = x[:, start:start + LENGTH]
            out, state = session.run([opened.output, cell.steps[-1].state_out[0]],
                                     {"x:0": window, cell.steps[0].state_in[0]: state})
            pieces.append(out)
    expected = np.concatenate(pieces, axis=1)[:, :25]
    np.testing.assert_allclose(np.asarray(opened.keras(x)), expected, atol=1e-6)
