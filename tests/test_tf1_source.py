"""The tf1-checkpoint source on checkpoints written by the real TF1 cell classes and runners."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import UNTIMED, checked_exports, export_result

import rnnexport
from rnnexport.cli import cli
from rnnexport.errors import SourceError, UnsupportedModelError
from rnnexport.options import ConvertOptions, SourceOptions

LENGTH = 10
CONVERTED = [
    "basic_lstm_static", "basic_lstm_forget_bias_dynamic", "lstm_peephole_projection_time_major",
    "lstm_cell_static_last", "gru_static", "gru_dynamic_sequence_length", "basic_rnn_dynamic",
    "multi_lstm_custom_scope", "lstm_block_dynamic", "bidirectional_static", "bidirectional_dynamic",
    "embedded_multi_lstm",
]


@pytest.fixture(scope="session")
def tf1_converted(tf1_files, tmp_path_factory):
    """Every fixture converted to every target and validated once: name -> ConvertResult."""
    out = tmp_path_factory.mktemp("tf1_exports")
    return {name: rnnexport.convert(tf1_files / name, out, ConvertOptions(targets=("all",), validation=UNTIMED))
            for name in CONVERTED}


@pytest.mark.parametrize("name", CONVERTED)
def test_every_cell_and_runner_converts_to_every_target_and_passes(tf1_converted, name):
    for target, export, checked in checked_exports(tf1_converted[name], 5e-5):
        if name.startswith("bidirectional"):
            assert checked == {LENGTH}
            assert {c.case.length for c in export.skipped} == {1, 2, 3, 40}
            assert all("only ground truth at its own length 10" in c.skipped for c in export.skipped)
        elif name == "lstm_cell_static_last":
            assert checked == {LENGTH, 4 * LENGTH}
        else:
            assert {1, 2, 3, LENGTH, 4 * LENGTH} <= checked, (target, checked)
            assert not export.skipped


def test_reference_methods_say_how_each_length_was_served(tf1_converted):
    export = export_result(tf1_converted["basic_lstm_static"], "onnx")
    methods = {c.case.length: c.reference_method for c in export.cases if c.case.batch == 1}
    assert methods[LENGTH] == "source"
    assert methods[3] == "source, padded from 3 to 10 steps"
    assert methods[40] == "source in 4 windows of 10 steps, state carried"


def test_state_is_carried_across_windows_for_dynamic_rnn_with_sequence_length(tf1_converted):
    export = export_result(tf1_converted["gru_dynamic_sequence_length"], "savedmodel")
    names = {c.case.name for c in export.checked}
    assert "lengths len=40 batch=3 true=40,21,1" in names
    assert all(c.passed for c in export.checked)


def test_fused_ops_where_the_cells_allow_them(tf1_converted):
    onnx = export_result(tf1_converted["multi_lstm_custom_scope"], "onnx").details["recurrent_ops"]
    assert onnx == {"LSTM": 3}
    tflite = export_result(tf1_converted["embedded_multi_lstm"], "tflite").details["recurrent_ops"]
    assert tflite == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 2}
    assert export_result(tf1_converted["gru_static"], "onnx").details["recurrent_ops"] == {"GRU": 1}


def _cells(info):
    return [layer for layer in info.layers if layer.recurrent]


def test_hyperparameters_are_read_from_the_graph(tf1_files):
    forget = _cells(rnnexport.inspect(tf1_files / "basic_lstm_forget_bias_dynamic"))
    assert [c.kind for c in forget] == ["LSTM(units=8, forget_bias=0.3)"]
    peephole = _cells(rnnexport.inspect(tf1_files / "lstm_peephole_projection_time_major"))
    assert peephole[0].kind == "LSTM(units=8, forget_bias=0.6, peepholes, num_proj=6, cell_clip=0.8, proj_clip=0.5)"
    block = _cells(rnnexport.inspect(tf1_files / "lstm_block_dynamic"))
    assert block[0].kind == "LSTMBlockCell(units=8, forget_bias=0.5, peepholes, cell_clip=2)"
    relu = _cells(rnnexport.inspect(tf1_files / "lstm_cell_static_last"))
    assert relu[0].kind == "LSTM(units=8, forget_bias=1, activation=relu)"
    assert relu[0].details["runner"] == "static_rnn (10 steps)"


def test_custom_scopes_and_stacks_are_found_by_structure(tf1_files):
    info = rnnexport.inspect(tf1_files / "multi_lstm_custom_scope" / "model.ckpt")
    cells = _cells(info)
    assert [c.details["layer"] for c in cells] == [0, 1, 2]
    assert all(c.name.startswith("encoder/stack_of_three/") for c in cells)
    assert info.layers[-1].details == {"activation": "softmax"}
    bidirectional = rnnexport.inspect(tf1_files / "bidirectional_dynamic" / "model.ckpt.meta")
    assert [c.direction for c in _cells(bidirectional)] == ["forward", "backward"]
    assert not bidirectional.causal


def test_inputs_outputs_and_layout_are_described(tf1_files):
    info = rnnexport.inspect(tf1_files / "gru_dynamic_sequence_length")
    assert [(t.name, t.shape, t.role) for t in info.inputs] == [("x", (None, None, 5), "data"),
                                                                ("lengths", (None,), "lengths")]
    assert info.fixed_length == LENGTH
    flat = rnnexport.inspect(tf1_files / "basic_lstm_static")
    assert any("flat batch-major" in note for note in flat.notes)
    assert flat.outputs[0].shape == (None, None, 4)
    time_major = rnnexport.inspect(tf1_files / "lstm_peephole_projection_time_major")
    assert time_major.outputs[0].shape == (None, None, 6)


def test_an_unplaced_op_is_refused_by_name(tf1_files):
    with pytest.raises(UnsupportedModelError, match=r"op 'Sin' \(Sin\) lies between the last recurrent layer"):
        rnnexport.inspect(tf1_files / "unsupported_op")


def test_output_names_are_checked_and_candidates_listed(tf1_files):
    with pytest.raises(SourceError, match=r"no tensor 'logits:0' in the graph; candidates: y:0"):
        rnnexport.inspect(tf1_files / "gru_static", SourceOptions(outputs=("logits:0",)))
    with pytest.raises(SourceError, match=r"no tensor 'z:0' in the graph; its placeholders are x$"):
        rnnexport.inspect(tf1_files / "gru_static", SourceOptions(inputs=("z:0",)))
    info = rnnexport.inspect(tf1_files / "gru_static", SourceOptions(inputs=("x:0",), outputs=("y",)))
    assert info.inputs[0].name == "x"


def test_checkpoint_directories_take_the_newest_or_the_given_step(tf1_files):
    newest = rnnexport.inspect(tf1_files / "steps")
    assert any("model.ckpt-9 " in note for note in newest.notes)
    older = rnnexport.inspect(tf1_files / "steps", SourceOptions(step=5))
    assert any("model.ckpt-5 " in note for note in older.notes)
    with pytest.raises(SourceError, match=r"no checkpoint for step 7; steps present: 5, 9"):
        rnnexport.inspect(tf1_files / "steps", SourceOptions(step=7))


def test_cli_errors_are_one_line_with_exit_code_2(tf1_files):
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(tf1_files / "gru_static"), "--outputs", "nope:0"])
    assert result.exit_code == 2
    assert "no tensor 'nope:0' in the graph; candidates: y:0" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["inspect", str(tf1_files / "steps"), "--step", "7"])
    assert result.exit_code == 2 and "steps present: 5, 9" in result.output
    result = runner.invoke(cli, ["inspect", str(tf1_files / "gru_static" / "nothing.ckpt")])
    assert result.exit_code == 2 and "no such file or directory" in result.output


def test_inspect_json_names_the_cells(tf1_files):
    result = CliRunner().invoke(cli, ["inspect", str(tf1_files / "embedded_multi_lstm"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["kind"] == "tf1-checkpoint"
    assert data["inputs"][0]["vocab_size"] == 30
    assert [layer["kind"] for layer in data["layers"]][:2] == ["Embedding", "LSTM(units=8, forget_bias=1)"]


def test_exports_match_a_fresh_session_on_the_users_own_data(tf1_files, tf1_converted, tmp_path):
    import tensorflow as tf

    x = np.random.default_rng(4).standard_normal((2, LENGTH, 5)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(str(tf1_files / "basic_lstm_static" / "model.ckpt.meta"))
        with tf.compat.v1.Session(graph=graph) as session:
            saver.restore(session, str(tf1_files / "basic_lstm_static" / "model.ckpt"))
            expected = session.run("y:0", {"x:0": x})
    path = next(a.path for a in tf1_converted["basic_lstm_static"].artifacts if a.target == "savedmodel")
    loaded = tf.saved_model.load(str(path))
    produced = loaded.signatures["serving_default"](x=tf.constant(x))["y"].numpy()
    np.testing.assert_allclose(produced.reshape(-1, 4), expected, atol=5e-5)
