"""ONNX exports of the layers that used to stay loops: masked, given an initial state, reversed,
bidirectional with states, streamed, TF1 peephole cells; and the fastest form per batch."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT, UNTIMED, artifact, export_result
from onnx import helper, numpy_helper
from rnnexport_converters.keras.layers import TrainedState
from rnnexport_converters.onnx.forms import to_loop

import rnnexport
from rnnexport import ConvertOptions, SourceOptions, SweepOptions, ValidateOptions
from rnnexport.options import ExportOptions

L = keras.layers
TRAINED_STATE = ("rnnexport_converters.keras.layers:TrainedState",)
MASKED = "with sequence_lens; the layer's Loop where a mask has holes (an If chooses)"


def _masking_lstm():
    i = keras.Input((None, 3), name="x")
    return keras.Model(i, L.LSTM(6, return_sequences=True, name="lstm")(L.Masking(0.0)(i)), name="masking_lstm")


def _embedding_gru():
    i = keras.Input((None,), dtype="int32", name="tokens")
    x = L.Embedding(20, 4, mask_zero=True)(i)
    return keras.Model(i, L.Dense(2, name="out")(L.GRU(5, name="gru")(x)), name="embedding_gru")


def _masked_backwards_rnn():
    i = keras.Input((None, 3), name="x")
    rnn = L.SimpleRNN(5, return_sequences=True, go_backwards=True, name="rnn")
    return keras.Model(i, rnn(L.Masking(0.0)(i)), name="masked_backwards_rnn")


def _masked_bidirectional():
    i = keras.Input((None, 3), name="x")
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bilstm")(L.Masking(0.0)(i))
    return keras.Model(i, x, name="masked_bidirectional")


def _masked_bidirectional_states():
    i = keras.Input((None, 3), name="x")
    forward, backward, h_f, h_b = L.Bidirectional(L.GRU(4, return_state=True), merge_mode=None,
                                                  name="bigru")(L.Masking(0.0)(i))
    return keras.Model(i, [forward, backward, h_f, h_b], name="masked_bidirectional_states")


# model, the layer, its fused op.
MASKED_MODELS = {
    "masking_lstm": (_masking_lstm, "lstm", "LSTM"),
    "embedding_gru": (_embedding_gru, "gru", "GRU"),
    "masked_backwards_rnn": (_masked_backwards_rnn, "rnn", "RNN"),
    "masked_bidirectional": (_masked_bidirectional, "bilstm", "LSTM"),
    "masked_bidirectional_states": (_masked_bidirectional_states, "bigru", "GRU"),
}


def _convert(model, tmp_path, custom_objects=(), **target_options):
    keras.utils.set_random_seed(7)
    options = ConvertOptions(targets=("onnx",), source=SourceOptions(custom_objects=custom_objects),
                             export=ExportOptions(target_options={"onnx": target_options}), validation=UNTIMED)
    result = rnnexport.convert(model, tmp_path, options)
    export = export_result(result, "onnx")
    assert export.passed, export.failures()
    return export, artifact(result, "onnx")


def _keras(model, x):
    outputs = model(x, training=False)
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def _onnx(path, x, name):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: x})


def _nodes(path, op_type):
    """Nodes of `op_type` in the graph and in the branches of its If ops."""
    graphs, found = [onnx.load(str(path)).graph], []
    while graphs:
        for node in graphs.pop().node:
            found += [node] if node.op_type == op_type else []
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    return found


def _attr(node, name):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def _padded(model, rows, length, rng):
    """Inputs of `rows` (true length, hole positions) zero-padded after their true length."""
    spec = model.inputs[0]
    if spec.dtype == "int32":
        x = rng.integers(1, 20, (len(rows), length)).astype(np.int32)
    else:
        x = rng.standard_normal((len(rows), length, 3)).astype(np.float32)
    for row, (true, holes) in enumerate(rows):
        x[row, true:] = 0
        for hole in holes:
            x[row, hole] = 0
    return x


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    out = tmp_path_factory.mktemp("masked")
    built = {}
    for name, (make, layer, op_type) in MASKED_MODELS.items():
        keras.utils.set_random_seed(3)
        model = make()
        built[name] = (model, *_convert(model, out / name))
    return built


@pytest.mark.parametrize("name", sorted(MASKED_MODELS))
def test_masked_layers_are_fused_and_pass_the_sweep_with_padded_rows(masked, name):
    _, layer, op_type = MASKED_MODELS[name]
    _, export, path = masked[name]
    assert export.details["fused"] == {layer: f"{op_type} {MASKED}"}
    assert export.details["not_fused"] == {}
    # The If's other branch is the layer's own computation: a Bidirectional's is two loops.
    loops = 2 if name.startswith("masked_bidirectional") else 1
    assert export.details["recurrent_ops"] == {op_type: 1, "Loop": loops}
    (fused,) = _nodes(path, op_type)
    assert fused.input[4], "the fused op reads sequence_lens"
    lengths = sorted({c.case.length for c in export.cases})
    assert lengths[:2] == [1, 2] and lengths[-1] >= 4 * 32
    assert {c.case.batch for c in export.cases} >= {1, 3}
    padded = [c for c in export.cases if c.case.kind == "padded"]
    assert padded and all(padded)


@pytest.mark.parametrize("name", sorted(MASKED_MODELS))
def test_masks_with_holes_and_empty_rows_are_exact(masked, name):
    """Holes make the If run the layer's own loop; an all-padding row gets Keras's zeros and
    initial state; other rows the fused op's values."""
    model, _, path = masked[name]
    rng = np.random.default_rng(5)
    input_name = model.inputs[0].name
    for rows in ([(9, ()), (4, ()), (0, ()), (1, ())], [(9, (2,)), (6, (0, 3)), (0, ())]):
        x = _padded(model, rows, 9, rng)
        for expected, got in zip(_keras(model, x), _onnx(path, x, input_name)):
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_padded_steps_repeat_the_last_output_as_keras_does(masked):
    """ONNX's LSTM writes zeros after a row's length; Keras (one direction, return_sequences)
    repeats the last output there. The export returns Keras's values."""
    model, _, path = masked["masking_lstm"]
    x = _padded(model, [(8, ()), (3, ())], 8, np.random.default_rng(1))
    (y,) = _onnx(path, x, "x")
    assert np.abs(y[1, 2]).min() > 0
    np.testing.assert_array_equal(y[1, 3:], np.repeat(y[1, 2:3], 5, axis=0))
    (bidirectional_model, _, bidirectional_path) = masked["masked_bidirectional"]
    (z,) = _onnx(bidirectional_path, x, "x")
    np.testing.assert_array_equal(z[1, 3:], 0.0)  # a Bidirectional returning sequences zeroes them
    np.testing.assert_allclose(z, _keras(bidirectional_model, x)[0], atol=1e-5)


def test_go_backwards_is_a_reverse_op(tmp_path):
    keras.utils.set_random_seed(2)
    i = keras.Input((None, 3), name="x")
    model = keras.Model(i, L.LSTM(5, return_sequences=True, go_backwards=True, name="back")(i))
    export, path = _convert(model, tmp_path)
    assert export.details["recurrent_ops"] == {"LSTM": 1} and export.details["fused"] == {"back": "LSTM"}
    (node,) = _nodes(path, "LSTM")
    assert _attr(node, "direction") == b"reverse"


def test_bidirectional_with_states_and_separate_directions_is_one_op(tmp_path):
    keras.utils.set_random_seed(4)
    i = keras.Input((None, 3), name="x")
    outputs = L.Bidirectional(L.LSTM(4, return_sequences=True, return_state=True), merge_mode=None, name="bi")(i)
    model = keras.Model(i, list(outputs))
    export, path = _convert(model, tmp_path)
    assert export.details["recurrent_ops"] == {"LSTM": 1}
    (node,) = _nodes(path, "LSTM")
    assert _attr(node, "direction") == b"bidirectional"
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    got = _onnx(path, x, "x")
    assert [g.shape for g in got] == [(2, 6, 4), (2, 6, 4)] + [(2, 4)] * 4
    for expected, value in zip(_keras(model, x), got):
        np.testing.assert_allclose(value, expected, atol=1e-5)


def test_a_trained_initial_state_is_the_fused_ops_initial_state(tmp_path):
    keras.utils.set_random_seed(6)
    i = keras.Input((None, 3), name="x")
    h, c = TrainedState(5, name="h0")(i), TrainedState(5, name="c0")(i)
    x = L.LSTM(5, return_sequences=True, name="lstm")(i, initial_state=[h, c])
    g = TrainedState(4, name="g0")(i)
    model = keras.Model(i, L.GRU(4, name="gru")(x, initial_state=[g]))
    for layer in ("h0", "c0", "g0"):
        state = model.get_layer(layer)
        state.value.assign(np.linspace(-0.9, 0.9, state.size).astype(np.float32))
    export, path = _convert(model, tmp_path, custom_objects=TRAINED_STATE)
    assert export.details["recurrent_ops"] == {"LSTM": 1, "GRU": 1}
    (lstm,) = _nodes(path, "LSTM")
    (gru,) = _nodes(path, "GRU")
    assert lstm.input[5] and lstm.input[6] and gru.input[5], "initial_h and initial_c are given"


def test_streaming_step_files_are_fused(tmp_path):
    keras.utils.set_random_seed(8)
    i = keras.Input((None, 3), name="x")
    x = L.GRU(5, return_sequences=True, name="gru")(i)
    x = L.SimpleRNN(4, return_sequences=True, name="rnn")(x)
    model = keras.Model(i, L.LSTM(3, name="lstm")(x), name="streamed")
    options = ConvertOptions(targets=("onnx",), export=ExportOptions(streaming=True), validation=UNTIMED)
    result = rnnexport.convert(model, tmp_path, options)
    export = export_result(result, "onnx")
    assert export.passed, export.failures()
    assert [c for c in export.cases if c.case.chunk] and all(c for c in export.cases if c.case.chunk)
    step = onnx.load(str(tmp_path / "streamed.step.onnx"))
    ops = sorted(n.op_type for n in step.graph.node if n.op_type in ("GRU", "RNN", "LSTM", "Loop"))
    assert ops == ["GRU", "LSTM", "RNN"]
    assert all(n.input[5] for n in step.graph.node if n.op_type in ("GRU", "RNN", "LSTM"))
    meta = {p.key: p.value for p in step.metadata_props}
    assert json.loads(meta["rnnexport.fused"]) == {"gru": "GRU", "rnn": "RNN", "lstm": "LSTM"}


def test_readme_deployers_streaming_loop_runs(tmp_path):
    """The README's onnxruntime loop over a streaming export, run as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("ONNX (onnxruntime; `tests/test_onnx_fusion.py` runs this loop as written):"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    source = ROOT / "samples" / "lstm_variable.keras"
    result = rnnexport.convert(source, tmp_path / "exports", ConvertOptions(
        targets=("onnx",), export=ExportOptions(streaming=True),
        validation=ValidateOptions(sweep=SweepOptions(lengths=(3,)), latency_repeats=0)))
    assert result.report.passed, result.report.failures()
    scope: dict = {}
    exec(code.replace('"exports/', f'"{tmp_path}/exports/'), scope)  # noqa: S102 - the README's own code
    assert scope["scores"].shape == (1, 5, 5)
    assert set(scope["state"]) == {"lstm_h", "lstm_c"}


def test_tf1_peepholes_are_the_fused_ops_p_input(lstm_cells, tmp_path):
    result = rnnexport.convert(lstm_cells / "peepholes", tmp_path, ConvertOptions(targets=("onnx",), validation=UNTIMED))
    export = export_result(result, "onnx")
    assert export.passed, export.failures()
    assert export.details["recurrent_ops"] == {"LSTM": 1}
    (node,) = _nodes(artifact(result, "onnx"), "LSTM")
    proto = onnx.load(str(artifact(result, "onnx")))
    peepholes = next(numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == node.input[7])
    assert peepholes.shape == (1, 24) and np.abs(peepholes).max() > 0.5
    assert max(c.case.length for c in export.cases) >= 128


@pytest.mark.parametrize("name, reason", [
    ("peepholes_clipped", "ONNX's clip bounds each gate's input, TF1's cell_clip bounds the cell state"),
    ("projected", "its projection (TF1 num_proj) has no ONNX LSTM equivalent"),
])
def test_tf1_clip_and_projection_stay_loops_and_say_why(lstm_cells, tmp_path, name, reason):
    result = rnnexport.convert(lstm_cells / name, tmp_path, ConvertOptions(targets=("onnx",), validation=UNTIMED))
    export = export_result(result, "onnx")
    assert export.passed, export.failures()
    assert export.details["recurrent_ops"] == {"Loop": 1}
    assert export.details["not_fused"]["rnn_0"].startswith(reason)


def test_onnxruntime_clip_bounds_gate_inputs_not_the_cell_state():
    """Why cell_clip is not fused: ORT's LSTM `clip` equals clipping the gates' pre-activations,
    and differs from TF1's clipped cell state."""
    rng = np.random.default_rng(0)
    units, features, steps, clip = 3, 2, 6, 0.5
    w = rng.standard_normal((1, 4 * units, features)).astype(np.float32) * 3
    r = rng.standard_normal((1, 4 * units, units)).astype(np.float32) * 3
    x = rng.standard_normal((steps, 1, features)).astype(np.float32) * 3
    node = helper.make_node("LSTM", ["x", "W", "R"], ["", "", "c"], hidden_size=units, clip=clip)
    graph = helper.make_graph([node], "clip", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [1, 1, units])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (onnx_c,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    def reference(where):
        sigmoid = lambda z: 1 / (1 + np.exp(-z))
        h = c = np.zeros((1, units), np.float32)
        for t in range(steps):
            z = x[t] @ w[0].T + h @ r[0].T
            z = np.clip(z, -clip, clip) if where == "gates" else z
            i, o, f, g = np.split(z, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            c = np.clip(c, -clip, clip) if where == "cell" else c
            h = sigmoid(o) * np.tanh(c)
        return c

    np.testing.assert_allclose(onnx_c[0], reference("gates"), atol=1e-5)
    assert np.abs(onnx_c[0] - reference("cell")).max() > 0.1


def _fused_node(op_type, direction, rng, peepholes=False, initial=False, linear_before_reset=0):
    units, features = 5, 3
    gates, directions = {"LSTM": 4, "GRU": 3, "RNN": 1}[op_type], 2 if direction == "bidirectional" else 1
    initializers = [numpy_helper.from_array(rng.standard_normal((directions, gates * units, features)).astype("f"), "W"),
                    numpy_helper.from_array(rng.standard_normal((directions, gates * units, units)).astype("f") / 2, "R"),
                    numpy_helper.from_array(rng.standard_normal((directions, 2 * gates * units)).astype("f"), "B")]
    inputs = ["x", "W", "R", "B", ""]
    graph_inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["time", "batch", features])]
    states = ["h0", "c0"] if op_type == "LSTM" else ["h0"]
    if initial:
        inputs += states
        graph_inputs += [helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, [directions, "batch", units])
                         for s in states]
    if peepholes:
        inputs += [""] * (7 - len(inputs)) + ["P"]
        initializers.append(numpy_helper.from_array(rng.standard_normal((directions, 3 * units)).astype("f"), "P"))
    attributes = {"hidden_size": units, "direction": direction}
    if op_type == "GRU":
        attributes["linear_before_reset"] = linear_before_reset
    outputs = ["Y", "Y_h"] + (["Y_c"] if op_type == "LSTM" else [])
    node = helper.make_node(op_type, inputs, outputs, name="fused", **attributes)
    graph = helper.make_graph([node], "g", graph_inputs, [
        helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, [None] * (4 if o == "Y" else 3)) for o in outputs],
        initializers)
    feed = {"x": rng.standard_normal((7, 2, features)).astype("f")}
    feed.update({s: rng.standard_normal((directions, 2, units)).astype("f") for s in (states if initial else [])})
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), feed


@pytest.mark.parametrize("op_type, direction, options", [
    ("RNN", "forward", {}), ("RNN", "reverse", {"initial": True}), ("RNN", "bidirectional", {}),
    ("GRU", "forward", {}), ("GRU", "forward", {"linear_before_reset": 1, "initial": True}),
    ("GRU", "bidirectional", {"linear_before_reset": 1}),
    ("LSTM", "forward", {}), ("LSTM", "reverse", {"peepholes": True}),
    ("LSTM", "bidirectional", {"peepholes": True, "initial": True}),
])
def test_the_loop_form_computes_what_the_fused_op_does(op_type, direction, options):
    fused, feed = _fused_node(op_type, direction, np.random.default_rng(len(options)), **options)
    looped = onnx.ModelProto()
    looped.CopyFrom(fused)
    to_loop(looped, looped.graph.node[0])
    onnx.checker.check_model(looped, full_check=True)
    assert {n.op_type for n in looped.graph.node} & {"LSTM", "GRU", "RNN"} == set()
    assert not looped.graph.initializer or {i.name for i in looped.graph.initializer}.isdisjoint({"W", "R", "B"})

    def run(model):
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)

    for expected, got in zip(run(fused), run(looped)):
        np.testing.assert_allclose(got, expected, atol=2e-6)


def test_optimize_for_a_batch_writes_the_form_measured_fastest_there(tmp_path):
    keras.utils.set_random_seed(9)
    i = keras.Input((None, 3), name="x")
    x = L.SimpleRNN(6, return_sequences=True, name="rnn")(i)
    model = keras.Model(i, L.LSTM(4, name="lstm")(x))
    single, _ = _convert(model, tmp_path / "b1")
    assert single.details["recurrent_ops"] == {"RNN": 1, "LSTM": 1}
    batched, _ = _convert(model, tmp_path / "b16", optimize_for="batch=16")
    assert batched.details["recurrent_ops"] == {"Loop": 1, "LSTM": 1}
    assert batched.details["fused"] == {"lstm": "LSTM"}
    assert batched.details["not_fused"]["rnn"].startswith(
        "a Loop of MatMuls runs faster than onnxruntime's fused RNN kernel at batch 16")


def test_optimize_for_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from rnnexport.cli import cli

    keras.utils.set_random_seed(10)
    i = keras.Input((None, 3), name="x")
    path = tmp_path / "rnn.keras"
    keras.Model(i, L.SimpleRNN(4, return_sequences=True, name="rnn")(i)).save(path)
    runner = CliRunner()
    done = runner.invoke(cli, ["convert", str(path), "--to", "onnx", "--optimize-for", "batch=64", "--lengths", "3",
                               "--out", str(tmp_path / "out"), "--json"])
    assert done.exit_code == 0, done.output
    details = json.loads(done.output)["exports"][0]["details"]
    assert details["recurrent_ops"] == {"Loop": 1} and "at batch 64" in details["not_fused"]["rnn"]
    bad = runner.invoke(cli, ["convert", str(path), "--to", "onnx", "--optimize-for", "64", "--out",
                              str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert "target 'onnx' option 'optimize_for': expected batch=N with N >= 1, got '64'" in bad.output
