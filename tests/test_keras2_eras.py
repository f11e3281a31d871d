"""Keras 2 `.h5` files of every era (Keras 2.0.8, 2.2.5, tf.keras 2.15), weights beside their JSON,
custom layers, and models that need a minimum length. The files are written by tf-keras
(tests/keras2_eras_helper.py, which says how the older layouts are made)."""

from __future__ import annotations

import json
import shutil

import h5py
import keras
import numpy as np
import pytest

import rnnexport
from rnnexport import ConvertOptions, SourceOptions, SweepOptions, ValidateOptions, plugins
from rnnexport.device import resolve_device
from rnnexport.errors import SourceError, UnsupportedModelError

from conftest import TESTS, UNTIMED, export_result, run_python


@keras.saving.register_keras_serializable(package="rnnexport_tests")
class Scale(keras.layers.Layer):
    """The Keras 3 class of the helper's custom layer: multiplies each feature by a learned factor."""

    def build(self, input_shape):
        self.factor = self.add_weight(name="factor", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.factor


CUSTOM = SourceOptions(custom_objects=("test_keras2_eras:Scale",))


@pytest.fixture(scope="module")
def eras(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras2_eras")
    run_python(TESTS / "keras2_eras_helper.py", "write", str(out), legacy_keras=True)
    return out


@pytest.fixture(scope="module")
def converted(eras, tmp_path_factory):
    """Every era's file through the default lengths (at one batch size, to stay quick), in one run."""
    sources = [eras / f"{name}.h5" for name in
               ("keras208_sequential", "keras225_conv_sequential", "keras225_bidirectional", "tfkeras_slash_unrolled",
                "keras225_every_layer")]
    sources.append(eras / "json_beside" / "model.h5")
    options = ConvertOptions(validation=ValidateOptions(sweep=SweepOptions(batches=(2,)), latency_repeats=0))
    return rnnexport.convert(sources, tmp_path_factory.mktemp("eras_out"), options)


@pytest.mark.parametrize("source, lengths", [
    ("keras208_sequential.h5", {1, 2, 3, 12, 48}),
    ("keras225_conv_sequential.h5", {6, 7, 20, 80}),
    ("keras225_bidirectional.h5", {1, 2, 3, 10, 40}),
    ("tfkeras_slash_unrolled.h5", {1, 2, 3, 8, 32}),
    ("keras225_every_layer.h5", {1, 2, 7, 32, 128}),
    ("model.h5", {1, 2, 7, 32, 128}),
])
def test_every_era_passes_the_default_sweep(converted, source, lengths):
    assert converted.report.passed, converted.report.failures()
    export = next(e for e in converted.report.exports if e.source.endswith("/" + source))
    assert {c.case.length for c in export.checked} == lengths
    assert not export.skipped
    assert export.max_abs < 1e-5


@pytest.mark.parametrize("name, options", [
    ("keras208_sequential", SourceOptions()),
    ("keras225_conv_sequential", SourceOptions()),
    ("keras225_bidirectional", SourceOptions()),
    ("tfkeras_slash_unrolled", SourceOptions()),
    ("custom_layer", CUSTOM),
    ("json_beside/model", SourceOptions()),
    ("tfkeras1_cudnn", SourceOptions()),
    ("tfkeras_every_layer", SourceOptions()),
    ("keras225_every_layer", SourceOptions()),
])
def test_our_reading_matches_tf_keras_on_the_original_file(eras, name, options):
    """tf-keras loaded each file (the rewritten old layouts included) and predicted; we must agree."""
    path = eras / f"{name}.h5"
    opened = plugins.find_source(path).open(path, options)
    recorded = np.load(path.with_suffix(".npz"))
    spec = opened.info.inputs[0]
    ours = opened.reference(resolve_device("cpu")).run({spec.name: recorded["x"].astype(spec.dtype)})
    for index, value in enumerate(ours.values()):
        np.testing.assert_allclose(value, recorded[f"y{index}"], atol=1e-5)


def test_keras208_sequential_is_read_as_keras_2_computed_it(eras):
    info = rnnexport.inspect(eras / "keras208_sequential.h5")
    assert info.format == "legacy .h5 (Keras 2.0.8)"
    assert [(t.name, t.dtype, t.shape, t.vocab_size) for t in info.inputs] == [
        ("embedding_1_input", "int32", (None, None), 30)]
    assert info.fixed_length == 12
    assert [(layer.kind, layer.details.get("reset_after")) for layer in info.layers if layer.recurrent] == [
        ("GRU", False)]
    assert "Keras 2 hard_sigmoid (clip(0.2x + 0.5)) kept on: gru_1" in info.notes


def test_keras225_layouts_keep_their_structure(eras):
    conv = rnnexport.inspect(eras / "keras225_conv_sequential.h5")
    assert conv.format == "legacy .h5 (Keras 2.2.5)" and conv.min_length == 6
    assert ("shortest length 6 (conv1d_1: kernel 5, valid padding; max_pooling1d_1: pool 2, stride 2, valid "
            "padding): the sweep starts there") in conv.notes
    bidirectional = rnnexport.inspect(eras / "keras225_bidirectional.h5")
    assert [(layer.kind, layer.details.get("merge_mode")) for layer in bidirectional.layers if layer.recurrent] == [
        ("Bidirectional(LSTM)", "concat"), ("Bidirectional(LSTM)", "sum"), ("Bidirectional(GRU)", "mul"),
        ("Bidirectional(GRU)", "ave"), ("Bidirectional(LSTM)", None)]
    assert [layer.kind for layer in bidirectional.layers].count("BatchNormalization") == 2


@pytest.mark.parametrize("name", ["tfkeras_every_layer", "keras225_every_layer"])
def test_every_supported_layer_kind_is_read(eras, name):
    info = rnnexport.inspect(eras / f"{name}.h5")
    assert info.exportable and len(info.layers) == 30
    # Keras 3's SpatialDropout1D takes no noise_shape (it only matters while training).
    assert "arguments Keras 3 layers do not take, left out: sdrop: noise_shape" in info.notes
    assert "Keras 2 hard_sigmoid (clip(0.2x + 0.5)) kept on: act" in info.notes


def test_cudnn_layers_are_read_as_the_layers_they_compute(eras, tmp_path):
    path = eras / "tfkeras1_cudnn.h5"
    info = rnnexport.inspect(path)
    assert info.format == "legacy .h5 (Keras 2.2.4-tf)"
    assert [(layer.kind, layer.details.get("reset_after")) for layer in info.layers if layer.recurrent] == [
        ("Bidirectional(LSTM)", None), ("GRU", True)]
    assert "cuDNN-only layers read as the LSTM or GRU they compute: bilstm, gru" in info.notes
    result = rnnexport.convert(path, tmp_path, ConvertOptions(validation=ValidateOptions(
        sweep=SweepOptions(lengths=(1, 2, 11, 44), batches=(2,)), latency_repeats=0)))
    assert result.report.passed, result.report.failures()


def test_slashes_in_names_and_unrolled_layers(eras):
    info = rnnexport.inspect(eras / "tfkeras_slash_unrolled.h5")
    assert [t.name for t in info.inputs] == ["features_frames"]
    assert [t.name for t in info.outputs] == ["decoder_scores"]
    assert ("layer names with '/' renamed for Keras 3: features/frames -> features_frames, encoder/lstm -> "
            "encoder_lstm, encoder/pass -> encoder_pass, decoder/scores -> decoder_scores") in info.notes
    assert "unroll=True on encoder_lstm: the export runs them as loops" in info.notes


@pytest.mark.parametrize("folder, weights, architecture", [
    ("json_beside", "model.h5", "model.json"),
    ("architecture_beside", "model_weights.h5", "model_architecture.json"),
])
def test_weights_only_files_find_their_json_beside_them(eras, folder, weights, architecture):
    info = rnnexport.inspect(eras / folder / weights)
    assert info.format == f"legacy .h5 (Keras 2.21.0) + {architecture}"
    assert [(layer.name, layer.kind) for layer in info.layers] == [("gru", "GRU"), ("dense", "Dense")]


def test_architecture_option_names_the_json(eras, tmp_path):
    shutil.copy(eras / "json_beside" / "model.h5", tmp_path / "trained.h5")
    with pytest.raises(SourceError, match=r"trained.h5: holds weights only, no model config, and no model JSON "
                                          r"beside it; name the architecture with --architecture model.json$"):
        rnnexport.inspect(tmp_path / "trained.h5")
    shutil.copy(eras / "json_beside" / "model.json", tmp_path / "layout.json")
    info = rnnexport.inspect(tmp_path / "trained.h5", SourceOptions(architecture=tmp_path / "layout.json"))
    assert info.format == "legacy .h5 (Keras 2.21.0) + layout.json"


def test_custom_layer_needs_its_class(eras, tmp_path):
    path = eras / "custom_layer.h5"
    with pytest.raises(UnsupportedModelError) as refused:
        rnnexport.inspect(path)
    assert str(refused.value) == (f"{path}: layer 'attn' is of class 'Scale', which Keras cannot find; supply it "
                                  "with --custom-objects module:Scale")
    with pytest.raises(SourceError, match=r"^--custom-objects 'test_keras2_eras:Missing': module 'test_keras2_eras' "
                                          r"has no attribute 'Missing'$"):
        rnnexport.inspect(path, SourceOptions(custom_objects=("test_keras2_eras:Missing",)))
    with pytest.raises(SourceError, match=r"^--custom-objects 'no_such_module:Scale': cannot import module"):
        rnnexport.inspect(path, SourceOptions(custom_objects=("no_such_module:Scale",)))
    result = rnnexport.convert(path, tmp_path, ConvertOptions(source=CUSTOM, validation=ValidateOptions(
        sweep=SweepOptions(lengths=(1, 2, 9, 40)), latency_repeats=0)))
    assert result.report.passed, result.report.failures()
    assert {c.case.length for c in result.report.exports[0].checked} == {1, 2, 9, 40}


def _with_config(source, destination, change):
    shutil.copy(source, destination)
    with h5py.File(destination, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        change(f, config)
        f.attrs["model_config"] = json.dumps(config).encode()
    return destination


def test_what_keras_3_cannot_run_is_refused_naming_the_file(eras, tmp_path):
    def time_major(f, config):
        config["config"]["layers"][1]["config"]["time_major"] = True

    path = _with_config(eras / "tfkeras_slash_unrolled.h5", tmp_path / "time_major.h5", time_major)
    with pytest.raises(UnsupportedModelError, match=rf"^{path}: layer 'encoder/lstm' \(LSTM\) is time_major=True"):
        rnnexport.inspect(path)

    def keras1(f, config):
        f.attrs["keras_version"] = b"1.2.2"

    path = _with_config(eras / "keras208_sequential.h5", tmp_path / "keras1.h5", keras1)
    with pytest.raises(UnsupportedModelError, match=rf"^{path}: written by Keras 1.2.2"):
        rnnexport.inspect(path)


def _conv_lstm(path):
    i = keras.Input((None, 3), name="x")
    x = keras.layers.Conv1D(4, 5, padding="valid", name="conv1d")(i)
    x = keras.layers.Conv1D(4, 3, dilation_rate=2, padding="valid", name="dilated")(x)
    keras.Model(i, keras.layers.LSTM(5, name="lstm")(x)).save(path)
    return path


def test_keras3_model_with_a_minimum_length_is_swept_from_there(tmp_path):
    path = _conv_lstm(tmp_path / "conv_lstm.keras")
    info = rnnexport.inspect(path)
    assert info.min_length == 9
    assert ("shortest length 9 (conv1d: kernel 5, valid padding; dilated: kernel 3, dilation 2, valid padding): "
            "the sweep starts there") in info.notes
    result = rnnexport.convert(path, tmp_path / "default", ConvertOptions(validation=UNTIMED))
    assert result.report.passed, result.report.failures()
    assert {c.case.length for c in export_result(result, "savedmodel").checked} == {9, 10, 32, 128}
    asked = rnnexport.convert(path, tmp_path / "asked", ConvertOptions(force=True, validation=ValidateOptions(
        sweep=SweepOptions(lengths=(2, 12), batches=(2,)), latency_repeats=0)))
    export = export_result(asked, "savedmodel")
    assert asked.report.passed and [c.case.length for c in export.checked] == [12]
    assert [c.skipped for c in export.skipped] == ["the source needs at least 9 steps, this case has 2"] * 2


def test_lambda_refusal_names_the_file(tmp_path):
    i = keras.Input((None, 3), name="x")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(i)
    path = tmp_path / "lam.keras"
    keras.Model(i, keras.layers.GRU(4)(x)).save(path)
    with pytest.raises(UnsupportedModelError, match=rf"^{path}: layer 'double' is a Lambda layer"):
        rnnexport.inspect(path)


def test_old_spellings_become_what_keras_3_builds():
    """Spellings no fixture above carries, straight from the configs Keras 1 and tf.keras wrote."""
    from rnnexport_converters.keras import keras2

    config = {"class_name": "Model", "config": {"name": "m", "layers": [
        {"name": "in", "class_name": "InputLayer", "inbound_nodes": [],
         "config": {"name": "in", "batch_input_shape": [None, None, 3], "input_dtype": "float32", "sparse": False}},
        {"name": "act", "class_name": "LeakyReLU", "inbound_nodes": [[["in", 0, 0, {}]]],
         "config": {"name": "act", "alpha": 0.3, "dtype": {"class_name": "Policy", "config": {"name": "float32"}}}},
        {"name": "bn", "class_name": "BatchNormalization", "inbound_nodes": [[["act", 0, 0, {}]]],
         "config": {"name": "bn", "axis": [2], "fused": True, "gamma_regularizer": ["l2", 0.1]}},
    ], "input_layers": [["in", 0, 0]], "output_layers": [["bn", 0, 0]]}}
    layers = keras2.upgrade(config).config["config"]["layers"]
    assert [entry["config"] for entry in layers] == [
        {"name": "in", "sparse": False, "dtype": "float32", "batch_shape": [None, None, 3]},
        {"name": "act", "dtype": "float32", "negative_slope": 0.3},
        {"name": "bn", "axis": 2},
    ]
    wrapped = {"class_name": "Bidirectional", "config": {"name": "bi", "layer": {
        "class_name": "LSTM", "config": {"name": "lstm", "units": 2, "batch_input_shape": [None, 7, 3]}}}}
    first = keras2.upgrade({"class_name": "Sequential", "config": [wrapped]}).config["config"]["layers"][0]
    assert first["config"]["batch_shape"] == [None, 7, 3]
    with pytest.raises(UnsupportedModelError, match=r"declares no input shape \(layer 'dense' has none\)"):
        keras2.upgrade({"class_name": "Sequential", "config": [{"class_name": "Dense", "config": {"name": "dense"}}]})
