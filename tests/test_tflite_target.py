"""TFLite exports: builtin ops, any length at a fixed batch, fused LSTMs, run on LiteRT."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import rnnexport
from rnnexport import ConvertOptions, SourceOptions, SweepOptions, ValidateOptions
from rnnexport.cli import cli
from rnnexport.errors import ExportError
from rnnexport.options import ExportOptions

from conftest import artifact, export_result
from keras_models import KINDS, build, flex_op

LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"
RECURRENT = {
    "lstm": {LSTM: 1},
    "gru_reset_after": {"WHILE": 1},
    "gru_reset_before": {"WHILE": 1},
    "simple_rnn": {"WHILE": 1},
    "bidirectional_stack": {LSTM: 2, "WHILE": 2},
    "stacked": {LSTM: 1, "WHILE": 2},
    "last_step": {LSTM: 1},
    "return_state": {"WHILE": 1},
    "masking": {"WHILE": 1},
    "embedding": {"WHILE": 1},
    "embedding_mask_zero": {"WHILE": 1},
    "time_distributed": {"WHILE": 1},
    "fixed_length": {"WHILE": 1},
    "unrolled": {LSTM: 1, "WHILE": 1},
    "multi_input": {LSTM: 1, "WHILE": 1},
    "sequential": {LSTM: 1},
}


def test_every_kind_has_an_expectation():
    assert set(RECURRENT) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_builtin_ops_only_and_parity_at_lengths_the_source_never_saw(converted_kinds, kind):
    _, path, result = converted_kinds[kind]
    export = export_result(result, "tflite")
    assert export.passed, export.failures()
    assert export.device == "CPU (LiteRT, XNNPACK delegate)"
    assert export.details["batch"] == 1
    assert not [op for op in export.details["ops"] if op.startswith("Flex") or op == "CUSTOM"]
    assert export.details["recurrent_ops"] == RECURRENT[kind]
    fixed = rnnexport.inspect(path).fixed_length
    assert max(c.case.length for c in export.cases) >= 4 * (fixed or 32)
    assert {c.case.batch for c in export.cases} >= {1, 3}


def test_lstm_is_fused_and_other_layers_say_why_not(converted_kinds):
    export = export_result(converted_kinds["stacked"][2], "tflite")
    assert export.details["fused"] == {"lstm": LSTM}
    assert export.details["not_fused"] == {
        "gru": "TFLite has no fused GRU kernel; it runs as a WHILE loop of builtin ops",
        "rnn": "the converter fuses no Keras SimpleRNN; it runs as a WHILE loop of builtin ops",
    }
    assert "the fused LSTM kernel does not return the final states" in export_result(
        converted_kinds["return_state"][2], "tflite").details["not_fused"]["lstm"]


def test_fused_lstm_state_is_not_shared_with_another_op(converted_kinds):
    """The converter merges the LSTM's zero state with a GRU's zero initial state of the same
    shape; the export must give the stateful operand its own tensor."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(artifact(converted_kinds["stacked"][2], "tflite")))
    for subgraph in model.subgraphs:
        for index, tensor in enumerate(subgraph.tensors):
            if tensor.isVariable:
                users = [op for op in subgraph.operators if index in list(op.inputs)]
                assert len(users) <= 1


def test_fused_lstm_keeps_state_between_invokes_unless_reset(converted_kinds):
    """Why the runner resets variables: a deployment that does not carries the last state over."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact(converted_kinds["lstm"][2], "tflite")))
    (index,) = [d["index"] for d in interpreter.get_input_details()]
    (out,) = [d["index"] for d in interpreter.get_output_details()]
    x = np.random.default_rng(0).standard_normal((1, 6, 5)).astype("float32")
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    runs = []
    for reset in (False, False, True):
        if reset:
            interpreter.reset_all_variables()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        runs.append(interpreter.get_tensor(out))
    assert np.abs(runs[1] - runs[0]).max() > 1e-3
    np.testing.assert_array_equal(runs[2], runs[0])


def test_fixed_batch_is_recorded_and_other_batches_run_in_chunks(tmp_path):
    path = tmp_path / "gru.keras"
    build("gru_reset_after").save(path)
    result = rnnexport.convert(path, tmp_path, ConvertOptions(
        targets=("tflite",), export=ExportOptions(target_options={"tflite": {"batch": 2}}),
        validation=ValidateOptions(sweep=SweepOptions(lengths=(1, 9, 100), batches=(1, 2, 5)))))
    export = export_result(result, "tflite")
    assert export.passed, export.failures()
    assert export.details["batch"] == 2
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(artifact(result, "tflite"))).get_signature_runner().get_input_details()
    assert list(details["x"]["shape_signature"]) == [2, -1, 5]


@pytest.mark.parametrize("quantize, kind", [("float16", "stacked"), ("dynamic-range", None)])
def test_quantized_export_passes_its_tolerance_and_fails_the_float32_one(tmp_path, quantize, kind):
    import keras

    # Dynamic-range quantization leaves weights under 1024 elements alone: use a larger GRU.
    if kind is None:
        keras.utils.set_random_seed(4)
        i = keras.Input((None, 16), name="x")
        model = keras.Model(i, keras.layers.GRU(48, return_sequences=True, name="gru")(i))
    else:
        model = build(kind)
    path = tmp_path / "model.keras"
    model.save(path)
    runner = CliRunner()
    own = runner.invoke(cli, ["convert", str(path), "--to", "tflite", "--quantize", quantize, "--out",
                              str(tmp_path / "q"), "--json"])
    assert own.exit_code == 0, own.output
    export = json.loads(own.output)["exports"][0]
    assert export["details"]["quantize"] == quantize
    assert export["tolerance"]["atol"] > 1e-5
    assert export["max_abs"] > 1e-5
    strict = runner.invoke(cli, ["validate", str(path), str(tmp_path / "q" / "model.tflite"),
                                 "--atol", "1e-5", "--rtol", "1e-5"])
    assert strict.exit_code == 1, strict.output


def test_flex_ops_need_the_option_and_are_never_reported_as_passed(tmp_path):
    model = flex_op()
    with pytest.raises(ExportError, match="no builtin op for Cumprod; pass --tflite-select-ops") as refused:
        rnnexport.convert(model, tmp_path, ConvertOptions(targets=("tflite",), source=SourceOptions(unsafe=True)))
    assert "\n" not in str(refused.value)
    assert "'tf.Cumprod' op is neither a custom op nor a flex op" in refused.value.log  # shown with --debug
    assert not (tmp_path / "flex_op.tflite").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rnnexport-")], "temporary export left behind"
    result = rnnexport.convert(model, tmp_path, ConvertOptions(
        targets=("tflite",), source=SourceOptions(unsafe=True),
        export=ExportOptions(target_options={"tflite": {"select_ops": True}})))
    export = export_result(result, "tflite")
    assert not export.passed and not result.report.passed
    assert export.status == "NOT VALIDATED" and export.cases == ()
    assert "uses TensorFlow (Flex) ops FlexCumprod, which this LiteRT interpreter cannot run" in export.error
    assert "NOT VALIDATED" in result.report.table()
