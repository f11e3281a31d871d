"""Keras recurrent layers frozen into TF1 GraphDefs (Keras 2.x on the TensorFlow backend, frozen by
"keras to tensorflow" scripts): `K.rnn`'s while loop and `unroll=True` copies, LSTM, GRU (both
`reset_after`) and SimpleRNN with `implementation` 1 and 2, hard_sigmoid gates, no biases, and an
Embedding fed float ids. Each is converted to every target and checked against the graph."""

from __future__ import annotations

import json

import pytest

import rnnexport
from rnnexport import ConvertOptions, SourceOptions

from conftest import TESTS, UNTIMED, export_result, run_python

HARD = "recurrent_activation=hard_sigmoid_keras2"
LAYERS = {
    "lstm_lm": ["Embedding", f"keras LSTM(units=3, {HARD})", f"keras LSTM(units=4, {HARD})", "matmul + bias"],
    "loop_stack": [f"keras GRU(units=3, {HARD}, reset_after=False)", f"keras GRU(units=4, {HARD})",
                   "keras GRU(units=4)", "keras GRU(units=3, reset_after=False)", "keras LSTM(units=5)",
                   "keras SimpleRNN(units=3)", "keras SimpleRNN(units=3, activation=relu)", "matmul + bias"],
    "unrolled": [f"keras LSTM(units=3, {HARD})", "keras GRU(units=3, reset_after=False)", "keras SimpleRNN(units=3)",
                 "matmul + bias"],
}
FUSED = {"lstm_lm": {"LSTM": 2}, "loop_stack": {"GRU": 4, "LSTM": 1, "RNN": 2},
         "unrolled": {"LSTM": 1, "GRU": 1, "RNN": 1}}
# Far below any tolerance: the exports compute x.W + h.U as the traced Keras cells do.
BOUND = 1e-5


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """The graphs tf1_keras_frozen_helper froze, and its manifest."""
    out = tmp_path_factory.mktemp("tf1_keras_frozen")
    run_python(TESTS / "tf1_keras_frozen_helper.py", "write", str(out), legacy_keras=True)
    return out, json.loads((out / "manifest.json").read_text())


def _source(manifest, name):
    return SourceOptions(inputs=(manifest[name]["input"],), outputs=(manifest[name]["output"],))


@pytest.fixture(scope="module")
def converted(frozen, tmp_path_factory):
    directory, manifest = frozen
    out = tmp_path_factory.mktemp("tf1_keras_frozen_exports")
    return {name: rnnexport.convert(directory / f"{name}.pb", out / name,
                                    ConvertOptions(targets=("all",), source=_source(manifest, name),
                                                   validation=UNTIMED))
            for name in LAYERS}


@pytest.fixture(scope="module")
def inspected(frozen):
    directory, manifest = frozen
    return {name: rnnexport.inspect(directory / f"{name}.pb", _source(manifest, name)) for name in LAYERS}


def _passed(result):
    assert result.report.passed, result.report.failures()
    for export in result.report.exports:
        for case in export.checked:
            for output in case.outputs:
                assert output.max_abs is not None and output.max_abs < BOUND, (export.target, case.case.name)


@pytest.mark.parametrize("name", ["loop_stack", "unrolled"])
def test_every_keras_cell_form_converts_and_matches_at_every_swept_length(converted, name):
    _passed(converted[name])
    for target in ("savedmodel", "onnx", "tflite"):
        assert {c.case.length for c in export_result(converted[name], target).checked} == {1, 2, 3, 6, 24}
    assert export_result(converted[name], "onnx").details["recurrent_ops"] == FUSED[name]


def test_layers_are_read_with_their_gate_activations_and_reset_placement(inspected):
    for name, kinds in LAYERS.items():
        assert [layer.kind for layer in inspected[name].layers] == kinds, name
    loops = inspected["loop_stack"]
    assert [layer.name for layer in loops.layers if layer.recurrent] == [
        "gru", "gru_1", "gru_2", "gru_3", "lstm", "simple_rnn", "simple_rnn_1"]
    assert {layer.details["runner"] for layer in loops.layers if layer.recurrent} == {"dynamic_rnn"}
    assert {layer.details["runner"] for layer in inspected["unrolled"].layers if layer.recurrent} == {"unroll=True (6 steps)"}


def test_keras_2_own_forms_are_read_and_reproduce_the_graph(frozen):
    """Weights sliced before the loop, the gate product cut by strided slices, Keras 2's zero state:
    inspect recognises the cells and has already run the equivalent against the graph (to 1e-4)."""
    directory, manifest = frozen
    info = rnnexport.inspect(directory / "keras22_written.pb", _source(manifest, "keras22_written"))
    assert [(layer.name, layer.kind) for layer in info.layers] == [
        ("lstm_1", f"keras LSTM(units=3, {HARD})"), ("gru_1", f"keras GRU(units=3, {HARD}, reset_after=False)"),
        ("projection", "matmul")]
    assert info.exportable and info.fixed_length == 6


def test_float_ids_cast_for_the_embedding_become_int_ids_and_the_last_step_is_checked_at_its_length(
        inspected, converted):
    assert [(t.name, t.dtype, t.shape, t.vocab_size) for t in inspected["lstm_lm"].inputs] == [("ids", "int32", (None, None), 20)]
    result = converted["lstm_lm"]
    _passed(result)
    onnx = export_result(result, "onnx")
    assert onnx.details["recurrent_ops"] == FUSED["lstm_lm"]
    assert {c.case.length for c in onnx.checked} == {6}
    skipped = {c.case.length: c.skipped for c in onnx.skipped}
    assert skipped[1] == "the graph returns only its last step, so lengths that are not multiples of 6 have no ground truth"
    assert skipped[24].startswith("longer than the graph's 6 steps, and state cannot be carried across windows")
