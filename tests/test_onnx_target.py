"""ONNX exports: one fused op per recurrent layer, named dynamic dims, parity in onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import rnnexport
from rnnexport import ConvertOptions
from rnnexport.cli import cli

from conftest import UNTIMED, artifact, export_result
from keras_models import KINDS, build

FUSED = {
    "lstm": {"LSTM": 1},
    "gru_reset_after": {"GRU": 1},
    "gru_reset_before": {"GRU": 1},
    "simple_rnn": {"RNN": 1},
    "bidirectional_stack": {"LSTM": 1, "GRU": 1},
    "stacked": {"LSTM": 1, "GRU": 1, "RNN": 1},
    "last_step": {"LSTM": 1},
    "return_state": {"LSTM": 1},
    "masking": {"LSTM": 1, "Loop": 1},
    "embedding": {"GRU": 1},
    "embedding_mask_zero": {"LSTM": 1, "Loop": 1},
    "time_distributed": {"RNN": 1},
    "fixed_length": {"GRU": 1},
    "unrolled": {"LSTM": 1, "RNN": 1},
    "multi_input": {"GRU": 1, "LSTM": 1},
    "sequential": {"LSTM": 1},
}


def _nodes(path, op_type):
    return [n for n in onnx.load(str(path)).graph.node if n.op_type == op_type]


def _attr(node, name):
    return next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def test_every_kind_has_an_expectation():
    assert set(FUSED) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_recurrent_layers_become_fused_ops_and_pass_parity(converted_kinds, kind):
    _, path, result = converted_kinds[kind]
    export = export_result(result, "onnx")
    assert export.passed, export.failures()
    assert export.device == "CPU (onnxruntime CPUExecutionProvider)"
    assert export.details["recurrent_ops"] == FUSED[kind]
    # A Loop only where a masked layer's If runs the layer's own loop for masks with holes.
    all_ops = {n.op_type for n in onnx.load(str(artifact(result, "onnx"))).graph.node}
    assert "Loop" not in all_ops
    assert ("If" in all_ops) == ("Loop" in FUSED[kind])
    fixed = rnnexport.inspect(path).fixed_length
    assert max(c.case.length for c in export.cases) >= 4 * (fixed or 32)


def test_masked_layers_are_fused_with_their_loop_for_masks_with_holes(converted_kinds):
    export = export_result(converted_kinds["masking"][2], "onnx")
    assert export.details["not_fused"] == {}
    assert export.details["fused"] == {
        "lstm": "LSTM with sequence_lens; the layer's Loop where a mask has holes (an If chooses)"}
    padded = [c for c in export.cases if c.case.kind == "padded"]
    assert padded and all(padded)


def test_bidirectional_layers_are_one_bidirectional_op(converted_kinds):
    path = artifact(converted_kinds["bidirectional_stack"][2], "onnx")
    for op_type in ("LSTM", "GRU"):
        (node,) = _nodes(path, op_type)
        assert _attr(node, "direction") == b"bidirectional"


@pytest.mark.parametrize("kind, expected", [("gru_reset_after", 1), ("gru_reset_before", 0)])
def test_gru_reset_after_maps_to_linear_before_reset(converted_kinds, kind, expected):
    (node,) = _nodes(artifact(converted_kinds[kind][2], "onnx"), "GRU")
    assert _attr(node, "linear_before_reset") == expected


def test_file_is_valid_with_named_dynamic_dims_and_metadata(converted_kinds):
    _, source, result = converted_kinds["embedding"]
    path = artifact(result, "onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    (tokens,) = proto.graph.input
    assert tokens.name == "tokens"
    assert [d.dim_param for d in tokens.type.tensor_type.shape.dim] == ["batch", "time"]
    (tags,) = proto.graph.output
    dims = tags.type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_param, dims[2].dim_value) == ("batch", "time", 4)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["rnnexport.source"] == str(source) and meta["rnnexport.source_kind"] == "keras"
    assert meta["rnnexport.version"] == rnnexport.__version__
    assert json.loads(meta["rnnexport.fused"]) == {"gru": "GRU"}
    parity = json.loads(meta["rnnexport.parity"])
    assert parity["passed"] is True and parity["cases"] == 11 and parity["lengths"] == [1, 2, 7, 32, 128]


def test_one_session_serves_every_length_and_batch(converted_kinds):
    """The dynamic dims are real: no re-export, one onnxruntime session, any shape."""
    import onnxruntime as ort

    model, _, result = converted_kinds["stacked"]
    session = ort.InferenceSession(str(artifact(result, "onnx")), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 1), (5, 3), (2, 700)):
        x = np.random.default_rng(length).standard_normal((batch, length, 5)).astype("float32")
        (y,) = session.run(None, {"x": x})
        np.testing.assert_allclose(y, np.asarray(model(x)), atol=1e-5)


def test_keras2_hard_sigmoid_becomes_onnx_hard_sigmoid(keras2_files, tmp_path):
    options = ConvertOptions(targets=("onnx",), validation=UNTIMED)
    result = rnnexport.convert(keras2_files["hard_sigmoid_gru"], tmp_path, options)
    assert result.report.passed, result.report.failures()
    (gru,) = _nodes(artifact(result, "onnx"), "GRU")
    assert _attr(gru, "activations") == [b"HardSigmoid", b"Tanh"]
    assert _attr(gru, "activation_alpha") == pytest.approx([0.2]) and _attr(gru, "activation_beta") == [0.5]
    assert _attr(gru, "linear_before_reset") == 0


def test_opset_option(tmp_path):
    path = tmp_path / "gru.keras"
    build("gru_reset_after").save(path)
    result = CliRunner().invoke(cli, ["convert", str(path), "--to", "onnx", "--opset", "15", "--out", str(tmp_path),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["exports"][0]["details"]["opset"] == 15
    bad = CliRunner().invoke(cli, ["convert", str(path), "--to", "onnx", "--opset", "9", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--opset" in bad.output


def test_tampered_weights_fail_validate(tmp_path):
    path = tmp_path / "gru.keras"
    build("gru_reset_before").save(path)
    options = ConvertOptions(targets=("onnx",), validation=UNTIMED)
    good = artifact(rnnexport.convert(path, tmp_path / "e", options), "onnx")
    proto = onnx.load(str(good))
    (gru,) = [n for n in proto.graph.node if n.op_type == "GRU"]
    recurrent = next(i for i in proto.graph.initializer if i.name == gru.input[2])
    weights = numpy_helper.to_array(recurrent).copy()
    weights[0, 0, 0] += 0.05
    recurrent.CopyFrom(numpy_helper.from_array(weights, recurrent.name))
    bad = tmp_path / "tampered.onnx"
    onnx.save(proto, str(bad))
    runner = CliRunner()
    assert runner.invoke(cli, ["validate", str(path), str(good)]).exit_code == 0
    failed = runner.invoke(cli, ["validate", str(path), str(bad)])
    assert failed.exit_code == 1, failed.output
    assert "FAIL onnx tampered.onnx: len=2 batch=1: output 'gru': max abs err" in failed.output


def test_more_than_ten_recurrent_layers_each_get_their_own_op(tmp_path):
    """Stub 1 must not be taken for stub 10: each layer has its own width, so a mix-up breaks."""
    import keras

    keras.utils.set_random_seed(5)
    x = i = keras.Input((None, 3), name="x")
    for n in range(12):
        x = (keras.layers.GRU, keras.layers.LSTM, keras.layers.SimpleRNN)[n % 3](4 + n, return_sequences=True,
                                                                              name=f"r{n}")(x)
    result = rnnexport.convert(keras.Model(i, x, name="deep"), tmp_path, ConvertOptions(
        targets=("onnx",),
        validation=rnnexport.ValidateOptions(sweep=rnnexport.SweepOptions(lengths=(1, 9, 40)), latency_repeats=0)))
    export = export_result(result, "onnx")
    assert export.passed, export.failures()
    assert export.details["recurrent_ops"] == {"GRU": 4, "LSTM": 4, "RNN": 4}
    assert len(export.details["fused"]) == 12
