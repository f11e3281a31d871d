"""Every Keras layer kind the source supports: convert to a SavedModel, pass the sweep."""

from __future__ import annotations

import numpy as np
import pytest

import rnnexport
from rnnexport import ConvertOptions, SweepOptions, ValidateOptions
from rnnexport import plugins
from rnnexport.errors import SourceError, UnsupportedModelError

from conftest import UNTIMED, artifact, export_result
from keras_models import KINDS, build


@pytest.fixture
def converted(converted_kinds):
    return converted_kinds


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kind_passes_parity_at_lengths_the_source_never_saw(converted, kind):
    model, path, result = converted[kind]
    report = result.report
    assert report.passed, report.failures()
    export = export_result(result, "savedmodel")
    assert artifact(result, "savedmodel").name == f"{kind}.savedmodel"
    lengths = {c.case.length for c in export.cases}
    batches = {c.case.batch for c in export.cases}
    assert {1, 2} <= lengths and {1, 3} <= batches
    fixed = rnnexport.inspect(path).fixed_length
    assert max(lengths) >= 4 * (fixed or 32)
    for case in export.cases:
        for output in case.outputs:
            assert output.max_abs is not None and output.max_abs <= export.tolerance.atol
            assert output.nonfinite_export == 0 and output.nonfinite_reference == 0


def test_outputs_keep_the_source_names(converted):
    _, _, result = converted["return_state"]
    names = [o.name for o in export_result(result, "savedmodel").cases[0].outputs]
    assert names == ["lstm", "lstm_1", "lstm_2"]
    info = rnnexport.inspect(converted["return_state"][1])
    assert [o.time_axis for o in info.outputs] == [1, None, None]


def test_fixed_length_and_unrolled_models_are_rebuilt_for_any_length(converted):
    for kind, length in (("fixed_length", 12), ("unrolled", 10)):
        info = rnnexport.inspect(converted[kind][1])
        assert info.fixed_length == length
        assert info.inputs[0].shape == (None, None, 5)
        assert any("accepts any length" in n for n in info.notes)
        methods = {c.case.length: c.reference_method for c in export_result(converted[kind][2], "savedmodel").cases}
        assert methods[length] == "source"
        assert methods[4 * length] == "source rebuilt for any length"
    assert any("unroll=True" in n for n in rnnexport.inspect(converted["unrolled"][1]).notes)


def test_rebuilt_model_matches_the_unrolled_original_at_its_length(converted):
    model, path, _ = converted["unrolled"]
    opened = plugins.find_source(path).open(path, rnnexport.SourceOptions())
    x = np.random.default_rng(5).standard_normal((2, 10, 5)).astype("float32")
    rebuilt = opened.rebuilt()
    assert not any(getattr(layer, "unroll", False) for layer in rebuilt.layers)
    np.testing.assert_allclose(np.asarray(rebuilt(x)), np.asarray(model(x)), atol=1e-6)


def test_embedding_inputs_take_token_ids_within_vocabulary(converted):
    info = rnnexport.inspect(converted["embedding_mask_zero"][1])
    (tokens,) = info.inputs
    assert (tokens.dtype, tokens.shape, tokens.vocab_size, tokens.mask_value) == ("int32", (None, None), 50, 0.0)
    kinds = {c.case.kind for c in export_result(converted["embedding_mask_zero"][2], "savedmodel").cases}
    assert kinds == {"random", "padded", "again"}


def test_masked_model_is_checked_on_padded_batches(converted):
    cases = export_result(converted["masking"][2], "savedmodel").cases
    padded = [c for c in cases if c.case.kind == "padded"]
    assert len(padded) == 1 and padded[0].passed
    x = padded[0].case.inputs["x"]
    assert (x[2, 1:] == 0).all() and (x[0] != 0).all()


def test_in_memory_model(tmp_path):
    model = build("stacked")
    result = rnnexport.convert(model, tmp_path, ConvertOptions(validation=ValidateOptions(
        sweep=SweepOptions(lengths=(3, 70), batches=(2,)), latency_repeats=0)))
    assert result.report.passed
    assert result.artifacts[0].path == tmp_path / "stacked.savedmodel"
    assert [c.case.length for c in result.report.exports[0].cases] == [3, 3, 70]


def test_keras2_h5_files_written_by_tf_keras(keras2_files, tmp_path):
    assert set(keras2_files) == {"fixed_lstm", "hard_sigmoid_gru", "masked_bidirectional", "sequential_simplernn"}
    result = rnnexport.convert(sorted(keras2_files.values()), tmp_path, ConvertOptions(validation=UNTIMED))
    assert result.report.passed, result.report.failures()
    assert len(result.report.exports) == 4
    info = rnnexport.inspect(keras2_files["fixed_lstm"])
    assert info.format.startswith("legacy .h5 (Keras 2.")
    assert info.fixed_length == 30


def test_keras2_semantics_match_tf_keras_itself(keras2_files, tmp_path):
    """Our Keras 3 reading of a Keras 2 file computes what tf-keras computes, hard_sigmoid included."""
    from conftest import TESTS, run_python
    from rnnexport.device import resolve_device

    names, opened, args = ("hard_sigmoid_gru", "masked_bidirectional"), {}, []
    for name in names:
        path = keras2_files[name]
        opened[name] = plugins.find_source(path).open(path, rnnexport.SourceOptions())
        rng = np.random.default_rng(0)
        if opened[name].info.inputs[0].vocab_size:
            x = rng.integers(1, opened[name].info.inputs[0].vocab_size, size=(2, 23)).astype("int32")
            x[1, 15:] = 0
        else:
            x = rng.standard_normal((2, 23, 4)).astype("float32")
        np.savez(tmp_path / f"{name}.in.npz", x=x)
        args += [str(path), str(tmp_path / f"{name}.in.npz"), str(tmp_path / f"{name}.out.npz")]
    run_python(TESTS / "tfkeras_helper.py", "predict", *args, legacy_keras=True)  # one tf-keras process for both
    for name in names:
        info = opened[name].info
        x = np.load(tmp_path / f"{name}.in.npz")["x"]
        expected = np.load(tmp_path / f"{name}.out.npz")["arr_0"]
        ours = opened[name].reference(resolve_device("cpu")).run({info.inputs[0].name: x})
        np.testing.assert_allclose(next(iter(ours.values())), expected, atol=1e-5, err_msg=name)
    assert any("hard_sigmoid" in n for n in rnnexport.inspect(keras2_files["hard_sigmoid_gru"]).notes)


def test_unsupported_layer_is_refused_naming_it(tmp_path):
    import keras

    i = keras.Input((7, 3), name="x")
    x = keras.layers.LSTM(4, return_sequences=True)(i)
    out = keras.layers.Dense(2)(keras.layers.Flatten(name="flat")(x))
    path = tmp_path / "flat.keras"
    keras.Model(i, out).save(path)
    info = rnnexport.inspect(path)
    assert not info.exportable and "layer 'flat' (Flatten)" in info.problems[0]
    with pytest.raises(UnsupportedModelError, match="layer 'flat' \\(Flatten\\) is not supported"):
        rnnexport.convert(path, tmp_path / "out")
    assert not (tmp_path / "out" / "flat.savedmodel").exists()


def test_lambda_layer_needs_unsafe(tmp_path):
    import keras

    i = keras.Input((None, 3), name="x")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(i)
    path = tmp_path / "lam.keras"
    keras.Model(i, keras.layers.GRU(4, return_sequences=True)(x)).save(path)
    with pytest.raises(UnsupportedModelError, match="layer 'double' is a Lambda layer.*--unsafe"):
        rnnexport.inspect(path)
    options = ConvertOptions(source=rnnexport.SourceOptions(unsafe=True), validation=UNTIMED)
    result = rnnexport.convert(path, tmp_path, options)
    assert result.report.passed


def test_not_a_model_file(tmp_path):
    path = tmp_path / "notes.keras"
    path.write_text("hello")
    with pytest.raises(SourceError, match="notes.keras: not a Keras model file"):
        rnnexport.inspect(path)


def test_custom_layer_is_refused_naming_it(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="rnnexport_tests")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    i = keras.Input((None, 3), name="x")
    path = tmp_path / "custom.keras"
    keras.Model(i, keras.layers.GRU(4)(Scale(name="scale")(i))).save(path)
    with pytest.raises(UnsupportedModelError, match=r"layer 'scale' is a custom layer \(.*Scale\) that rnnexport "
                                                    r"cannot export"):
        rnnexport.inspect(path)
