"""Models other people trained and published (../shared/realworld): they must convert and match."""

from __future__ import annotations

import numpy as np
import pytest

import rnnexport
from rnnexport import plugins
from rnnexport.device import resolve_device
from rnnexport.errors import UnsupportedModelError

from conftest import TESTS, UNTIMED, run_python

H5_MODELS = {
    "dgaintel": "dgaintel-cnn-lstm-h5/domain_classifier_model.h5",
    "sentinews": "sentinews-gru-h5/default_best.h5",
    # Keras 2.0.8: a Sequential saved as a bare list of layers, its input shape on the Embedding.
    "shakkala": "shakkala-keras2-h5/simple_model.h5",
}


@pytest.fixture(scope="module")
def converted(realworld, tmp_path_factory):
    out = tmp_path_factory.mktemp("realworld")
    return rnnexport.convert([realworld / p for p in H5_MODELS.values()], out,
                             rnnexport.ConvertOptions(targets=("all",), validation=UNTIMED))


def test_keras2_h5_models_convert_to_all_and_pass_parity(converted):
    report = converted.report
    assert report.passed, report.failures()
    assert {(e.source.split("/")[-1], e.target) for e in report.exports} == {
        (path.split("/")[-1], target) for path in H5_MODELS.values() for target in ("savedmodel", "onnx", "tflite")}
    for export in report.exports:
        lengths = {c.case.length for c in export.cases}
        if export.source.endswith("domain_classifier_model.h5"):
            assert lengths == {1, 2, 20, 82, 328}
        elif export.source.endswith("simple_model.h5"):
            assert {c.case.length for c in export.checked} == {1, 2, 123, 495, 1980}
        else:
            assert lengths >= {100, 400}
            assert any(c.case.kind == "padded" and c.passed for c in export.cases)


def test_keras2_h5_models_fuse_what_each_format_can(converted):
    details = {(e.source.split("/")[-1], e.target): e.details for e in converted.report.exports}
    assert details["domain_classifier_model.h5", "onnx"]["recurrent_ops"] == {"LSTM": 1}
    assert details["domain_classifier_model.h5", "tflite"]["recurrent_ops"] == {"WHILE": 1}
    # Masked by Embedding(mask_zero=True): fused with sequence_lens, each with its loop for holes.
    assert details["default_best.h5", "onnx"]["recurrent_ops"] == {"GRU": 3, "Loop": 3}
    assert details["default_best.h5", "onnx"]["not_fused"] == {}
    # Two masked GRUs returning sequences (three loops each: chunks, their steps, then every chunk's
    # steps at once) and one last step.
    assert details["default_best.h5", "tflite"]["recurrent_ops"] == {"WHILE": 7}
    assert details["simple_model.h5", "onnx"]["recurrent_ops"] == {"GRU": 1}
    assert details["simple_model.h5", "tflite"]["recurrent_ops"] == {"WHILE": 3}


def test_shakkala_keras208_sequential_is_read_with_keras2_semantics(realworld):
    info = rnnexport.inspect(realworld / H5_MODELS["shakkala"])
    assert info.format == "legacy .h5 (Keras 2.0.8)"
    assert [(t.name, t.dtype, t.vocab_size) for t in info.inputs] == [("embedding_2_input", "int32", 149)]
    assert info.fixed_length == 495 and info.outputs[0].shape == (None, None, 28)
    assert [(layer.kind, layer.units, layer.details.get("reset_after")) for layer in info.layers if layer.recurrent] == [
        ("GRU", 256, False)]
    assert "Keras 2 hard_sigmoid (clip(0.2x + 0.5)) kept on: gru_1" in info.notes


def test_sentinews_is_read_with_keras2_semantics(realworld):
    info = rnnexport.inspect(realworld / H5_MODELS["sentinews"])
    assert info.format == "legacy .h5 (Keras 2.0.6)"
    assert [(l.kind, l.units, l.details.get("reset_after")) for l in info.layers if l.recurrent] == [
        ("GRU", 8, False), ("GRU", 16, False), ("GRU", 8, False)]
    assert info.inputs[0].vocab_size == 43224 and info.inputs[0].mask_value == 0.0
    assert "Keras 2 hard_sigmoid (clip(0.2x + 0.5)) kept on: gru_1, gru_2, gru_3" in info.notes


@pytest.fixture(scope="module")
def tf_keras_outputs(realworld, tmp_path_factory) -> dict:
    """name -> (inputs, what tf-keras computes on them from the original file), every file in one
    tf-keras process."""
    work = tmp_path_factory.mktemp("tf_keras")
    inputs, args = {}, []
    for name, relative in H5_MODELS.items():
        info = rnnexport.inspect(realworld / relative)
        spec = info.inputs[0]
        x = np.random.default_rng(2).integers(1, spec.vocab_size, size=(3, info.fixed_length)).astype("int32")
        if spec.mask_value == 0:
            x[1, 60:] = 0
        inputs[name] = x
        np.savez(work / f"{name}.in.npz", x=x.astype("float32"))
        args += [str(realworld / relative), str(work / f"{name}.in.npz"), str(work / f"{name}.out.npz")]
    run_python(TESTS / "tfkeras_helper.py", "predict", *args, legacy_keras=True)
    return {name: (x, np.load(work / f"{name}.out.npz")["arr_0"]) for name, x in inputs.items()}


@pytest.mark.parametrize("name", sorted(H5_MODELS))
def test_our_reading_matches_tf_keras_on_the_original_file(realworld, tf_keras_outputs, name):
    """The reference is only ground truth if it computes what the authors' Keras computed."""
    path = realworld / H5_MODELS[name]
    opened = plugins.find_source(path).open(path, rnnexport.SourceOptions())
    x, expected = tf_keras_outputs[name]
    ours = next(iter(opened.reference(resolve_device("cpu")).run({opened.info.inputs[0].name: x}).values()))
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-5)


DEEPNLP_OUTPUT = "pos_var_scope_zh_1/pos_variables/output_node:0"


def test_deepnlp_tf14_checkpoint_converts_to_every_target_and_passes(realworld, tmp_path):
    options = rnnexport.ConvertOptions(targets=("all",), source=rnnexport.SourceOptions(outputs=(DEEPNLP_OUTPUT,)),
                                       validation=UNTIMED)
    result = rnnexport.convert(realworld / "deepnlp-pos-tf1ckpt", tmp_path, options)
    assert result.report.passed, result.report.failures()
    for export in result.report.exports:
        assert {c.case.length for c in export.checked} == {1, 2, 7, 30, 120}
        assert export.max_abs < 5e-5
    methods = {c.reference_method for c in result.report.exports[0].cases}
    assert "source in 4 windows of 30 steps, state carried, 1 row(s) at a time" in methods
    onnx = next(e for e in result.report.exports if e.target == "onnx")
    assert onnx.details["recurrent_ops"] == {"LSTM": 2}


def test_deepnlp_graph_is_recognised_without_guessing(realworld):
    info = rnnexport.inspect(realworld / "deepnlp-pos-tf1ckpt" / "pos.ckpt",
                             rnnexport.SourceOptions(outputs=(DEEPNLP_OUTPUT,)))
    assert [(t.name, t.dtype, t.vocab_size) for t in info.inputs] == [("input_data", "int32", 50000)]
    assert [layer.kind for layer in info.layers if layer.recurrent] == ["LSTM(units=128, forget_bias=1)"] * 2
    assert info.fixed_length == 30
    assert any("fixes the batch at 1" in note for note in info.notes)


@pytest.mark.parametrize("name, cells, length, shortest, fed_at, fused", [
    ("Basic_LSTM_S.pb", [("LSTM(units=118, forget_bias=1)", 118)], 49, 1, "Reshape_1:0", {"LSTM": 1}),
    ("GRU_S.pb", [("GRUCell(units=154)", 154)], 25, 1, "Reshape_1:0", {"GRU": 1}),
    # ONNX's LSTM has peepholes but no projection: the projected cell stays a Loop.
    ("LSTM_S.pb", [("LSTM(units=144, forget_bias=1, peepholes, num_proj=98)", 144)], 25, 1, "Reshape_1:0",
     {"Loop": 1}),
    # Conv2D(48, 10x4, strides 2x2, VALID) over (time, MFCC) before two GRUs: at least 10 steps.
    ("CRNN_S.pb", [("GRUCell(units=60)", 60)] * 2, 49, 10, "Mfcc:0", {"GRU": 2}),
])
def test_mlkws_frozen_graphs_convert_from_their_feature_tensor(realworld, tmp_path, name, cells, length, shortest,
                                                               fed_at, fused):
    path = realworld / "mlkws-rnn-frozen" / name
    with pytest.raises(UnsupportedModelError, match="cut the graph with --inputs Mfcc:0"):
        rnnexport.inspect(path)
    source = rnnexport.SourceOptions(inputs=("Mfcc:0",))
    info = rnnexport.inspect(path, source)
    assert [(layer.kind, layer.units, layer.details.get("runner")) for layer in info.layers if layer.recurrent] == [
        (kind, units, "dynamic_rnn") for kind, units in cells]
    assert info.fixed_length == length and [t.name for t in info.inputs] == ["Mfcc"]
    assert info.outputs[0].shape == (None, 12) and info.min_length == shortest
    result = rnnexport.convert(path, tmp_path, rnnexport.ConvertOptions(targets=("all",), source=source,
                                                                        validation=UNTIMED))
    assert result.report.passed, result.report.failures()
    for export in result.report.exports:
        assert {shortest, shortest + 1, length, 4 * length} <= {c.case.length for c in export.checked}
        assert not export.skipped
        assert export.max_abs < 5e-6
    methods = {c.reference_method for c in result.report.exports[0].cases}
    assert f"source, fed at '{fed_at}' with its {length} steps freed, 1 row(s) at a time" in methods
    onnx = next(e for e in result.report.exports if e.target == "onnx")
    assert onnx.details["recurrent_ops"] == fused


def _streaming(**source):
    return rnnexport.ConvertOptions(
        targets=("all",), source=rnnexport.SourceOptions(**source), export=rnnexport.ExportOptions(streaming=True),
        validation=rnnexport.ValidateOptions(sweep=rnnexport.SweepOptions(lengths=(3,)), latency_repeats=0))


def _chunked(result):
    assert result.report.passed, result.report.failures()
    for export in result.report.exports:
        chunked = [c for c in export.checked if c.case.chunk is not None]
        assert len(chunked) == 6 and all(chunked)
        yield export, chunked


@pytest.mark.parametrize("name, states, unchecked", [
    ("GRU_S.pb", {"rnn_0_h_next"}, ""),
    # Freezing pruned the loop's final cell state: only h can be compared with the graph.
    ("Basic_LSTM_S.pb", {"rnn_0_h_next"}, "final rnn_0_c not checked: the source has no such tensor"),
])
def test_mlkws_frozen_graphs_stream_from_their_feature_tensor(realworld, tmp_path, name, states, unchecked):
    result = rnnexport.convert(realworld / "mlkws-rnn-frozen" / name, tmp_path, _streaming(inputs=("Mfcc:0",)))
    for export, chunked in _chunked(result):
        for case in chunked:
            assert {o.name for o in case.outputs} == {"labels_softmax", *states}
            assert max(o.max_abs for o in case.outputs) < 5e-6
            assert case.reference_method.endswith(unchecked)


def test_sentinews_streams_and_the_cnn_lstm_is_refused(realworld, tmp_path):
    result = rnnexport.convert(realworld / H5_MODELS["sentinews"], tmp_path, _streaming())
    for export, chunked in _chunked(result):
        assert sorted(export.details["streaming_states"]) == ["gru_1_h", "gru_2_h", "gru_3_h"]
        assert max(o.max_abs for c in chunked for o in c.outputs) < 1e-5
    with pytest.raises(UnsupportedModelError, match=r"cannot stream: layer 'conv1d_4' \(Conv1D, padding='same'\) "
                       r"reads 1 step after the one it outputs"):
        rnnexport.convert(realworld / H5_MODELS["dgaintel"], tmp_path, _streaming())


def test_cutkum_dynamic_rnn_with_dropout_state_and_lengths_converts_to_every_target(realworld, tmp_path):
    """cutkum: time-major dynamic_rnn over 3 GRUCells in DropoutWrapper (keep_prob), a concatenated
    initial-state placeholder, sequence lengths and a head mapped over time (sigmoid, softmax)."""
    path = realworld / "cutkum-gru-frozen" / "frozen_model.pb"
    info = rnnexport.inspect(path)
    assert [(t.name, t.shape, t.role) for t in info.inputs] == [("inputs", (None, None, 80), "data"),
                                                                ("seq_lengths", (None,), "lengths")]
    assert [layer.kind for layer in info.layers if layer.recurrent] == [
        "GRUCell(units=512)", "GRUCell(units=256)", "GRUCell(units=128)"]
    assert info.outputs[0].name == "probs" and info.outputs[0].shape == (None, None, 5)
    assert "'placeholder/keep_prob:0' gates dropout; fed 1, which switches it off, and left out of the export" in info.notes
    assert "'placeholder/fw_state:0' holds an initial state; fed zeros, where the export's cells start" in info.notes
    result = rnnexport.convert(path, tmp_path, rnnexport.ConvertOptions(targets=("all",), validation=UNTIMED))
    assert result.report.passed, result.report.failures()
    assert {e.target for e in result.report.exports} == {"onnx", "savedmodel", "tflite"}
    for export in result.report.exports:
        assert {1, 2, 7, 32, 128} <= {c.case.length for c in export.checked}
        # Padded batches whose rows end at 16, 9 and 1 (and 64, 33, 1) steps, fed through seq_lengths.
        assert {c.case.name for c in export.checked if c.case.kind == "padded"} == {
            "lengths len=16 batch=3 true=16,9,1", "lengths len=64 batch=3 true=64,33,1"}
        assert not export.skipped and export.max_abs < 5e-5


def test_iteam1_tf_keras_savedmodel_converts_to_every_target_against_its_signature(realworld, tmp_path):
    path = realworld / "iteam1-rnn-savedmodel" / "lstm_model"
    info = rnnexport.inspect(path)
    assert info.kind == "tf2-savedmodel" and info.format == "TF2 SavedModel (tf.keras 2.6.0, Keras config in the metadata)"
    assert [(l.kind, l.units or l.details["units"]) for l in info.layers] == [
        ("LSTM", 64), ("Dense", 32), ("Dense", 32), ("Dense", 1)]
    assert info.fixed_length == 5 and info.inputs[0].shape == (None, None, 1)
    result = rnnexport.convert(path, tmp_path, rnnexport.ConvertOptions(targets=("all",), validation=UNTIMED))
    assert result.report.passed, result.report.failures()
    assert {e.target for e in result.report.exports} == {"savedmodel", "onnx", "tflite"}
    signature = "source (signature 'serving_default')"
    freed = "source (signature 'serving_default' frozen and lowered, its 5 steps freed)"
    for export in result.report.exports:
        # The signature is traced for 5 steps and returns the last step alone: ground truth at 5; the
        # signature lowered with its time axis freed (checked against it at 5) serves the others.
        assert {1, 2, 5, 20} <= {c.case.length for c in export.checked} and export.max_abs < 1e-5
        assert not export.skipped
        assert {c.reference_method for c in export.checked if c.case.length == 5} == {signature}
        assert {c.reference_method for c in export.checked if c.case.length != 5} == {freed}
