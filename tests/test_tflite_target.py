"""TFLite exports: builtin ops, any batch and length, no state kept between calls, run on LiteRT
as deployers call it."""

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

from conftest import UNTIMED, artifact, export_result
from keras_models import KINDS, build, flex_op

LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"
RNN = "UNIDIRECTIONAL_SEQUENCE_RNN"
# A loop form's returned sequence is three WHILE ops (a loop over chunks around a loop over their
# steps, then a loop over the steps of every chunk at once); its last step alone is one. A masked fused layer keeps the loop form for rows with holes.
RECURRENT = {
    "lstm": {LSTM: 1},
    "gru_reset_after": {"WHILE": 3},
    "gru_reset_before": {"WHILE": 3},
    "simple_rnn": {RNN: 1},
    "bidirectional_stack": {LSTM: 2, "WHILE": 1},
    "stacked": {LSTM: 1, "WHILE": 4},
    "last_step": {"WHILE": 1},
    "return_state": {LSTM: 1},
    "masking": {LSTM: 1, "WHILE": 3},
    "embedding": {"WHILE": 3},
    "embedding_mask_zero": {"WHILE": 1},
    "time_distributed": {RNN: 1},
    "fixed_length": {"WHILE": 3},
    "unrolled": {LSTM: 1, "WHILE": 1},
    "multi_input": {"WHILE": 4},
    "sequential": {LSTM: 1},
}
# TimeDistributed layers trace through tensor lists the converter lowers only at a fixed batch.
FIXED_BATCH = {"time_distributed"}


def test_every_kind_has_an_expectation():
    assert set(RECURRENT) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_builtin_ops_only_and_parity_at_lengths_the_source_never_saw(converted_kinds, kind):
    _, path, result = converted_kinds[kind]
    export = export_result(result, "tflite")
    assert export.passed, export.failures()
    assert export.device == "CPU (LiteRT, XNNPACK delegate)"
    assert export.details["batch"] == (1 if kind in FIXED_BATCH else None)
    assert export.details["stateless"] is True
    assert not [op for op in export.details["ops"] if op.startswith("Flex") or op == "CUSTOM"]
    assert export.details["recurrent_ops"] == RECURRENT[kind]
    fixed = rnnexport.inspect(path).fixed_length
    assert max(c.case.length for c in export.cases) >= 4 * (fixed or 32)
    assert {c.case.batch for c in export.cases} >= {1, 3}
    again = [c for c in export.cases if c.case.kind == "again"]
    assert len(again) == 1 and again[0].passed


def test_each_layer_says_which_form_it_runs_in_and_why(converted_kinds):
    export = export_result(converted_kinds["stacked"][2], "tflite")
    assert export.details["fused"] == {"lstm": LSTM}
    assert export.details["forms"] == {"lstm": "fused", "gru": "loop", "rnn": "loop"}
    assert export.details["not_fused"] == {
        "gru": "LiteRT has no fused GRU kernel",
        "rnn": "only its last step is used: the loop form is faster than the fused kernel there",
    }
    assert export_result(converted_kinds["return_state"][2], "tflite").details["not_fused"] == {}
    assert export_result(converted_kinds["embedding_mask_zero"][2], "tflite").details["forms"] == {"lstm": "loop"}


@pytest.fixture(scope="module")
def fusable_models(tmp_path_factory, lstm_cells):
    """Layers the fused kernels compute although the converter never fuses them: returned states,
    go_backwards, a Bidirectional returning both directions and their states, a relu SimpleRNN,
    masked layers; and TF1 LSTMCells with peepholes, cell_clip and a projection."""
    import keras

    out = tmp_path_factory.mktemp("fusable")
    layers = keras.layers
    keras.utils.set_random_seed(5)
    models = {
        "states": lambda x: list(layers.LSTM(8, return_sequences=True, return_state=True)(x)),
        "backwards": lambda x: layers.LSTM(8, return_sequences=True, go_backwards=True)(x),
        "both_directions": lambda x: layers.Bidirectional(
            layers.LSTM(6, return_sequences=True, return_state=True), merge_mode=None)(x),
        "relu_rnn_states": lambda x: list(layers.SimpleRNN(8, return_sequences=True, return_state=True,
                                                           activation="relu")(x)),
        "masked_lstm": lambda x: layers.LSTM(8, return_sequences=True)(layers.Masking(0.0)(x)),
    }
    for name, make in models.items():
        x = keras.Input((None, 5), name="x")
        keras.Model(x, make(x)).save(out / f"{name}.keras")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    embedded = layers.Embedding(30, 5, mask_zero=True)(tokens)
    keras.Model(tokens, layers.SimpleRNN(8, return_sequences=True)(embedded)).save(out / "masked_rnn.keras")
    for cell in lstm_cells.iterdir():
        (out / cell.name).symlink_to(cell)
    return out


@pytest.mark.parametrize("name, ops", [
    ("states.keras", {LSTM: 1}),
    ("backwards.keras", {LSTM: 1}),
    ("both_directions.keras", {LSTM: 2}),
    ("relu_rnn_states.keras", {RNN: 1}),
    ("masked_lstm.keras", {LSTM: 1, "WHILE": 3}),
    ("masked_rnn.keras", {RNN: 1, "WHILE": 3}),
    ("peepholes", {LSTM: 1}),
    ("peepholes_clipped", {LSTM: 1}),
    ("projected", {LSTM: 1}),
])
def test_fused_kernels_compute_states_directions_masks_and_tf1_cells(fusable_models, tmp_path, name, ops):
    result = rnnexport.convert(fusable_models / name, tmp_path, ConvertOptions(targets=("tflite",), validation=UNTIMED))
    export = export_result(result, "tflite")
    assert export.passed, export.failures()
    assert export.details["recurrent_ops"] == ops
    assert export.details["not_fused"] == {} and export.details["batch"] is None
    assert max(c.case.length for c in export.cases) >= 128


@pytest.mark.parametrize("name", ["masked_lstm.keras", "masked_rnn.keras"])
def test_a_masked_fused_layer_runs_rows_with_holes_as_keras_does(fusable_models, tmp_path, name):
    """The sweep pads at the end; a mask with a hole (a masked step before an unmasked one) takes
    the loop form inside the file, and a row of padding only gives what Keras gives."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    model = keras.models.load_model(fusable_models / name)
    rnnexport.convert(fusable_models / name, tmp_path, ConvertOptions(
        targets=("tflite",),
        validation=ValidateOptions(sweep=SweepOptions(lengths=(3,), batches=(1,)), latency_repeats=0)))
    run = Interpreter(model_path=str(tmp_path / name.replace(".keras", ".tflite"))).get_signature_runner()
    rng = np.random.default_rng(3)
    if name == "masked_rnn.keras":
        x = rng.integers(1, 30, size=(3, 9)).astype(np.int32)
        x[0, 3:5] = 0
        x[1, 6:] = 0
        x[2, :] = 0
        feed = {"tokens": x}
    else:
        x = rng.standard_normal((3, 9, 5)).astype(np.float32)
        x[0, 3:5] = 0.0
        x[1, 6:] = 0.0
        x[2, :] = 0.0
        feed = {"x": x}
    for rows in (x, x[1:]):
        got = next(iter(run(**{k: rows for k in feed}).values()))
        np.testing.assert_allclose(got, np.asarray(model(rows)), atol=2e-5, rtol=1e-4)


def _sample(model, names: list[str], batch: int, length: int, rng) -> dict[str, np.ndarray]:
    """Inputs for every input of `model`, under the export's `names` for them: floats, or token
    ids above 0 (0 is padding)."""
    feed = {}
    for tensor, name in zip(model.inputs, names):
        shape = (batch, length, *tensor.shape[2:]) if tensor.shape[1] is None else (batch, *tensor.shape[1:])
        if "int" in str(tensor.dtype):
            feed[name] = rng.integers(1, 20, size=shape).astype(np.int32)
        else:
            feed[name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def _expected(model, names: list[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    given = list(feed.values())
    out = model(given[0] if len(given) == 1 else given)
    return {name: np.asarray(o) for name, o in zip(names, out if isinstance(out, (list, tuple)) else [out])}


# Same shape twice, longer, another batch, shorter, back again.
CALLS = ((1, 9), (1, 9), (3, 20), (3, 4), (1, 9), (2, 1))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_call_gives_the_same_answer_with_no_reset_at_any_batch(converted_kinds, kind):
    """As deployers call a file: one interpreter, the signature runner (or resize, allocate and
    invoke twice), never `reset_all_variables()`; batch 3 on a file written without --batch."""
    from ai_edge_litert.interpreter import Interpreter

    model, source, result = converted_kinds[kind]
    path = artifact(result, "tflite")
    info = rnnexport.inspect(source)
    names, input_names = [spec.name for spec in info.outputs], [spec.name for spec in info.inputs]
    rng = np.random.default_rng(7)
    calls = [(b, t) for b, t in CALLS if kind not in FIXED_BATCH or b == 1]
    if any(t.shape[1] is not None for t in model.inputs):
        calls = [(b, model.inputs[0].shape[1]) for b, _ in calls]
    signature = Interpreter(model_path=str(path)).get_signature_runner()
    for batch, length in calls:
        feed = _sample(model, input_names, batch, length, rng)
        got, want = signature(**feed), _expected(model, names, feed)
        for name in names:
            np.testing.assert_allclose(got[name], want[name], atol=2e-5, rtol=1e-4, err_msg=f"{(batch, length)}")
    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    inputs = {name: d["index"] for name, d in runner.get_input_details().items()}
    outputs = {name: d["index"] for name, d in runner.get_output_details().items()}
    del runner  # a live signature runner keeps the interpreter from re-allocating
    for batch, length in calls[1:3]:
        feed = _sample(model, input_names, batch, length, rng)
        for name, value in feed.items():
            interpreter.resize_tensor_input(inputs[name], value.shape)
        interpreter.allocate_tensors()
        want = _expected(model, names, feed)
        for _ in range(2):
            for name, value in feed.items():
                interpreter.set_tensor(inputs[name], value)
            interpreter.invoke()
            for name in names:
                np.testing.assert_allclose(interpreter.get_tensor(outputs[name]), want[name], atol=2e-5, rtol=1e-4)


def test_a_fixed_batch_file_answers_right_or_refuses_another_batch(tmp_path):
    """A deployer who resizes a `--batch 2` file to batch 3 gets either the right answer or an
    error, never values computed for another batch."""
    from ai_edge_litert.interpreter import Interpreter

    model = build("stacked")
    path = tmp_path / "stacked.keras"
    model.save(path)
    rnnexport.convert(path, tmp_path / "out", ConvertOptions(
        targets=("tflite",), export=ExportOptions(target_options={"tflite": {"batch": 2}}),
        validation=ValidateOptions(sweep=SweepOptions(lengths=(3,), batches=(2,)), latency_repeats=0)))
    interpreter = Interpreter(model_path=str(tmp_path / "out" / "stacked.tflite"))
    (index,) = [d["index"] for d in interpreter.get_input_details()]
    (out,) = [d["index"] for d in interpreter.get_output_details()]
    x = np.random.default_rng(0).standard_normal((3, 6, 5)).astype(np.float32)
    try:
        interpreter.resize_tensor_input(index, x.shape, strict=False)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
    except (RuntimeError, ValueError):
        return
    np.testing.assert_allclose(interpreter.get_tensor(out), np.asarray(model(x)), atol=2e-5, rtol=1e-4)


def test_the_gate_fails_a_file_that_keeps_state_between_calls(converted_kinds, tmp_path):
    """The zeroing FILLs taken out of a fused LSTM's file: its state tensors then keep the last
    call's final state, as the converter's own LSTM files do. Only the repeated case catches it."""
    from tensorflow.lite.tools import flatbuffer_utils

    _, source, result = converted_kinds["lstm"]
    model = flatbuffer_utils.read_model(str(artifact(result, "tflite")))
    subgraph = model.subgraphs[0]
    subgraph.operators = [op for op in subgraph.operators
                          if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) != "FILL"]
    for tensor in subgraph.tensors:
        if tensor.isVariable:
            tensor.shape[0] = 1  # the converter's own state tensors: batch 1, zeros until overwritten
    stateful = tmp_path / "stateful.tflite"
    flatbuffer_utils.write_model(model, str(stateful))
    outcome = CliRunner().invoke(cli, ["validate", str(source), str(stateful), "--lengths", "1,5", "--batches", "1"])
    assert outcome.exit_code == 1, outcome.output
    assert "the export keeps state between calls: the first case run again right after itself" in outcome.output


def test_fixed_batch_is_recorded_and_other_batches_run_in_chunks(tmp_path):
    path = tmp_path / "gru.keras"
    build("gru_reset_after").save(path)
    result = rnnexport.convert(path, tmp_path, ConvertOptions(
        targets=("tflite",), export=ExportOptions(target_options={"tflite": {"batch": 2}}),
        validation=ValidateOptions(sweep=SweepOptions(lengths=(1, 9, 100), batches=(1, 2, 5)), latency_repeats=0)))
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


def test_the_loop_form_on_request_has_no_fused_kernel_and_the_same_parity(converted_kinds, tmp_path):
    _, source, _ = converted_kinds["bidirectional_stack"]
    outcome = CliRunner().invoke(cli, ["convert", str(source), "--to", "tflite", "--tflite-form", "loop",
                                       "--out", str(tmp_path), "--json"])
    assert outcome.exit_code == 0, outcome.output
    details = json.loads(outcome.output)["exports"][0]["details"]
    assert details["recurrent_ops"] == {"WHILE": 4}
    assert details["forms"] == {"bilstm": "loop", "bigru": "loop"}
    assert details["not_fused"]["bilstm"] == "--tflite-form loop"
