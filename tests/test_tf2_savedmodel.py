"""The TF2 SavedModel source: tf.keras 2.x `model.save(dir)` SavedModels rebuilt from the Keras
config in their metadata, SavedModels of tf.functions read from their While loops, both checked
against the SavedModel itself (a signature traced at one length freed to serve the others);
SavedModels that read files are refused before anything runs. TF2 frozen graphs (`.pb`) get the
same loop rewrite from the frozen-graph source."""

from __future__ import annotations

import re
import shutil

import pytest

import rnnexport
from rnnexport import ConvertOptions, SweepOptions, ValidateOptions
from rnnexport import plugins
from rnnexport.errors import UnsupportedModelError

from conftest import TESTS, artifact, export_result, run_python

CONVERTED = ("stacked_fixed", "bidirectional", "module_stack")
SIGNATURE = "source (signature 'serving_default')"
FREED = "source (signature 'serving_default' frozen and lowered, its 6 steps freed)"
LOOP_LAYERS = ["keras GRU(units=5)", "keras GRU(units=4, reset_after=False)", "keras SimpleRNN(units=3)",
               "keras LSTM(units=4)", "matmul + bias"]


@pytest.fixture(scope="module")
def savedmodels(tmp_path_factory):
    """SavedModels written by tf-keras 2.21 itself (tf2_savedmodel_helper), one directory each."""
    out = tmp_path_factory.mktemp("tf2_savedmodels")
    run_python(TESTS / "tf2_savedmodel_helper.py", "write", str(out), legacy_keras=True)
    return out


@pytest.fixture(scope="module")
def converted(savedmodels, tmp_path_factory):
    """Each converted to a SavedModel and swept at the default lengths, at batch 2."""
    out = tmp_path_factory.mktemp("tf2_exports")
    options = ConvertOptions(validation=ValidateOptions(sweep=SweepOptions(batches=(2,)), latency_repeats=0))
    return {name: rnnexport.convert(savedmodels / name, out, options) for name in CONVERTED}


def _checked(result):
    export = export_result(result, "savedmodel")
    assert result.report.passed, result.report.failures()
    for case in export.checked:
        for output in case.outputs:
            assert output.max_abs is not None and output.max_abs < 1e-5, (case.case.name, output.max_abs)
    return export


def test_directories_with_loops_or_keras_metadata_are_this_source(savedmodels):
    for name in ("lstm", "module_stack", "subclassed_state"):
        assert plugins.find_source(savedmodels / name).name == "tf2-savedmodel"
    assert plugins.find_source(savedmodels / "lstm" / "saved_model.pb").name == "tf2-savedmodel"


def test_keras_models_are_rebuilt_from_the_metadata(savedmodels):
    stacked = rnnexport.inspect(savedmodels / "stacked_fixed")
    assert stacked.kind == "tf2-savedmodel"
    assert stacked.format == "TF2 SavedModel (tf.keras 2.21.0, Keras config in the metadata)"
    assert [(l.kind, l.units, l.details.get("reset_after")) for l in stacked.layers if l.recurrent] == [
        ("GRU", 5, True), ("GRU", 4, False), ("SimpleRNN", 3, None)]
    assert stacked.fixed_length == 6 and stacked.inputs[0].shape == (None, None, 4)
    bidirectional = rnnexport.inspect(savedmodels / "bidirectional")
    assert [(l.kind, l.direction) for l in bidirectional.layers] == [
        ("Bidirectional(LSTM)", "bidirectional"), ("Dense", None)]
    assert not bidirectional.causal and bidirectional.fixed_length is None


def test_metadata_in_the_object_graph_as_tf_keras_2_4_wrote_it_is_read_too(savedmodels, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    from rnnexport_converters.savedmodel.contents import saved_metadata_class

    old = tmp_path / "lstm_tf24"
    shutil.copytree(savedmodels / "lstm", old)
    saved = saved_metadata_class()()
    saved.ParseFromString((old / "keras_metadata.pb").read_bytes())
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((old / "saved_model.pb").read_bytes())
    for node in saved.nodes:
        proto.meta_graphs[0].object_graph_def.nodes[node.node_id].user_object.metadata = node.metadata
    (old / "saved_model.pb").write_bytes(proto.SerializeToString())
    (old / "keras_metadata.pb").unlink()
    info = rnnexport.inspect(old)
    assert info.format == "TF2 SavedModel (tf.keras 2.21.0, Keras config in the metadata)"
    assert [(l.kind, l.units) for l in info.layers] == [("LSTM", 6), ("Dense", None)]


def test_a_variable_length_keras_model_passes_against_its_signature(converted):
    export = _checked(converted["bidirectional"])
    assert {c.case.length for c in export.checked} == {1, 2, 7, 32, 128}
    assert {c.reference_method for c in export.checked} == {SIGNATURE}


def test_a_fixed_length_signature_is_the_reference_at_its_length_and_freed_at_the_others(converted, savedmodels):
    note = ("the SavedModel's signature 'serving_default' is traced for 6 steps: it is the reference at that length; "
            "at the others, the signature frozen and lowered with its time axis freed, once it reproduces the "
            "signature at that length (else shorter lengths padded to it)")
    assert note in rnnexport.inspect(savedmodels / "stacked_fixed").notes
    export = _checked(converted["stacked_fixed"])
    methods = {c.case.length: c.reference_method for c in export.checked}
    assert methods == {1: FREED, 2: FREED, 3: FREED, 6: SIGNATURE, 24: FREED}
    assert not export.skipped


def test_a_signature_its_lowered_graph_cannot_free_stays_the_only_reference(savedmodels, tmp_path):
    """The signature reads only its 6 traced steps: freed, its graph returns 6 steps for 13, so it
    serves no other length; the signature serves 6 steps and shorter ones padded."""
    sweep = ValidateOptions(sweep=SweepOptions(lengths=(2, 6, 13), batches=(2,)), latency_repeats=0)
    export = _checked(rnnexport.convert(savedmodels / "bound_signature", tmp_path, ConvertOptions(validation=sweep)))
    methods = {c.case.length: c.reference_method for c in export.checked}
    assert methods == {2: f"{SIGNATURE}, padded from 2 to 6 steps", 6: SIGNATURE}
    assert {(c.case.length, c.skipped) for c in export.skipped} == {
        (13, "the SavedModel's signature 'serving_default' is traced for 6 steps; it is ground truth at that length "
             "and shorter ones only (its lowered graph cannot serve other lengths: at 13 steps its output "
             f"'{export.checked[0].outputs[0].name}' has shape [3, 6, 3], not [3, 13, ...])")}


def test_functions_without_keras_metadata_are_read_from_their_loops(converted, savedmodels):
    info = rnnexport.inspect(savedmodels / "module_stack")
    assert info.format == "TF2 SavedModel of tf.functions (TensorFlow 2.21.0, While loops) (4 cells)"
    assert [l.kind for l in info.layers] == LOOP_LAYERS
    assert {l.details.get("runner") for l in info.layers if l.recurrent} == {"dynamic_rnn"}
    export = _checked(converted["module_stack"])
    assert {c.case.length for c in export.checked} == {1, 2, 7, 32, 128}


def test_rnnexport_reads_its_own_savedmodel_export(converted):
    info = rnnexport.inspect(artifact(converted["module_stack"], "savedmodel"))
    assert info.kind == "tf2-savedmodel" and info.exportable
    assert [l.kind for l in info.layers] == LOOP_LAYERS
    assert [(t.name, t.shape) for t in info.inputs] == [("x", (None, None, 3))]


def test_a_subclassed_model_with_a_state_input_is_described_then_exported_per_output(savedmodels, tmp_path):
    info = rnnexport.inspect(savedmodels / "subclassed_state")
    assert info.format == "TF2 SavedModel of a subclassed tf.keras StatefulCall (TensorFlow 2.21.0, While loops)"
    assert [(t.name, t.shape) for t in info.inputs] == [("h", (None, 4)), ("x", (None, None, 3))]
    assert [t.name for t in info.outputs] == ["output_0", "output_1"]
    assert info.problems == ("several outputs could be the model's; name one with --outputs: output_0, output_1",)
    with pytest.raises(UnsupportedModelError, match="several outputs could be the model's"):
        rnnexport.convert(savedmodels / "subclassed_state", tmp_path)
    source = rnnexport.SourceOptions(outputs=("output_0",))
    info = rnnexport.inspect(savedmodels / "subclassed_state", source)
    assert [l.kind for l in info.layers] == ["keras GRU(units=4)", "matmul + bias"]
    assert "'h:0' holds an initial state; fed zeros, where the export's cells start" in info.notes
    sweep = ValidateOptions(sweep=SweepOptions(batches=(2,)), latency_repeats=0)
    export = _checked(rnnexport.convert(savedmodels / "subclassed_state", tmp_path,
                                        ConvertOptions(source=source, validation=sweep)))
    assert {c.case.length for c in export.checked} == {1, 2, 7, 32, 128}


def test_a_savedmodel_that_reads_files_is_refused_before_it_runs(savedmodels):
    with pytest.raises(UnsupportedModelError, match=r"reads_files: the SavedModel's functions run ReadFile \(in "
                                                    r"__inference___call___\d+\), which reads or writes files"):
        rnnexport.inspect(savedmodels / "reads_files")


def test_a_loop_that_is_no_recurrent_layer_is_described_not_exported(savedmodels):
    info = rnnexport.inspect(savedmodels / "running_sum")
    assert info.format == "TF2 SavedModel of tf.functions (TensorFlow 2.21.0, While loops)"
    assert [(t.name, t.shape) for t in info.outputs] == [("y", (None, None, 3))]
    assert info.layers == () and info.problems == ("no recurrent cell feeds 'Identity:0'",)


def test_tf2_frozen_graphs_have_their_loops_rewritten_as_tf1_loops(savedmodels, tmp_path):
    """convert_variables_to_constants_v2 graphs written as .pb: lowered over TensorLists (with the
    placeholders lowering leaves unread) or keeping a functional While; both read as TF1 loops."""
    import tensorflow as tf

    lowered = tf.compat.v1.GraphDef()
    lowered.ParseFromString((savedmodels / "frozen_lstm_lowered.pb").read_bytes())
    ops = {n.op for n in lowered.node}
    assert {"TensorListReserve", "Merge"} <= ops and not ops & {"While", "StatelessWhile"}
    assert any(n.name.startswith("unused_control_flow_input") for n in lowered.node if n.op == "Placeholder")
    expected = {"frozen_lstm_lowered": (["keras LSTM(units=4)", "matmul + bias"], (None, None, 2)),
                "frozen_gru_while": (["keras GRU(units=5)", "matmul + bias + activation"], (None, 2))}
    sweep = ValidateOptions(sweep=SweepOptions(lengths=(1, 7), batches=(2,)), latency_repeats=0)
    for name, (kinds, shape) in expected.items():
        path = savedmodels / f"{name}.pb"
        assert plugins.find_source(path).name == "unrolled-graph"
        info = rnnexport.inspect(path)
        assert info.format == "frozen TF2 graph (1 cell)" and [l.kind for l in info.layers] == kinds
        assert [(t.name, t.shape) for t in info.inputs] == [("x", (None, None, 3))]
        assert [(t.name, t.shape) for t in info.outputs] == [("Identity", shape)] and info.fixed_length is None
        export = _checked(rnnexport.convert(path, tmp_path / name, ConvertOptions(validation=sweep)))
        assert {c.case.length for c in export.checked} == {1, 7} and not export.skipped
        assert {c.reference_method for c in export.checked} == {"source"}


def test_a_tf2_frozen_graph_traced_at_one_length_is_fed_at_a_free_length(savedmodels, tmp_path):
    """Keras sizes the zero state by the input itself: the input is freed with the loop's entry."""
    path = savedmodels / "frozen_lstm_fixed.pb"
    info = rnnexport.inspect(path)
    assert info.fixed_length == 6 and [(t.name, t.shape) for t in info.outputs] == [("Identity", (None, 2))]
    sweep = ValidateOptions(sweep=SweepOptions(lengths=(1, 6, 13), batches=(2,)), latency_repeats=0)
    export = _checked(rnnexport.convert(path, tmp_path, ConvertOptions(validation=sweep)))
    methods = {c.case.length: c.reference_method for c in export.checked}
    assert sorted(methods) == [1, 6, 13] and methods[6] == "source" and not export.skipped
    for length in (1, 13):
        assert re.fullmatch(r"source, fed at 'Func/[^']*lstm[^']*/input/_0:0' with its 6 steps freed", methods[length])


def test_a_tf2_frozen_graph_flattening_its_steps_is_refused_naming_the_reshape(savedmodels):
    with pytest.raises(UnsupportedModelError, match=(
            r"frozen_flatten.pb: op '[^']*flatten/Reshape' \(Reshape\) folds the last recurrent layer's 6 steps of 4 "
            r"features into 24 per row, which op '[^']*/MatMul' \(MatMul\) reads: the graph runs at length 6 only, "
            "and rnnexport exports models that accept any length")):
        rnnexport.inspect(savedmodels / "frozen_flatten.pb")


def test_a_tf2_frozen_graph_whose_lists_cannot_be_followed_is_refused_naming_the_file(savedmodels, tmp_path):
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString((savedmodels / "frozen_lstm_lowered.pb").read_bytes())
    node = next(n for n in graph.node if n.op == "TensorListStack")
    node.op = "TensorListConcatV2"
    path = tmp_path / "concatenated.pb"
    path.write_bytes(graph.SerializeToString())
    with pytest.raises(UnsupportedModelError, match=rf"^{re.escape(str(path))}: op '{re.escape(node.name)}' "
                                                    r"\(TensorListConcatV2\) handles a TensorList in a way rnnexport "
                                                    "cannot follow$"):
        rnnexport.inspect(path)
