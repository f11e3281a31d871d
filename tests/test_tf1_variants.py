"""TF1 constructs published models use beside the common ones (tf1_variants_helper): one cell
object given to both directions of a bidirectional runner, and cells whose state is one
concatenated tensor (`state_is_tuple=False`), frozen and checkpointed; a TF1 SavedModel whose signature
maps a dataset iterator's tensors."""

import numpy as np
import pytest
from conftest import TESTS, UNTIMED, checked_exports, run_python

import rnnexport
from rnnexport import plugins
from rnnexport.device import resolve_device
from rnnexport.options import ConvertOptions, SweepOptions, ValidateOptions

# The default sweep at a model of free length: 1, 2, short, its "own" and well beyond.
SWEPT = {1, 2, 7, 32, 128}


@pytest.fixture(scope="module")
def variant_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf1_variants")
    run_python(TESTS / "tf1_variants_helper.py", "write", str(out), legacy_keras=True)
    return out


def _convert(variant_files, tmp_path, name):
    return rnnexport.convert(variant_files / name, tmp_path, ConvertOptions(targets=("onnx",), validation=UNTIMED))


def _recurrent(info):
    return [(layer.kind, layer.direction) for layer in info.layers if layer.recurrent]


@pytest.mark.parametrize("name", ["shared_gru_bidirectional.pb", "shared_gru_bidirectional"])
def test_one_gru_cell_for_both_directions_is_one_bidirectional_layer(variant_files, tmp_path, name):
    info = rnnexport.inspect(variant_files / name)
    assert _recurrent(info) == [("GRUCell(units=8)", "forward"), ("GRUCell(units=8)", "backward")]
    assert [(t.name, t.role) for t in info.inputs] == [("x", "data"), ("lengths", "lengths")]
    result = _convert(variant_files, tmp_path, name)
    for _, export, checked in checked_exports(result, 5e-5):
        assert SWEPT <= checked and not export.skipped
        assert any(c.case.name.startswith("lengths") for c in export.checked)


def test_one_lstm_cell_for_both_directions_is_one_bidirectional_layer(variant_files, tmp_path):
    info = rnnexport.inspect(variant_files / "shared_lstm_bidirectional.pb")
    assert [d for _, d in _recurrent(info)] == ["forward", "backward"]
    assert info.outputs[0].shape == (None, None, 16)
    for _, export, checked in checked_exports(_convert(variant_files, tmp_path, "shared_lstm_bidirectional.pb"), 5e-5):
        assert checked == SWEPT and not export.skipped


def test_static_bidirectional_rnn_with_one_cell_is_checked_at_its_own_length(variant_files, tmp_path):
    info = rnnexport.inspect(variant_files / "shared_static_bidirectional.pb")
    assert [d for _, d in _recurrent(info)] == ["forward", "backward"]
    assert info.fixed_length == 6 and not info.causal
    for _, export, checked in checked_exports(_convert(variant_files, tmp_path, "shared_static_bidirectional.pb"),
                                              5e-5):
        # A bidirectional graph unrolled to 6 steps is ground truth at 6 steps alone.
        assert checked == {6}
        assert export.skipped and all(c.skipped.startswith("a bidirectional graph is only") for c in export.skipped)


@pytest.mark.parametrize("name", ["concat_state_static.pb", "concat_state_static"])
def test_a_concatenated_lstm_state_from_a_placeholder_is_one_cell(variant_files, tmp_path, name):
    """static_rnn over BasicLSTMCell(state_is_tuple=False): each step splits [c, h] out of the state
    the step before concatenated; the initial-state placeholder is fed zeros."""
    info = rnnexport.inspect(variant_files / name)
    assert _recurrent(info) == [("LSTM(units=8, forget_bias=1)", "forward")]
    assert [layer.details["runner"] for layer in info.layers if layer.recurrent] == ["static_rnn (6 steps)"]
    assert "'istate:0' holds an initial state; fed zeros, where the export's cells start" in info.notes
    assert info.outputs[0].name == "y" and info.outputs[0].shape == (None, 1)
    result = _convert(variant_files, tmp_path, name)
    for _, _, checked in checked_exports(result, 5e-5):
        # The graph returns its last step: lengths it can be run at in windows of 6 are ground truth.
        assert {6, 24} <= checked


@pytest.mark.parametrize("name", ["concat_state_stack.pb", "concat_state_stack"])
def test_a_stack_with_one_concatenated_state_is_two_layers(variant_files, tmp_path, name):
    """MultiRNNCell(state_is_tuple=False) under dynamic_rnn: each layer slices its state out of the
    stack's, the LSTM splits [c, h] out of its slice; the stack's initial-state placeholder is fed zeros."""
    info = rnnexport.inspect(variant_files / name)
    assert _recurrent(info) == [("LSTM(units=8, forget_bias=1)", "forward"), ("GRUCell(units=6)", "forward")]
    assert "'stack_state:0' holds an initial state; fed zeros, where the export's cells start" in info.notes
    result = _convert(variant_files, tmp_path, name)
    for _, export, checked in checked_exports(result, 5e-5):
        assert checked == SWEPT and not export.skipped


def test_a_savedmodel_fed_by_a_dataset_iterator_takes_its_signature_inputs(variant_files, tmp_path):
    """The signature maps the iterator's tensors as `inputs` and `lengths` and returns the labels of
    the unpadded steps (argmax, boolean_mask): the export takes the signature's inputs by their names
    and returns the per-step scores the labels are computed from."""
    info = rnnexport.inspect(variant_files / "iterator_savedmodel")
    assert [(t.name, t.dtype, t.role) for t in info.inputs] == [("inputs", "float32", "data"),
                                                                ("lengths", "int32", "lengths")]
    assert [d for _, d in _recurrent(info)] == ["forward", "backward"]
    assert info.outputs[0].shape == (None, None, 3)
    assert ("the signature's output 'outputs' is computed by ArgMax -> Reshape -> GatherV2 from the per-step scores "
            "'Reshape_1:0'; the export returns those scores (their argmax gives the labels)") in info.notes
    # The shared GRU with lengths is swept in full above; here a short sweep of rows padded and not.
    sweep = ValidateOptions(sweep=SweepOptions(lengths=(1, 2, 9), batches=(3,)), latency_repeats=0)
    result = rnnexport.convert(variant_files / "iterator_savedmodel", tmp_path,
                               ConvertOptions(targets=("onnx",), validation=sweep))
    for _, export, checked in checked_exports(result, 5e-5):
        assert {1, 2, 9} <= checked and not export.skipped
        assert any(c.case.name.startswith("lengths") for c in export.checked)


def test_the_final_states_of_a_concatenated_stack_state_are_its_columns(variant_files):
    """The loop carries the stack's one [batch, 22] state: the reference gives each layer's states,
    the LSTM's c and h and the GRU's h (the output's last step), as the export names them."""
    path = variant_files / "concat_state_stack"
    reference = plugins.find_source(path).open(path, rnnexport.SourceOptions()).reference(resolve_device("cpu"))
    try:
        x = np.random.default_rng(0).standard_normal((2, 5, 5)).astype(np.float32)
        states = reference.final_state({"x": x})
        assert {name: value.shape for name, value in states.items()} == {
            "rnn_0_c_next": (2, 8), "rnn_0_h_next": (2, 8), "rnn_1_h_next": (2, 6)}
        output = reference.run({"x": x})["y"]
        assert np.array_equal(states["rnn_1_h_next"], output[:, -1])
        assert not np.array_equal(states["rnn_0_c_next"], states["rnn_0_h_next"])
    finally:
        reference.close()

