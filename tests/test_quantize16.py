"""TFLite 16x8 (int16 activations, int8 weights) of recurrent models: every layer kind a loop whose
cell computes in int16, judged by decisions against the int16x8 defaults, at batches 1 and 3."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rnnexport.cli import cli
from rnnexport.thresholds import DEFAULT_THRESHOLDS

from conftest import every_kind

LAYERS = {"bilstm", "gru", "gru_v1", "rnn", "lstm"}


@pytest.fixture(scope="module")
def int16x8(tmp_path_factory):
    """One model with every layer kind, converted once to 16x8 with int16 I/O and validated over the sweep."""
    tmp = tmp_path_factory.mktemp("int16x8")
    source = every_kind(tmp / "kinds.keras", reset_before=True)
    rng = np.random.default_rng(7)
    np.savez(tmp / "calibration.npz", x=rng.standard_normal((16, 20, 4)).astype(np.float32))
    outcome = CliRunner().invoke(cli, [
        "convert", str(source), "--to", "tflite", "--quantize", "int16x8", "--integer-io", "--calibration",
        str(tmp / "calibration.npz"), "--out", str(tmp / "out"), "--json", "--lengths", "1,9,20",
        "--batches", "1,3"])
    return tmp, outcome


def test_int16x8_export_of_every_layer_kind_passes_the_default_thresholds(int16x8):
    _, outcome = int16x8
    assert outcome.exit_code == 0, outcome.output
    (export,) = json.loads(outcome.output)["exports"]
    judged = export["quantized"]
    assert judged["thresholds"] == DEFAULT_THRESHOLDS["int16x8"].to_dict()
    (probs,) = judged["outputs"]
    assert probs["passed"] is True, probs
    # Every step of every case: lengths 1, 9, 20 at batches 1 and 3, and the repeated call.
    assert probs["decisions"] == (1 + 3) * (1 + 9 + 20) + 1
    assert probs["top1_agreement"] >= 0.99 and probs["snr_db"] >= 30.0 and probs["kl_divergence"] <= 0.01
    assert probs["max_abs"] > 1e-6, "a quantized export that matches exactly was not quantized"
    # The error does not run away with the length (clipped states and a misread shared bias did).
    assert min(x["snr_db"] for x in probs["by_length"]) >= 35.0, probs["by_length"]
    ranked = judged["layers_by_snr"]
    assert {layer["name"] for layer in ranked} >= LAYERS
    assert all(layer["snr_db"] >= 35.0 for layer in ranked if layer["name"] in LAYERS), ranked
    details = export["details"]
    assert details["quantize"] == "int16x8" and details["batch"] is None
    assert details["io"]["x"]["dtype"] == details["io"]["probs"]["dtype"] == "int16"
    assert details["io"]["x"]["scale"] > 0 and details["io"]["probs"]["zero_point"] == 0
    assert set(details["forms"].values()) == {"loop"} and set(details["forms"]) == LAYERS


def test_int16x8_file_computes_the_cells_in_int16_with_int8_weights(int16x8):
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    tmp, _ = int16x8
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray((tmp / "out" / "kinds.tflite").read_bytes()))
    types = schema.TensorType

    def ops(subgraph, name):
        return [op for op in subgraph.operators if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == name]

    products = [(subgraph, op) for subgraph in model.subgraphs for op in ops(subgraph, "FULLY_CONNECTED")]
    # Every matrix product, the recurrent ones in the loop bodies included: int16 in and out, int8 weights.
    assert {(s.tensors[op.inputs[0]].type, s.tensors[op.inputs[1]].type, s.tensors[op.outputs[0]].type)
            for s, op in products} == {(types.INT16, types.INT8, types.INT16)}
    bodies = {op.builtinOptions.bodySubgraphIndex for s in model.subgraphs for op in ops(s, "WHILE")}
    recurrent = [op for s, op in products if model.subgraphs.index(s) in bodies]
    # gru, gru_v1 (two: gates and candidate), rnn and lstm; both directions of the bidirectional
    # LSTM step together in one BATCH_MATMUL, and project their inputs in another before the
    # loops, whose constant operands the quantizer makes int16.
    assert len(recurrent) == 5
    batched = [(s, op) for s in model.subgraphs for op in ops(s, "BATCH_MATMUL")]
    assert sorted(model.subgraphs.index(s) in bodies for s, _ in batched) == [False, True]
    assert {s.tensors[i].type for s, op in batched for i in (*op.inputs, *op.outputs)} == {types.INT16}
    gates = [(s, op) for s in model.subgraphs for name in ("LOGISTIC", "TANH") for op in ops(s, name)]
    assert gates and {s.tensors[op.outputs[0]].type for s, op in gates} == {types.INT16}
    main = model.subgraphs[0]
    (softmax,) = ops(main, "SOFTMAX")
    assert main.tensors[softmax.outputs[0]].type == types.INT16
    # The projected sequence a step loop only reads is carried as int16, not quantized and
    # dequantized whole on every step.
    for index in bodies:
        body = model.subgraphs[index]
        made = {int(o): op for op in body.operators for o in op.outputs}

        def made_by(tensor, name):
            op = made.get(int(tensor))
            return op if op is not None and flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == name else None

        for given, returned in zip(body.inputs, body.outputs):
            dequantize = made_by(returned, "DEQUANTIZE")
            quantize = dequantize is not None and made_by(dequantize.inputs[0], "QUANTIZE")
            assert not quantize or int(quantize.inputs[0]) != int(given)
    carried = [s.tensors[op.inputs[i]].type for s in model.subgraphs for op in ops(s, "WHILE")
               for i in range(len(op.inputs)) if s.tensors[op.inputs[i]].type == types.INT16]
    assert len(carried) >= 6
    # No op left of the calibrator's workaround.
    assert not [op for s in model.subgraphs for op in s.operators
                if s.tensors[op.outputs[0]].name.startswith(b"rnnexport_keeps_")]


def test_int16x8_file_answers_repeated_calls_alike_at_batches_1_and_3(int16x8):
    from rnnexport_converters.tflite.runtime import TfliteRunner

    tmp, _ = int16x8
    runner = TfliteRunner(tmp / "out" / "kinds.tflite")
    rng = np.random.default_rng(1)
    three = rng.standard_normal((3, 11, 4)).astype(np.float32)
    first = runner.run({"x": three})["probs"]
    assert first.shape == (3, 11, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(runner.run({"x": three})["probs"], first)
    np.testing.assert_array_equal(runner.run({"x": three[1:2]})["probs"], first[1:2])
