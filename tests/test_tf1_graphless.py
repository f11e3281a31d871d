"""Saver checkpoints of cell variables only (no meta graph), their architecture named with
--cell or --architecture; written by the real TF1 cell classes (tf1_graphless_helper.py)."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TESTS, UNTIMED, checked_exports, export_result, run_python

import rnnexport
from rnnexport.cli import cli
from rnnexport.device import resolve_device
from rnnexport.errors import UserError
from rnnexport.options import ConvertOptions, ExportOptions, SourceOptions
from rnnexport_converters.tf1 import cellspec, graphless
from rnnexport_converters.tf1.checkpoint import Tf1CheckpointSource

# What the checkpoints are, as a user names them.
SPECS = {
    "basic_lstm": ("lstm:8",), "lstm_cell": ("LSTMCell:8:forget_bias=0.4",), "gru": ("gru:8",),
    "lstm_peephole_projection": ("LSTMCell:8:forget_bias=0.6:cell_clip=0.8:proj_clip=0.5",),
    "basic_rnn": ("BasicRNNCell:8:activation=relu",), "lstm_block": ("LSTMBlockCell:8",),
    "gru_stack": ("gru:8", "gru:6"), "same_shape_stack": ("lstm:5", "lstm:5"), "initial_state": ("GRUCell:8",),
    "lstm_start_and_head": ("BasicLSTMCell:8",), "stack_start_states": ("lstm:8", "gru:6"),
    "tf10_names": ("lstm:8", "lstm:6"), "tf0_names": ("gru:8",), "tf0_lstm_cell": ("LSTMCell:8:forget_bias=0.6",),
}
DEFAULT_LENGTHS = {1, 2, 7, 32, 128}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    out = tmp_path_factory.mktemp("graphless")
    run_python(TESTS / "tf1_graphless_helper.py", "write", str(out), legacy_keras=True)
    return out


def _keras_config(tmp_path, *layers):
    import keras

    path = tmp_path / "architecture.json"
    path.write_text(keras.Sequential([keras.Input((None, 5)), *layers]).to_json())
    return path


def test_cell_specs_take_kinds_tf1_class_names_and_settings():
    assert [(s.kind, s.units, str(s)) for s in cellspec.parse(("gru:128", "GRUCell:64"))] == [
        ("gru", 128, "gru:128"), ("gru", 64, "GRUCell:64")]
    lstm = cellspec.parse_one("BasicLSTMCell:32:forget_bias=0.5:activation=relu")
    assert (lstm.kind, lstm.gates, lstm.forget_bias, lstm.activation) == ("lstm", 4, 0.5, "relu")
    clipped = cellspec.parse_one("LSTMCell:8:cell_clip=3:proj_clip=0.5")
    assert (clipped.cell_clip, clipped.proj_clip, clipped.forget_bias) == (3.0, 0.5, 1.0)
    for text, message in [
        ("lstm:x", "cell spec 'lstm:x': units must be a positive integer; e.g. lstm:64"),
        ("gru:0", "cell spec 'gru:0': units must be a positive integer; e.g. gru:128"),
        ("conv:8", "cell spec 'conv:8': unknown cell 'conv'; known: lstm, gru, rnn, BasicLSTMCell"),
        ("gru:8:forget_bias=1", "cell spec 'gru:8:forget_bias=1': unknown setting 'forget_bias=1'; settings are "
         "activation="),
        ("lstm:8:cell_clip=big", "cell spec 'lstm:8:cell_clip=big': cell_clip must be a number"),
        ("lstm:8:activation=gelu", "activation 'gelu' is not one of tanh, relu, sigmoid, linear"),
    ]:
        with pytest.raises(UserError) as error:
            cellspec.parse_one(text)
        assert message in str(error.value)


def _find(shapes, cells, head=None):
    return graphless.find(graphless.Variables.of(Path("m.ckpt"), list(shapes.items())), cellspec.parse(cells), head)


def test_variables_are_matched_by_tf1_names_and_shapes():
    """TF 0.x MultiRNNCell names, an embedding, a dense head and optimizer slots, in one listing."""
    u = 4
    shapes = {f"RNN/MultiRNNCell/Cell{i}/BasicLSTMCell/Linear/{role}": shape
              for i in (0, 1) for role, shape in (("Matrix", (2 * u, 4 * u)), ("Bias", (4 * u,)))}
    shapes |= {"embedding": (100, u), "dense/kernel": (u, 3), "dense/bias": (3,), "lr": ()}
    listed = {"global_step": (), "dense/kernel/Adam": (u, 3), "beta1_power": ()}
    found = _find({**shapes, **listed}, ("lstm:4", "lstm:4"))
    assert [layer.names["kernel"] for layer in found.layers] == [
        "RNN/MultiRNNCell/Cell0/BasicLSTMCell/Linear/Matrix", "RNN/MultiRNNCell/Cell1/BasicLSTMCell/Linear/Matrix"]
    assert (found.embedding, found.head, found.unused) == ("embedding", ("dense/kernel", "dense/bias"), ["lr"])


@pytest.mark.parametrize("shapes, cells, head, message", [
    ({"lstm_cell/kernel": (9, 16), "lstm_cell/bias": (16,), "initial_state": (4,)}, ("lstm:4",), None,
     "m.ckpt: start-state variable 'initial_state' [4] could be the LSTM's c or h; name it c0/h0"),
    ({"gru_cell/gates/kernel": (9, 8), "gru_cell/gates/bias": (8,), "gru_cell/candidate/kernel": (9, 4),
      "gru_cell/candidate/bias": (4,), "a_w": (4, 3), "a_b": (3,), "b_w": (4, 2), "b_b": (2,)}, ("gru:4",), None,
     "m.ckpt: 2 dense heads could follow the last layer (a_w, b_w); rnnexport will not guess which; the checkpoint "
     "holds a_b [3], a_w [4, 3], b_b [2], b_w [4, 2], gru_cell/candidate/bias [4]"),
    ({"basic_rnn_cell/kernel": (9, 4), "basic_rnn_cell/bias": (4,)}, ("rnn:4",), True,
     "m.ckpt: the architecture ends in a Dense layer, but no kernel [4, K] with a bias [K] is left for it"),
    ({"basic_rnn_cell/kernel": (9, 4), "basic_rnn_cell/bias": (4,), "out/kernel": (4, 2), "out/bias": (2,)},
     ("rnn:4",), False, "m.ckpt: out/bias, out/kernel belong to no layer of rnn:4"),
    ({"gru_cell/gates/kernel": (9, 8), "gru_cell/gates/bias": (8,), "gru_cell/candidate/kernel": (9, 4),
      "gru_cell/candidate/bias": (4,)}, ("lstm:2",), None,
     "m.ckpt: no variables fit layer 0 (lstm:2): it needs a kernel [F + 2, 8] with its bias "
     "(gru_cell/gates/kernel [9, 8] is gru:4); check --cell"),
])
def test_what_matching_cannot_settle_is_refused(shapes, cells, head, message):
    with pytest.raises(UserError) as error:
        _find(shapes, cells, head)
    assert message in str(error.value)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_reference_computes_what_the_real_tf1_cells_compute(ckpts, name):
    opened = Tf1CheckpointSource().open(ckpts / name / "model.ckpt", SourceOptions(cells=SPECS[name]))
    expected = np.load(ckpts / name / "expected.npz")
    with opened.reference(resolve_device("cpu")) as reference:
        for length in (1, 2, 7, 33):
            x, y = expected[f"x{length}"], expected[f"y{length}"]
            served = reference.run({"x": x})["y"]
            assert served.shape == y.shape
            # The same ops on the same variables as dynamic_rnn over the TF1 classes.
            assert np.max(np.abs(served - y)) <= 1e-6, (name, length)
            assert np.max(np.abs(np.asarray(opened.keras(x)) - y)) < 5e-6, (name, length)


def test_a_cell_spec_converts_to_every_target_and_streams(ckpts, tmp_path):
    options = ConvertOptions(targets=("all",), source=SourceOptions(cells=SPECS["lstm_start_and_head"]),
                             export=ExportOptions(streaming=True), validation=UNTIMED)
    result = rnnexport.convert(ckpts / "lstm_start_and_head" / "model.ckpt", tmp_path, options)
    for target, export, _ in checked_exports(result, 5e-5):
        assert not export.skipped
        assert {c.case.length for c in export.checked if c.case.chunk is None} == DEFAULT_LENGTHS, target
        chunked = [c for c in export.checked if c.case.chunk is not None]
        assert sorted((c.case.chunk, c.case.batch) for c in chunked) == [(k, b) for k in (1, 5, 17) for b in (1, 3)]
        assert sorted(export.details["streaming_states"]) == ["rnn_0_c", "rnn_0_h"]
        for case in chunked:
            assert {"rnn_0_c_next", "rnn_0_h_next"} <= {o.name for o in case.outputs}
            assert "final state not checked" not in case.reference_method
    export = export_result(result, "onnx")
    assert {c.reference_method for c in export.cases if c.case.chunk is None} == {
        "TF1 cells rebuilt over the checkpoint's variables, any length"}
    assert export.details["recurrent_ops"] == {"LSTM": 1}


def test_a_keras_config_names_the_architecture(ckpts, tmp_path):
    import keras

    gru = dict(reset_after=False, return_sequences=True)
    path = _keras_config(tmp_path, keras.layers.GRU(8, **gru), keras.layers.GRU(6, **gru))
    options = ConvertOptions(targets=("all",), source=SourceOptions(architecture=path), validation=UNTIMED)
    result = rnnexport.convert(ckpts / "gru_stack", tmp_path / "out", options)
    for target, export, checked in checked_exports(result, 5e-5):
        assert checked == DEFAULT_LENGTHS and not export.skipped, target
    assert export_result(result, "onnx").details["recurrent_ops"] == {"GRU": 2}
    head = _keras_config(tmp_path, keras.layers.LSTM(8, return_sequences=True), keras.layers.Dense(4, "softmax"))
    info = rnnexport.inspect(ckpts / "lstm_start_and_head" / "model.ckpt", SourceOptions(architecture=head))
    assert info.layers[-1].details == {"activation": "softmax"}
    opened = Tf1CheckpointSource().open(ckpts / "lstm_start_and_head" / "model.ckpt",
                                        SourceOptions(architecture=head))
    logits = np.load(ckpts / "lstm_start_and_head" / "expected.npz")
    x = logits["x7"]
    softmax = np.exp(logits["y7"]) / np.exp(logits["y7"]).sum(-1, keepdims=True)
    with opened.reference(resolve_device("cpu")) as reference:
        assert np.max(np.abs(reference.run({"x": x})["y"] - softmax)) < 1e-6


def test_inspect_says_what_each_variable_became(ckpts):
    info = rnnexport.inspect(ckpts / "lstm_start_and_head" / "model.ckpt", SourceOptions(cells=("lstm:8",)))
    assert info.fixed_length is None and info.causal
    assert [(t.name, t.shape) for t in info.inputs] == [("x", (None, None, 5))]
    assert [(t.name, t.shape) for t in info.outputs] == [("y", (None, None, 4))]
    cell, head = info.layers
    assert (cell.name, cell.kind, cell.details["initial_state"]) == ("rnn/basic_lstm_cell",
                                                                     "LSTM(units=8, forget_bias=1)", "c0, h0")
    assert (head.kind, head.details) == ("matmul + bias", {"activation": "linear"})
    assert ("dense head from 'softmax_w' [8, 4] and 'softmax_b', the only kernel [8, K] with a bias left over; the "
            "checkpoint does not say which activation follows, so the export returns logits") in info.notes
    stack = rnnexport.inspect(ckpts / "stack_start_states", SourceOptions(cells=SPECS["stack_start_states"]))
    assert [(layer.kind, layer.details["initial_state"]) for layer in stack.layers] == [
        ("LSTM(units=8, forget_bias=1)", "init_state_0"), ("GRUCell(units=6)", "init_state_1")]
    old = rnnexport.inspect(ckpts / "tf0_names" / "model.ckpt", SourceOptions(cells=("gru:8",)))
    assert [(layer.name, layer.kind) for layer in old.layers] == [("RNN/GRUCell", "GRUCell(units=8)")]
    peepholes = rnnexport.inspect(ckpts / "lstm_peephole_projection", SourceOptions(cells=("LSTMCell:8",)))
    assert peepholes.layers[0].kind == "LSTM(units=8, forget_bias=1, peepholes, num_proj=6)"
    assert peepholes.outputs[0].shape == (None, None, 6)
    assert ("layer 0 is an LSTMCell with a projection and peepholes; no clip is applied (Saver does not store "
            "cell_clip or proj_clip: add :cell_clip=X:proj_clip=Y to its spec LSTMCell:8 if the model was built "
            "with them)") in peepholes.notes
    stacked = rnnexport.inspect(ckpts / "same_shape_stack", SourceOptions(cells=("lstm:5", "lstm:5")))
    assert [layer.name for layer in stacked.layers] == [f"rnn/multi_rnn_cell/cell_{i}/basic_lstm_cell" for i in (0, 1)]


@pytest.mark.parametrize("name, args, message", [
    ("basic_lstm", [], "model.ckpt: no meta graph (model.ckpt.meta is missing), so nothing says how its variables "
     "connect; name the architecture with --cell (e.g. --cell lstm:64) or --architecture model.json; the checkpoint "
     "holds rnn/basic_lstm_cell/bias [32], rnn/basic_lstm_cell/kernel [13, 32]"),
    ("two_candidates", ["--cell", "lstm:8"], "model.ckpt: layer 0 (lstm:8) could be any of 2 kernels "
     "(bidirectional_rnn/bw/basic_lstm_cell/kernel, bidirectional_rnn/fw/basic_lstm_cell/kernel); rnnexport will not "
     "guess which; the checkpoint holds bidirectional_rnn/bw/basic_lstm_cell/bias [32], "
     "bidirectional_rnn/bw/basic_lstm_cell/kernel [13, 32], bidirectional_rnn/fw/basic_lstm_cell/bias [32], "
     "bidirectional_rnn/fw/basic_lstm_cell/kernel [13, 32]"),
    ("basic_lstm", ["--cell", "lstm:7"], "model.ckpt: no variables fit layer 0 (lstm:7): it needs a kernel [F + 7, 28] "
     "with its bias (rnn/basic_lstm_cell/kernel [13, 32] is lstm:8); check --cell; the checkpoint holds"),
    ("gru", ["--cell", "gru:8,gru:8"], "no variables fit layer 1 (gru:8): it needs a kernel [8 + 8, 16] with its bias "
     "and a candidate kernel beside it; check --cell"),
    ("tf10_names", ["--cell", "lstm:8"], "model.ckpt: rnn/multi_rnn_cell/cell_1/basic_lstm_cell/biases, "
     "rnn/multi_rnn_cell/cell_1/basic_lstm_cell/weights belong to no layer of lstm:8, and rnnexport does not guess "
     "what they compute"),
    ("basic_lstm", ["--cell", "lstm:x"], "cell spec 'lstm:x': units must be a positive integer; e.g. lstm:64"),
])
def test_what_does_not_fit_is_refused_in_one_line_naming_the_checkpoint(ckpts, name, args, message):
    result = CliRunner().invoke(cli, ["inspect", str(ckpts / name / "model.ckpt"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_keras_files_describe_the_architecture_too(tmp_path):
    import keras

    from rnnexport_converters.tf1.architecture import from_keras

    model = keras.Sequential([keras.Input((None, 5)), keras.layers.SimpleRNN(4, activation="relu"),
                              keras.layers.Dense(3, "sigmoid")])
    model.save(tmp_path / "model.keras")
    found = from_keras(tmp_path / "model.keras")
    assert [(s.kind, s.units, s.activation) for s in found.specs] == [("rnn", 4, "relu")]
    assert (found.head, found.head_activation, found.last_step, found.features) == (True, "sigmoid", True, 5)


def test_a_keras_layer_tf1_cells_cannot_fill_is_refused(ckpts, tmp_path):
    import keras

    path = _keras_config(tmp_path, keras.layers.GRU(8, return_sequences=True, name="recurrent"))
    result = CliRunner().invoke(cli, ["inspect", str(ckpts / "gru"), "--architecture", str(path)])
    assert result.exit_code == 2
    assert ("architecture.json: layer 'recurrent' is a GRU with reset_after=True; TF1's GRUCell computes "
            "reset_after=False") in result.output


def test_deepnlp_without_its_graph_computes_what_its_graph_does(realworld):
    """The deepnlp tagger's checkpoint, its meta graph ignored: --cell rebuilds the logits its own
    graph (the inference copy, 30 steps, batch 1) computes."""
    import tensorflow as tf

    prefix = realworld / "deepnlp-pos-tf1ckpt" / "pos.ckpt"
    graphless = Tf1CheckpointSource().open(prefix, SourceOptions(cells=("lstm:128", "lstm:128")))
    assert [layer.kind for layer in graphless.info.layers] == ["Embedding", *["LSTM(units=128, forget_bias=1)"] * 2,
                                                               "matmul + bias"]
    ids = np.random.default_rng(0).integers(0, 50000, (1, 30)).astype(np.int32)
    with graphless.reference(resolve_device("cpu")) as reference:
        logits = reference.run({"ids": ids})["y"]
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(f"{prefix}.meta", clear_devices=True)
        with tf.compat.v1.Session(graph=graph) as session:
            saver.restore(session, str(prefix))
            expected = session.run("pos_var_scope_zh_1/pos_variables/output_node:0",
                                   {"pos_var_scope_zh_1/input_data:0": ids})
    assert logits.shape == (1, 30, 44) and expected.shape == (30, 44)
    assert np.max(np.abs(logits[0] - expected)) < 1e-5


def test_deepnlp_from_a_keras_config_with_its_embedding(realworld, tmp_path):
    import keras

    prefix = realworld / "deepnlp-pos-tf1ckpt" / "pos.ckpt"
    for vocab in (50000, 1000):
        layers = [keras.Input((None,), dtype="int32"), keras.layers.Embedding(vocab, 128),
                  *[keras.layers.LSTM(128, return_sequences=True) for _ in range(2)], keras.layers.Dense(44)]
        (tmp_path / f"{vocab}.json").write_text(keras.Sequential(layers).to_json())
    info = rnnexport.inspect(prefix, SourceOptions(architecture=tmp_path / "50000.json"))
    assert [(t.name, t.dtype, t.vocab_size) for t in info.inputs] == [("ids", "int32", 50000)]
    assert [layer.kind for layer in info.layers] == ["Embedding", *["LSTM(units=128, forget_bias=1)"] * 2,
                                                     "matmul + bias"]
    result = CliRunner().invoke(cli, ["inspect", str(prefix), "--architecture", str(tmp_path / "1000.json")])
    assert result.exit_code == 2
    assert ("pos.ckpt: architecture 1000.json embeds 1000 ids in 128 dimensions, but "
            "'pos_var_scope_zh/pos_variables/embedding' is [50000, 128]") in result.output
