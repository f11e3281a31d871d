"""The SavedModel files themselves: plain loading elsewhere, dynamic dims, no GPU-only ops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import rnnexport
from rnnexport.cli import cli

from conftest import TESTS, UNTIMED, artifact, run_python
from keras_models import KINDS, build


@pytest.fixture
def exports(converted_kinds):
    """kind -> (source .keras path, SavedModel path), from the session's conversions."""
    return {kind: (source, artifact(result, "savedmodel")) for kind, (_, source, result) in converted_kinds.items()}


def _graph_ops(path: Path) -> set[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    ops = set()
    for meta in proto.meta_graphs:
        ops |= {n.op for n in meta.graph_def.node}
        for function in meta.graph_def.library.function:
            ops |= {n.op for n in function.node_def}
    return ops


def test_loads_in_a_fresh_process_without_rnnexport(exports, tmp_path):
    from rnnexport import plugins
    from rnnexport.device import resolve_device

    from rnnexport.sweep import build_cases

    arrays = {}
    for kind, (source, path) in exports.items():
        opened = plugins.find_source(source).open(source, rnnexport.SourceOptions())
        # A length no sweep case uses, at a batch no case uses.
        cases = build_cases(opened.info.inputs, None, rnnexport.SweepOptions(lengths=(37,), batches=(2,), seed=9))
        (case,) = [c for c in cases if c.kind == "random"]
        arrays[f"{kind}/path"] = np.array(str(path))
        for name, value in case.inputs.items():
            arrays[f"{kind}/input/{name}"] = value
        for output, value in opened.reference(resolve_device("cpu")).run(case.inputs).items():
            arrays[f"{kind}/expected/{output}"] = value
    np.savez(tmp_path / "cases.npz", **arrays)
    lines = run_python(TESTS / "savedmodel_helper.py", str(tmp_path / "cases.npz")).stdout.strip().splitlines()
    results = {r["name"]: r for r in map(json.loads, lines)}
    assert set(results) == set(KINDS)
    for kind, result in results.items():
        assert not result["rnnexport_imported"]
        assert result["errors"], kind
        assert max(result["errors"].values()) < 1e-5, (kind, result["errors"])


def test_saved_model_cli_shows_dynamic_batch_and_time(exports):
    cli_path = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run([str(cli_path), "show", "--all", "--dir", str(exports["fixed_length"][1])],
                           capture_output=True, text=True, check=True).stdout
    assert "inputs['x'] tensor_info:" in shown
    assert "shape: (-1, -1, 5)" in shown
    assert "outputs['out'] tensor_info:" in shown and "shape: (-1, -1, 2)" in shown
    tokens = subprocess.run([str(cli_path), "show", "--all", "--dir", str(exports["embedding_mask_zero"][1])],
                            capture_output=True, text=True, check=True).stdout
    assert "dtype: DT_INT32" in tokens and "shape: (-1, -1)" in tokens


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before", "bidirectional_stack"])
def test_graph_runs_a_loop_and_holds_no_cudnn_kernel(exports, kind):
    ops = _graph_ops(exports[kind][1])
    assert not {op for op in ops if "Cudnn" in op}, sorted(ops)
    assert ops & {"While", "StatelessWhile"}, "the recurrence must be a loop, not unrolled steps"


def test_rebuilt_recurrent_layers_never_pick_cudnn(exports):
    """Keras chooses cuDNN at trace time when it sees a GPU; the rebuilt layers must not."""
    import keras

    from rnnexport import plugins

    model = build("bidirectional_stack")
    opened = plugins.find_source(model).open(model, rnnexport.SourceOptions())
    recurrent = [
        inner
        for layer in opened.rebuilt().layers
        for inner in (getattr(layer, "forward_layer", None), getattr(layer, "backward_layer", None), layer)
        if isinstance(inner, (keras.layers.LSTM, keras.layers.GRU))
    ]
    assert len(recurrent) == 4
    assert all(layer.use_cudnn is False for layer in recurrent)


def _corrupt(path: Path, out: Path, scale: float) -> str:
    """Re-save the SavedModel with one weight changed; return that variable's name."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    target = next(v for v in loaded.model_variables if "kernel" in v.name and len(v.shape) == 2)
    target.assign(target * scale)
    tf.saved_model.save(loaded, str(out), signatures={"serving_default": loaded.signatures["serving_default"]})
    return target.name


def test_corrupted_weight_fails_validate_naming_output_and_case(tmp_path):
    model = build("lstm")
    source = tmp_path / "lstm.keras"
    model.save(source)
    good = rnnexport.convert(source, tmp_path / "good", rnnexport.ConvertOptions(validation=UNTIMED)).artifacts[0].path
    bad = tmp_path / "bad.savedmodel"
    _corrupt(good, bad, 1.01)
    runner = CliRunner()
    ok = runner.invoke(cli, ["validate", str(source), str(good)])
    assert ok.exit_code == 0, ok.output
    failed = runner.invoke(cli, ["validate", str(source), str(bad), "--report", str(tmp_path / "r.json")])
    assert failed.exit_code == 1, failed.output
    assert "FAIL savedmodel bad.savedmodel: len=1 batch=1: output 'lstm': max abs err" in failed.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is False
    first = report["exports"][0]["cases"][0]["outputs"][0]
    assert first["name"] == "lstm" and first["passed"] is False and first["max_abs"] > 1e-5
    assert first["first_bad_step"] == 0
