"""Layers that move axes or slide over (time, frequency), judged by where they put the time axis:
Flatten after the last step, Flatten over every step, Conv2D and 2-D pooling with the three ways
back to one vector per step, a per-step Reshape spelled with the fixed length, and a model saved
under the mixed_float16 policy. The files are written by tf-keras (tests/keras_layers_helper.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import rnnexport
from rnnexport import ConvertOptions, SourceOptions, SweepOptions, ValidateOptions, plugins
from rnnexport.device import resolve_device
from rnnexport.errors import UnsupportedModelError

from conftest import TESTS, run_python


@keras.saving.register_keras_serializable(package="rnnexport_tests")
class Squeeze(keras.layers.Layer):
    """The Keras 3 class of the helper's custom layer: drops one axis of size 1."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        return keras.ops.squeeze(inputs, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


CUSTOM = SourceOptions(custom_objects=("test_keras_layers:Squeeze",))
EXPORTED = ("flatten_last_step", "conv_same", "conv_valid_pool", "reshape_fixed", "mixed_float16")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras_layers")
    run_python(TESTS / "keras_layers_helper.py", "write", str(out), legacy_keras=True)
    return out


@pytest.fixture(scope="module")
def converted(written, tmp_path_factory):
    """Every exportable fixture through the default lengths, at one batch size, in one run."""
    sweep = ValidateOptions(sweep=SweepOptions(batches=(2,)), latency_repeats=0)
    options = ConvertOptions(source=CUSTOM, validation=sweep)
    return rnnexport.convert([written / f"{name}.h5" for name in EXPORTED], tmp_path_factory.mktemp("out"), options)


@pytest.mark.parametrize("name, lengths", [
    ("flatten_last_step", {1, 2, 3, 6, 24}),
    ("conv_same", {1, 2, 7, 32, 128}),
    ("conv_valid_pool", {4, 5, 7, 32, 128}),
    ("reshape_fixed", {1, 2, 3, 6, 24}),
    ("mixed_float16", {1, 2, 7, 32, 128}),
])
def test_default_sweep_passes(converted, name, lengths):
    assert converted.report.passed, converted.report.failures()
    export = next(e for e in converted.report.exports if e.source.endswith(f"/{name}.h5"))
    assert {c.case.length for c in export.checked} == lengths
    assert not export.skipped
    assert export.max_abs < 1e-5


@pytest.mark.parametrize("name", ["flatten_last_step", "conv_same", "conv_valid_pool", "reshape_fixed"])
def test_our_reading_matches_tf_keras_on_the_original_file(written, name):
    path = written / f"{name}.h5"
    opened = plugins.find_source(path).open(path, CUSTOM)
    recorded = np.load(path.with_suffix(".npz"))
    spec = opened.info.inputs[0]
    ours = list(opened.reference(resolve_device("cpu")).run({spec.name: recorded["x"]}).values())
    assert len(ours) == len([key for key in recorded if key.startswith("y")])
    for index, value in enumerate(ours):
        np.testing.assert_allclose(value, recorded[f"y{index}"], atol=1e-5)


def test_mixed_float16_is_rebuilt_in_float32(written):
    path = written / "mixed_float16.h5"
    info = rnnexport.inspect(path)
    assert ("mixed-precision policy mixed_float16 on lstm, dense: rebuilt in float32, the precision of the saved "
            "weights") in info.notes
    assert [t.dtype for t in info.outputs] == ["float32"]
    opened = plugins.find_source(path).open(path, SourceOptions())
    assert {layer.dtype_policy.name for layer in opened.rebuilt().layers} == {"float32"}
    recorded = np.load(path.with_suffix(".npz"))
    ours = next(iter(opened.reference(resolve_device("cpu")).run({"x": recorded["x"]}).values()))
    # tf-keras computes the file in float16, the same layers in float32 give what we give.
    np.testing.assert_allclose(ours, recorded["float32"], atol=1e-5)
    assert np.abs(recorded["y0"] - recorded["float32"]).max() > 1e-4


def test_flatten_of_the_last_step_ties_nothing(written):
    info = rnnexport.inspect(written / "flatten_last_step.h5")
    assert info.exportable and info.fixed_length == 6
    assert [layer.kind for layer in info.layers] == ["LSTM", "Flatten", "Dense"]


def test_flatten_over_every_step_is_refused_naming_the_layer(written, tmp_path):
    path = written / "flatten_every_step.h5"
    problem = ("layer 'flatten' (Flatten) is not supported: it folds the time axis into the features of its input "
               "(None, 6, 5), so the model runs at length 6 only; rnnexport exports models that accept any length")
    assert rnnexport.inspect(path).problems == (problem,)
    with pytest.raises(UnsupportedModelError) as refused:
        rnnexport.convert(path, tmp_path)
    assert str(refused.value) == f"{path}: {problem}"


def test_conv2d_over_time_and_frequency(written):
    same = rnnexport.inspect(written / "conv_same.h5", CUSTOM)
    assert same.exportable and same.min_length == 1 and not same.causal
    assert [t.shape for t in same.inputs] == [(None, None, 8, 2)]
    assert [t.shape for t in same.outputs] == [(None, None, 2), (None, None, 3)]
    valid = rnnexport.inspect(written / "conv_valid_pool.h5")
    assert valid.min_length == 4
    assert ("shortest length 4 (conv_valid: kernel 3, valid padding; pool: pool 2, stride 2, valid padding): the "
            "sweep starts there") in valid.notes


def test_per_step_reshape_spelled_with_the_length_runs_at_any_length(written):
    info = rnnexport.inspect(written / "reshape_fixed.h5")
    assert info.causal and info.fixed_length == 6
    assert "reshape 'per_step' reshapes each step: rebuilt with target shape (-1, 12) for any length" in info.notes


def _keras3(path, moving):
    i = keras.Input((5, 4, 2), name="x")
    h = keras.layers.Conv2D(3, (3, 3), padding="same", name="conv")(i)
    for layer in moving:
        h = layer(h)
    keras.Model(i, keras.layers.GRU(2, name="gru")(h)).save(path)
    return path


@pytest.mark.parametrize("moving, problem", [
    ([keras.layers.Reshape((10, 6), name="halves")],
     "layer 'halves' (Reshape) is not supported: it reshapes the time axis of its input (None, 5, 4, 3), so the "
     "model runs at length 5 only"),
    ([keras.layers.Permute((2, 1, 3), name="swap"), keras.layers.Reshape((4, 15), name="per_step")],
     "layer 'swap' (Permute) is not supported: it moves the time axis (dims (2, 1, 3)) of its input (None, 5, 4, 3), "
     "so the model runs at length 5 only"),
    ([keras.layers.BatchNormalization(axis=1, name="bn_time"), keras.layers.Reshape((-1, 12), name="per_step")],
     "layer 'bn_time' (BatchNormalization) is not supported: it holds parameters per time step (it normalises over "
     "axis 1) of its input (None, 5, 4, 3), so the model runs at length 5 only"),
])
def test_layers_that_move_time_are_refused(tmp_path, moving, problem):
    info = rnnexport.inspect(_keras3(tmp_path / "moved.keras", moving))
    assert info.problems == (f"{problem}; rnnexport exports models that accept any length",)


def test_repeat_vector_output_has_as_many_steps_as_it_repeats(tmp_path):
    """An LSTM autoencoder: any input length is encoded, the decoder always runs the 5 repeated steps."""
    i = keras.Input((5, 3), name="x")
    h = keras.layers.RepeatVector(5, name="repeat")(keras.layers.LSTM(4, name="encoder")(i))
    h = keras.layers.LSTM(4, return_sequences=True, name="decoder")(h)
    keras.Model(i, keras.layers.TimeDistributed(keras.layers.Dense(3), name="out")(h)).save(tmp_path / "ae.keras")
    info = rnnexport.inspect(tmp_path / "ae.keras")
    assert info.exportable and info.fixed_length == 5
    assert [(t.shape, t.time_axis) for t in info.outputs] == [((None, 5, 3), None)]


def test_the_supplied_custom_class_wins_over_one_registered_under_its_name(written):
    """The rebuilt config names the class `rnnexport_tests>Squeeze`; another class registered under
    that name in the process since (another test module, a user's notebook) must not be used."""

    class Impostor(keras.layers.Layer):
        def call(self, inputs):
            return inputs

    keras.saving.register_keras_serializable(package="rnnexport_tests", name="Squeeze")(Impostor)
    try:
        path = written / "conv_same.h5"
        opened = plugins.find_source(path).open(path, CUSTOM)
        recorded = np.load(path.with_suffix(".npz"))
        tags, chords = opened.rebuilt()(recorded["x"], training=False)
        np.testing.assert_allclose(np.asarray(tags), recorded["y0"], atol=1e-5)
        np.testing.assert_allclose(np.asarray(chords), recorded["y1"], atol=1e-5)
    finally:
        keras.saving.register_keras_serializable(package="rnnexport_tests")(Squeeze)
