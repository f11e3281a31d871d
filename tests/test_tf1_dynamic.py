"""TF1 `dynamic_rnn` graphs as people published them (tf1_dynamic_helper): inputs of unknown time
and batch, dropout gated by a placeholder, sequence lengths, initial-state placeholders,
time-major tensors and bidirectional runners with lengths, frozen and checkpointed."""

import numpy as np
import pytest
from conftest import TESTS, UNTIMED, checked_exports, export_result, run_python

import rnnexport
from rnnexport.errors import SourceError, UnsupportedModelError
from rnnexport.options import ConvertOptions, SourceOptions

# The default sweep at a model of any length: 1, 2, short, its "own" and well beyond.
SWEPT = {1, 2, 7, 32, 128}


@pytest.fixture(scope="module")
def dynamic_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf1_dynamic")
    run_python(TESTS / "tf1_dynamic_helper.py", "write", str(out), legacy_keras=True)
    return out


def _convert(dynamic_files, tmp_path, name, targets=("onnx",)):
    return rnnexport.convert(dynamic_files / name, tmp_path, ConvertOptions(targets=targets, validation=UNTIMED))


def _notes(info):
    return [n for n in info.notes if "'" in n and ("gates dropout" in n or "initial state" in n or "flag" in n)]


@pytest.mark.parametrize("name", ["free_lstm", "free_gru_time_major.pb"])
def test_unknown_time_and_batch_convert_at_every_length(dynamic_files, tmp_path, name):
    result = _convert(dynamic_files, tmp_path, name)
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == SWEPT and not export.skipped
        assert {c.reference_method for c in export.checked} == {"source"}
    info = rnnexport.inspect(dynamic_files / name)
    assert info.fixed_length is None and info.causal
    assert [(t.name, t.shape) for t in info.inputs] == [("x", (None, None, 5))]
    assert any("time-major" in n for n in info.notes) == name.endswith("time_major.pb")


def test_an_input_of_unknown_rank_takes_its_width_from_the_first_cell(dynamic_files):
    info = rnnexport.inspect(dynamic_files / "unknown_rank_lstm.pb")
    assert [(t.name, t.shape) for t in info.inputs] == [("x", (None, None, 5))]
    assert info.outputs == rnnexport.inspect(dynamic_files / "free_lstm.pb").outputs


def test_frozen_and_checkpointed_graphs_read_alike(dynamic_files):
    for name in ("free_lstm", "bidirectional_lengths"):
        frozen, saved = (rnnexport.inspect(dynamic_files / n) for n in (f"{name}.pb", name))
        assert [(l.kind, l.direction) for l in frozen.layers] == [(l.kind, l.direction) for l in saved.layers]
        assert frozen.inputs == saved.inputs and frozen.outputs == saved.outputs


KEEP_PROB = "'{}' gates dropout; fed 1, which switches it off, and left out of the export"
FLAG = "'{}' is a training flag; fed False, so what it turns on for training (dropout, tf.cond branches) is left out"


@pytest.mark.parametrize("name, note", [
    ("dropout_keep_prob", KEEP_PROB.format("keep_prob:0")),
    ("dropout_with_default.pb", KEEP_PROB.format("dropout:0")),
    ("training_flag_dropout.pb", FLAG.format("is_training:0")),
    ("training_flag_keep_prob.pb", FLAG.format("training:0")),
])
def test_dropout_gated_by_a_placeholder_is_left_out(dynamic_files, tmp_path, name, note):
    info = rnnexport.inspect(dynamic_files / name)
    assert [t.name for t in info.inputs] == ["x"]
    assert _notes(info) == [note]
    result = _convert(dynamic_files, tmp_path, name)
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == SWEPT
    # DropoutWrapper on both layers of the stack: two GRUs, fused.
    if name == "dropout_keep_prob":
        assert export_result(result, "onnx").details["recurrent_ops"] == {"GRU": 2}


def test_sequence_length_is_an_input_and_padded_batches_match(dynamic_files, tmp_path):
    info = rnnexport.inspect(dynamic_files / "free_lengths_lstm")
    assert [(t.name, t.role) for t in info.inputs] == [("x", "data"), ("lengths", "lengths")]
    result = _convert(dynamic_files, tmp_path, "free_lengths_lstm")
    for _, export, checked in checked_exports(result, 5e-5):
        assert SWEPT <= checked
        padded = [c for c in export.checked if c.case.name.startswith("lengths")]
        assert padded and all(c.passed for c in padded)
        assert {len(set(c.case.name.split("true=")[1].split(","))) for c in padded} == {3}


def test_initial_state_placeholders_are_fed_zeros(dynamic_files, tmp_path):
    info = rnnexport.inspect(dynamic_files / "initial_state_tuple.pb")
    assert [t.name for t in info.inputs] == ["x"]
    assert _notes(info) == ["'c_in:0' holds an initial state; fed zeros, where the export's cells start",
                            "'h_in:0' holds an initial state; fed zeros, where the export's cells start"]
    result = _convert(dynamic_files, tmp_path, "initial_state_tuple.pb")
    for _, _, checked in checked_exports(result, 5e-5):
        assert checked == SWEPT


def test_a_cutkum_like_graph_converts_with_lengths_state_and_dropout(dynamic_files, tmp_path):
    """Time-major, keep_prob, a concatenated state placeholder [1, batch, 14], lengths and a head
    mapped over time (sigmoid, then softmax)."""
    info = rnnexport.inspect(dynamic_files / "initial_state_concat.pb")
    assert [(t.name, t.role) for t in info.inputs] == [("x", "data"), ("lengths", "lengths")]
    assert [layer.kind for layer in info.layers] == ["GRUCell(units=8)", "GRUCell(units=6)",
                                                     "matmul + bias + activation + activation"]
    assert _notes(info) == ["'keep_prob:0' gates dropout; fed 1, which switches it off, and left out of the export",
                            "'fw_state:0' holds an initial state; fed zeros, where the export's cells start"]
    result = _convert(dynamic_files, tmp_path, "initial_state_concat.pb")
    for _, export, checked in checked_exports(result, 5e-5):
        assert SWEPT <= checked
        assert any(c.case.name.startswith("lengths") for c in export.checked)


@pytest.mark.parametrize("name", ["bidirectional_lengths.pb", "bidirectional_lengths"])
def test_bidirectional_with_lengths_is_checked_at_every_length(dynamic_files, tmp_path, name):
    info = rnnexport.inspect(dynamic_files / name)
    assert [l.direction for l in info.layers if l.recurrent] == ["forward", "backward"]
    assert [(t.name, t.dtype, t.role) for t in info.inputs] == [("ids", "int32", "data"),
                                                                ("lengths", "int32", "lengths")]
    result = _convert(dynamic_files, tmp_path, name)
    for _, export, checked in checked_exports(result, 5e-5):
        # No fixed length: the graph itself is ground truth at every length, padded rows included.
        assert SWEPT <= checked and not export.skipped
        assert any(c.case.name.startswith("lengths") for c in export.checked)


def test_a_rate_placeholder_is_fed_zero(dynamic_files):
    info = rnnexport.inspect(dynamic_files / "dropout_rate.pb")
    assert _notes(info) == ["'dropout_rate:0' gates dropout; fed 0, which switches it off, and left out of the export"]


def test_dropout_at_a_fixed_rate_is_refused_by_name(dynamic_files):
    with pytest.raises(UnsupportedModelError, match=r"fixed_rate_dropout.pb: op 'dropout/SelectV2' applies dropout at "
                                                    r"a fixed rate; no keep_prob placeholder switches it off"):
        rnnexport.inspect(dynamic_files / "fixed_rate_dropout.pb")


def test_the_reference_feeds_keep_prob_one_and_zero_state(dynamic_files):
    """The graph run by hand with keep_prob=1 and a zero state is what the reference serves."""
    import tensorflow as tf

    from rnnexport import plugins
    from rnnexport.device import resolve_device

    path = dynamic_files / "initial_state_concat.pb"
    x = np.random.default_rng(1).standard_normal((2, 6, 5)).astype(np.float32)
    lengths = np.array([6, 3], np.int32)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        expected = session.run("y:0", {"x:0": x.swapaxes(0, 1), "lengths:0": lengths, "keep_prob:0": 1.0,
                                       "fw_state:0": np.zeros((1, 2, 14), np.float32)})
    opened = plugins.find_source(path).open(path, SourceOptions())
    with opened.reference(resolve_device("cpu")) as reference:
        ours = reference.run({"x": x, "lengths": lengths})["y"]
    np.testing.assert_array_equal(ours, expected.swapaxes(0, 1))
    assert not np.any(np.isnan(ours))


def test_training_branches_are_set_aside_and_several_outputs_listed(dynamic_files, tmp_path):
    """Loss, optimizer, summaries and argmax are no outputs; the probabilities and the final state are."""
    with pytest.raises(SourceError, match=r"trained_tagger: several outputs could be the model's; name one with "
                                          r"--outputs: state:0, y:0$"):
        rnnexport.inspect(dynamic_files / "trained_tagger")
    info = rnnexport.inspect(dynamic_files / "trained_tagger", SourceOptions(outputs=("y",)))
    assert [t.name for t in info.inputs] == ["x"] and info.outputs[0].shape == (None, None, 4)


def test_initial_state_placeholders_become_the_streaming_state(dynamic_files, tmp_path):
    options = ConvertOptions(targets=("onnx",), export=rnnexport.ExportOptions(streaming=True),
                             validation=rnnexport.ValidateOptions(sweep=rnnexport.SweepOptions(lengths=(3,)),
                                                                  latency_repeats=0))
    result = rnnexport.convert(dynamic_files / "initial_state_tuple.pb", tmp_path, options)
    assert result.report.passed, result.report.failures()
    export = export_result(result, "onnx")
    assert sorted(export.details["streaming_states"]) == ["rnn_0_c", "rnn_0_h"]
    chunked = [c for c in export.checked if c.case.chunk is not None]
    assert chunked and all(chunked)
    assert max(o.max_abs for c in chunked for o in c.outputs) < 5e-5
