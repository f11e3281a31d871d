"""Streaming exports: `initial_state(batch)` and `step(x, *state)` in every format, from every
source kind, run chunk by chunk and compared with the source on the whole sequence."""

import json

import keras
import numpy as np
import onnx
import pytest
from conftest import TESTS, rnnexport_cmd, without_progress
from keras_models import build

import rnnexport
from rnnexport.device import resolve_device
from rnnexport.errors import UnsupportedModelError
from rnnexport.options import ConvertOptions, ExportOptions, SweepOptions, ValidateOptions
from rnnexport.parity import stream
from rnnexport.plugins import get_target
from rnnexport.sweep import Case

TARGETS = ("onnx", "savedmodel", "tflite")
# The full-sequence sweep is covered by each source's own tests; one short length keeps these quick.
STREAMING = ConvertOptions(targets=("all",), export=ExportOptions(streaming=True),
                           validation=ValidateOptions(sweep=SweepOptions(lengths=(3,)), latency_repeats=0))
KERAS = {
    "lstm": ["lstm_h", "lstm_c"],
    "gru_reset_after": ["gru_h"],
    "simple_rnn": ["rnn_h"],
    "stacked": ["lstm_h", "lstm_c", "gru_h", "rnn_h"],
    "return_state": ["lstm_h", "lstm_c"],
    "embedding_mask_zero": ["lstm_h", "lstm_c"],
    "multi_input": ["gru_h", "summary_h", "summary_c"],
}
TF1 = {
    "basic_lstm_forget_bias_dynamic": ["rnn_0_c", "rnn_0_h"],
    "gru_dynamic_sequence_length": ["rnn_0_h"],
    "basic_rnn_dynamic": ["rnn_0_h"],
    "multi_lstm_custom_scope": ["rnn_0_c", "rnn_0_h", "rnn_1_c", "rnn_1_h", "rnn_2_c", "rnn_2_h"],
    "lstm_peephole_projection_time_major": ["rnn_0_c", "rnn_0_h"],
    "trained_initial_state": ["rnn_0_h"],
}
FROZEN = {
    "basic_lstm_static": ["rnn_0_c", "rnn_0_h"],
    "gru_static": ["rnn_0_h"],
    "basic_rnn_static": ["rnn_0_h"],
    "two_layer_gru_static": ["rnn_0_h", "rnn_1_h"],
}


def assert_streams(result, states, bound):
    """Every target wrote streaming entry points, and each ran the long sequence in chunks of 1,
    5 and 17 at batch 1 and 3, outputs and final states within `bound` of the source."""
    assert result.passed, result.report.failures()
    assert sorted(e.target for e in result.report.exports) == list(TARGETS)
    for export in result.report.exports:
        chunked = [c for c in export.checked if c.case.chunk is not None]
        assert sorted((c.case.chunk, c.case.batch) for c in chunked) == [
            (chunk, batch) for chunk in (1, 5, 17) for batch in (1, 3)]
        assert sorted(export.details["streaming_states"]) == sorted(states)
        for case in chunked:
            assert case, case.failures()
            compared = {o.name for o in case.outputs}
            assert {f"{s}_next" for s in states} <= compared, (export.target, compared)
            assert "final state not checked" not in case.reference_method
            worst = max(o.max_abs for o in case.outputs)
            assert np.isfinite(worst) and worst < bound, (export.target, case.case.name, worst)


@pytest.fixture(scope="module")
def keras_streamed(tmp_path_factory):
    """kind -> (directory, ConvertResult): each Keras kind converted with STREAMING once for the
    tests that read its files or its report."""
    converted = {}

    def streamed(kind):
        if kind not in converted:
            out = tmp_path_factory.mktemp(kind)
            converted[kind] = out, rnnexport.convert(build(kind), out, STREAMING)
        return converted[kind]

    return streamed


@pytest.mark.parametrize("kind", KERAS)
def test_keras_models_stream_in_every_format(keras_streamed, kind):
    _, result = keras_streamed(kind)
    assert_streams(result, KERAS[kind], 1e-5)
    written = sorted(p.path.name for p in result.artifacts)
    assert written == sorted(f"{kind}{suffix}" for suffix in (
        ".onnx", ".step.onnx", ".initial_state.onnx", ".savedmodel", ".tflite", ".step.tflite"))


@pytest.fixture(scope="module")
def tf1_streamed(tf1_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("tf1_streamed")
    return {name: rnnexport.convert(tf1_files / name, out, STREAMING) for name in TF1}


@pytest.mark.parametrize("name", TF1)
def test_tf1_checkpoints_stream_against_the_graph_in_windows(tf1_streamed, name):
    result = tf1_streamed[name]
    assert_streams(result, TF1[name], 5e-5)
    methods = {c.reference_method for e in result.report.exports for c in e.checked if c.case.chunk}
    assert methods == {"source in 7 windows of 10 steps, state carried, whole sequence"}


def test_a_trained_initial_state_is_what_initial_state_returns(tf1_files, tf1_streamed):
    import tensorflow as tf

    trained = tf.train.load_variable(str(tf1_files / "trained_initial_state" / "model.ckpt"), "initial_state")
    assert trained.shape == (1, 8) and np.abs(trained).max() > 0.1
    info = rnnexport.inspect(tf1_files / "trained_initial_state")
    assert info.layers[0].details["initial_state"] == "trained"
    path = next(a.path for a in tf1_streamed["trained_initial_state"].artifacts if a.target == "savedmodel")
    start = tf.saved_model.load(str(path)).signatures["initial_state"](batch=tf.constant(3))["rnn_0_h"].numpy()
    np.testing.assert_array_equal(start, np.repeat(trained, 3, axis=0))


@pytest.mark.parametrize("name", FROZEN)
def test_unrolled_graphs_stream(frozen_files, tmp_path, name):
    assert_streams(rnnexport.convert(frozen_files / f"{name}.pb", tmp_path, STREAMING), FROZEN[name], 5e-5)


def test_entry_points_and_state_names_in_each_runtime(keras_streamed):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    out, _ = keras_streamed("lstm")
    loaded = tf.saved_model.load(str(out / "lstm.savedmodel"))
    assert sorted(loaded.signatures) == ["initial_state", "serving_default", "step"]
    step = loaded.signatures["step"]
    assert sorted(step.structured_input_signature[1]) == ["lstm_c", "lstm_h", "x"]
    assert sorted(step.structured_outputs) == ["lstm", "lstm_c_next", "lstm_h_next"]
    assert step.structured_input_signature[1]["x"].shape.as_list() == [None, None, 5]
    zeros = loaded.signatures["initial_state"](batch=tf.constant(4))
    assert {k: v.shape.as_list() for k, v in zeros.items()} == {"lstm_h": [4, 8], "lstm_c": [4, 8]}
    assert all(not v.numpy().any() for v in zeros.values())

    proto = onnx.load(str(out / "lstm.step.onnx"))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*proto.graph.input, *proto.graph.output)}
    assert dims == {"x": ["batch", "time", 5], "lstm_h": ["batch", 8], "lstm_c": ["batch", 8],
                    "lstm": ["batch", "time", 8], "lstm_h_next": ["batch", 8], "lstm_c_next": ["batch", 8]}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["rnnexport.entry_point"] == "step" and json.loads(meta["rnnexport.states"]) == ["lstm_h", "lstm_c"]
    initial = onnx.load(str(out / "lstm.initial_state.onnx"))
    assert [i.name for i in initial.graph.input] == ["batch"]

    signatures = Interpreter(str(out / "lstm.step.tflite")).get_signature_list()
    assert signatures == {
        "initial_state": {"inputs": ["batch"], "outputs": ["lstm_c", "lstm_h"]},
        "step": {"inputs": ["lstm_c", "lstm_h", "x"], "outputs": ["lstm", "lstm_c_next", "lstm_h_next"]},
    }
    assert not Interpreter(str(out / "lstm.tflite")).get_signature_list().keys() - {"serving_default"}


def stateful_gru():
    keras.utils.set_random_seed(3)
    inputs = keras.Input(batch_shape=(2, None, 5), name="x")
    x = keras.layers.GRU(8, stateful=True, return_sequences=True, name="gru")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="stateful_gru")


def test_a_stateful_keras_model_exports_its_state_explicitly(tmp_path):
    source = tmp_path / "stateful.keras"
    stateful_gru().save(source)
    info = rnnexport.inspect(source)
    assert info.exportable and any("stateful=True on gru" in note for note in info.notes)
    result = rnnexport.convert(source, tmp_path / "out", STREAMING)
    assert_streams(result, ["gru_h"], 1e-5)

    # The stateful model itself, fed chunk by chunk, carries its state as the step entry points do.
    original = keras.saving.load_model(source)
    x = np.random.default_rng(5).standard_normal((2, 23, 5)).astype(np.float32)
    expected = np.concatenate([np.asarray(original(x[:, s:s + 6])) for s in range(0, 23, 6)], axis=1)
    device = resolve_device("cpu")
    for target in TARGETS:
        runner = get_target(target).stream_runner(tmp_path / "out" / f"stateful{get_target(target).suffix}", device)
        outputs, _ = stream(runner, Case("chunks of 6", "streaming", 2, 23, {"x": x}, chunk=6), info.inputs,
                            {"out": 1})
        assert np.abs(outputs["out"] - expected).max() < 1e-5, target


def test_bidirectional_keras_model_is_refused_naming_the_layer(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"cannot stream: layer 'bilstm' \(Bidirectional\)"):
        rnnexport.convert(build("bidirectional_stack"), tmp_path, STREAMING)
    assert not any(tmp_path.iterdir())


def test_layers_that_look_ahead_are_refused(tmp_path):
    inputs = keras.Input((None, 5), name="x")
    x = keras.layers.Conv1D(4, 3, padding="same", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.GRU(4, name="gru")(x))
    with pytest.raises(UnsupportedModelError, match=r"layer 'conv' \(Conv1D, padding='same'\) reads 1 step after"):
        rnnexport.convert(model, tmp_path, STREAMING)
    # Without --streaming the same model exports, with no streaming entry points to check.
    result = rnnexport.convert(model, tmp_path, ConvertOptions(targets=("all",), validation=STREAMING.validation))
    assert result.passed and len(result.artifacts) == 3
    for export in result.report.exports:
        assert "streaming_states" not in export.details
        assert all(c.case.chunk is None for c in export.cases)


def test_a_layer_started_from_another_layers_state_is_refused(tmp_path):
    inputs = keras.Input((None, 5), name="x")
    _, h, c = keras.layers.LSTM(4, return_state=True, name="encoder")(inputs)
    decoded = keras.layers.LSTM(4, return_sequences=True, name="decoder")(inputs, initial_state=[h, c])
    refused = r"layer 'decoder' \(LSTM\) takes its initial state from layer 'encoder'"
    with pytest.raises(UnsupportedModelError, match=refused):
        rnnexport.convert(keras.Model(inputs, decoded), tmp_path, STREAMING)


def test_a_recurrent_layer_called_twice_is_refused(tmp_path):
    left, right = keras.Input((None, 5), name="left"), keras.Input((None, 5), name="right")
    shared = keras.layers.GRU(4, name="shared")
    model = keras.Model([left, right], keras.layers.Add(name="sum")([shared(left), shared(right)]))
    with pytest.raises(UnsupportedModelError, match=r"layer 'shared' \(GRU\) is called 2 times"):
        rnnexport.convert(model, tmp_path, STREAMING)


def test_bidirectional_tf1_graph_is_refused_naming_the_backward_cell(tf1_files, tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"layer 0 is bidirectional: its backward cell '.*bw.*'"):
        rnnexport.convert(tf1_files / "bidirectional_dynamic", tmp_path, STREAMING)


class ForgetsState:
    """A real streaming export driven wrongly: every chunk starts again from the initial state."""

    def __init__(self, runner):
        self.runner, self.name, self.device, self.states = runner, runner.name, runner.device, runner.states

    def initial_state(self, batch):
        return self.runner.initial_state(batch)

    def step(self, inputs, state):
        outputs, after = self.runner.step(inputs, self.initial_state(next(iter(inputs.values())).shape[0]))
        return outputs, after


def test_the_streaming_check_fails_when_state_is_not_carried(keras_streamed):
    from rnnexport.parity import ExportUnderTest, check
    from rnnexport.plugins import find_source
    from rnnexport.sweep import build_stream_cases

    model = build("lstm")  # seeded: the weights of the model keras_streamed converted
    out, result = keras_streamed("lstm")
    opened = find_source(model).open(model, STREAMING.source)
    device = resolve_device("cpu")
    target, path = get_target("savedmodel"), out / "lstm.savedmodel"
    broken = ExportUnderTest("lstm", "keras", "savedmodel", str(path), result.report.exports[0].tolerance,
                             runner=target.runner(path, device), time_axes={"lstm": 1},
                             stream_runner=ForgetsState(target.stream_runner(path, device)))
    cases = build_stream_cases(opened.info.inputs, None, SweepOptions(batches=(2,), chunks=(5,)))
    (checked,) = check(opened.reference(device), [broken], [], stream_cases=cases, inputs=opened.info.inputs)
    assert not checked.passed
    (case,) = checked.cases
    outputs = {o.name: o for o in case.outputs}
    assert outputs["lstm"].first_bad_step == 5  # right for the first chunk, wrong from the second
    assert not outputs["lstm_h_next"] and not outputs["lstm_c_next"]


def test_cli_streaming_convert_validate_and_refusals(tmp_path):
    source = TESTS.parent / "samples" / "lstm_variable.keras"
    out = tmp_path / "out"
    done = rnnexport_cmd("convert", str(source), "--streaming", "--to", "onnx", "--out", str(out), "--lengths", "3")
    assert done.returncode == 0, done.stderr
    assert [line.split("/")[-1] for line in done.stdout.splitlines() if line.startswith("wrote ")] == [
        "lstm_variable.onnx", "lstm_variable.step.onnx", "lstm_variable.initial_state.onnx"]
    assert "streaming, state lstm_c, lstm_h; 6/6 chunked runs (chunks 1,5,17) match" in done.stdout

    # The main file out of the way, its step file alone refuses the run; put back, the export is whole again.
    (out / "lstm_variable.onnx").rename(tmp_path / "aside.onnx")
    again = rnnexport_cmd("convert", str(source), "--streaming", "--to", "onnx", "--out", str(out))
    assert again.returncode == 2 and "lstm_variable.step.onnx: already exists; pass --force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    (tmp_path / "aside.onnx").rename(out / "lstm_variable.onnx")

    report = tmp_path / "parity.json"
    checked = rnnexport_cmd("validate", str(source), str(out / "lstm_variable.onnx"), "--chunks", "4",
                            "--lengths", "3", "--report", str(report))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    cases = json.loads(report.read_text())["exports"][0]["cases"]
    assert [(c["chunk"], c["batch"]) for c in cases if "chunk" in c] == [(4, 1), (4, 3)]

    bad = rnnexport_cmd("convert", str(TESTS.parent / "samples" / "bidirectional_stack.h5"), "--streaming",
                        "--out", str(tmp_path / "bi"))
    assert bad.returncode == 2
    assert without_progress(bad.stderr) == [
        f"Error: {TESTS.parent / 'samples' / 'bidirectional_stack.h5'}: cannot stream: layer 'bilstm' (Bidirectional) "
        "reads each sequence backwards, so it needs the whole sequence"]
    assert "Traceback" not in bad.stderr


def test_the_readme_streaming_examples_run(tmp_path):
    """Each runtime's example in the README's Streaming section, as written, on the sample."""
    import re
    import subprocess
    import sys

    section = (TESTS.parent / "README.md").read_text().split("## Streaming", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(examples) == 3
    convert = re.search(r"`(rnnexport convert samples/lstm_variable.keras --streaming [^`]*)`", section).group(1)
    (tmp_path / "samples").symlink_to(TESTS.parent / "samples")
    made = rnnexport_cmd(*convert.split()[1:], "--lengths", "3", "-q", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    shown = re.search(r"\$ (rnnexport inspect exports/lstm_variable.onnx)\n(.*?)```", section, re.S)
    inspected = rnnexport_cmd(*shown.group(1).split()[1:], cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    documented = [line for line in shown.group(2).splitlines() if not line.startswith("parity:")]
    assert [line for line in inspected.stdout.splitlines() if not line.startswith("parity:")] == documented
    assert re.search(r"^parity: PASS, \d+/\d+ cases passed, lengths 3,64, ", inspected.stdout, re.M)
    for example in examples:
        check = example + "\nassert scores.shape == (1, 5, 5) and np.isfinite(np.asarray(scores)).all()\n"
        ran = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, example + ran.stderr[-2000:]


def test_exports_of_a_checkpoint_are_named_after_its_folder_and_step(tmp_path):
    import shutil

    from rnnexport.plan import export_paths

    folder = tmp_path / "ckpts"
    folder.mkdir()
    for file in (TESTS.parent / "samples" / "tf1_tagger").glob("model.ckpt.*"):
        for step in ("-1000", "-2000", ""):
            shutil.copy(file, folder / file.name.replace("model.ckpt", f"model.ckpt{step}"))
    named = {source: [p.name for _, p in export_paths(folder / source, ["all"], tmp_path / "out")]
             for source in ("model.ckpt-1000", "model.ckpt-2000", "model.ckpt-2000.meta", "model.ckpt")}
    assert named == {
        "model.ckpt-1000": ["ckpts-1000.onnx", "ckpts-1000.savedmodel", "ckpts-1000.tflite"],
        "model.ckpt-2000": ["ckpts-2000.onnx", "ckpts-2000.savedmodel", "ckpts-2000.tflite"],
        "model.ckpt-2000.meta": ["ckpts-2000.onnx", "ckpts-2000.savedmodel", "ckpts-2000.tflite"],
        "model.ckpt": ["ckpts.onnx", "ckpts.savedmodel", "ckpts.tflite"],
    }
    assert [p.name for _, p in export_paths(TESTS.parent / "samples" / "tf1_tagger", ["onnx"], tmp_path)] == [
        "tf1_tagger.onnx"]
