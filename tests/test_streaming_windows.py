"""Causal windows stream: convolutions and pooling before a recurrent layer carry their last input
steps as explicit state in every format, match Keras on the whole sequence chunk by chunk, and
say what each state holds; layers that look ahead are refused naming the layer."""

import json
import re

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import rnnexport
from rnnexport.cli import cli
from rnnexport.errors import UnsupportedModelError
from rnnexport.options import ConvertOptions, ExportOptions, SweepOptions, ValidateOptions

CHUNKS = (1, 2, 5, 17)
STREAMING = ConvertOptions(targets=("all",), export=ExportOptions(streaming=True),
                           validation=ValidateOptions(sweep=SweepOptions(lengths=(3,), batches=(2,), chunks=CHUNKS),
                                                      latency_repeats=0))
# Every windowed kind, stacked: causal convolutions of kernel 2, 3 and 5 at dilation 1 and 2, left
# padding before a valid convolution of kernel 5 (through a per-step layer), before max pooling of
# 3 and average pooling of 2 steps, then an LSTM (whose TFLite kernel would keep state between calls
# if a step file used it).
HOLDS = {
    "k2_window": "k2 window, 1 step x 3 channels",
    "k3d2_window": "k3d2 window, 4 steps x 6 channels",
    "k5_window": "k5 window, 4 steps x 6 channels",
    "k5d2_window": "k5d2 window, 8 steps x 6 channels",
    "pad_window": "pad window, 4 steps x 6 channels",
    "pad_max_window": "pad_max window, 2 steps x 6 channels",
    "pad_avg_window": "pad_avg window, 1 step x 6 channels",
    "lstm_h": "lstm h",
    "lstm_c": "lstm c",
}


def windows_model():
    keras.utils.set_random_seed(4)
    layers = keras.layers
    inputs = keras.Input((None, 3), name="features")
    x = inputs
    for name, kernel, dilation in (("k2", 2, 1), ("k3d2", 3, 2), ("k5", 5, 1), ("k5d2", 5, 2)):
        x = layers.Conv1D(6, kernel, padding="causal", dilation_rate=dilation, activation="tanh", name=name)(x)
    x = layers.ZeroPadding1D((4, 0), name="pad")(x)
    x = layers.Dense(6, name="per_step")(x)
    x = layers.Conv1D(6, 5, padding="valid", name="valid")(x)
    x = layers.ZeroPadding1D((2, 0), name="pad_max")(x)
    x = layers.MaxPooling1D(3, strides=1, name="max")(x)
    x = layers.ZeroPadding1D((1, 0), name="pad_avg")(x)
    x = layers.AveragePooling1D(2, strides=1, name="avg")(x)
    x = layers.LSTM(8, return_sequences=True, name="lstm")(x)
    return keras.Model(inputs, layers.Dense(3, name="scores")(x), name="windows")


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    out = tmp_path_factory.mktemp("windows")
    return out, rnnexport.convert(windows_model(), out, STREAMING)


def test_every_window_kind_streams_in_every_format_at_every_chunk(streamed):
    _, result = streamed
    assert result.passed, result.report.failures()
    assert sorted(e.target for e in result.report.exports) == ["onnx", "savedmodel", "tflite"]
    for export in result.report.exports:
        assert sorted(export.details["streaming_states"]) == sorted(HOLDS)
        chunked = [c for c in export.checked if c.case.chunk is not None]
        assert sorted((c.case.chunk, c.case.batch) for c in chunked) == [(k, 2) for k in CHUNKS]
        for case in chunked:
            outputs = {o.name: o for o in case.outputs}
            assert {"scores", *(f"{s}_next" for s in HOLDS)} <= outputs.keys()
            worst = max(o.max_abs for o in case.outputs)
            assert case and np.isfinite(worst) and worst < 1e-5, (export.target, case.case.name, worst)


@pytest.mark.parametrize("suffix", [".onnx", ".tflite", ".savedmodel"])
def test_inspect_on_a_streaming_export_lists_each_state_and_what_it_holds(streamed, suffix):
    out, _ = streamed
    shown = CliRunner().invoke(cli, ["inspect", str(out / f"windows{suffix}")])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith(f"{out / f'windows{suffix}'}: {suffix[1:]} export of ")
    # Entry points and states as tables: a row per tensor, a row per state.
    assert lines[1].split()[:2] == ["entry", "point"] and set(lines[2]) == {" ", "-"}
    assert lines[3].split()[0] == ("sequence" if suffix == ".onnx" else "serving_default")
    assert any(line.endswith("input   features float32[batch, time, 3]") for line in lines)
    step = next(i for i, line in enumerate(lines) if line.startswith("step "))
    step_rows = lines[step:next(i for i, line in enumerate(lines) if i > step and not line.startswith((" ", "step ")))]
    assert any(line.endswith("output  k3d2_window_next float32[batch, 4, 6]") for line in step_rows), step_rows
    assert any(line.endswith("output  scores float32[batch, time, 3]") for line in step_rows), step_rows
    assert any(line.startswith("batch: any") for line in lines)
    assert any(re.match(r"parity: PASS, (\d+)/\1 cases passed", line) for line in lines), lines
    assert any(re.fullmatch(r"  k5d2_window +\[8, 6\] +k5d2 window, 8 steps x 6 channels", line) for line in lines)
    assert any(re.fullmatch(r"  lstm_c +\[8\] +lstm c", line) for line in lines), lines
    described = json.loads(CliRunner().invoke(cli, ["inspect", "--json", str(out / f"windows{suffix}")]).output)
    assert {s["name"]: s["holds"] for s in described["states"]} == HOLDS
    assert described["parity"]["passed"] is True


def _savedmodel_step(path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path / "windows.savedmodel"))
    step, initial = loaded.signatures["step"], loaded.signatures["initial_state"]
    return (lambda inputs: {k: v.numpy() for k, v in step(**inputs).items()},
            {k: v.numpy() for k, v in initial(batch=tf.constant(2)).items()})


def _onnx_step(path):
    import onnxruntime as ort

    step = ort.InferenceSession(str(path / "windows.step.onnx"))
    initial = ort.InferenceSession(str(path / "windows.initial_state.onnx"))
    names = [o.name for o in step.get_outputs()]
    start = dict(zip([o.name for o in initial.get_outputs()], initial.run(None, {"batch": np.array(2, np.int32)})))
    return lambda inputs: dict(zip(names, step.run(None, inputs))), start


def _tflite_step(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path / "windows.step.tflite"))
    step = interpreter.get_signature_runner("step")
    start = interpreter.get_signature_runner("initial_state")(batch=np.array(2, np.int32))
    return lambda inputs: step(**inputs), start


@pytest.mark.parametrize("opener", [_savedmodel_step, _onnx_step, _tflite_step], ids=["savedmodel", "onnx", "tflite"])
def test_a_step_file_takes_its_state_only_from_its_inputs(streamed, opener):
    """One step file, one session, called with two different explicit states: each answer is the
    one Keras gives on the whole sequence that state stands for."""
    out, _ = streamed
    model = windows_model()
    x = np.random.default_rng(9).standard_normal((2, 20, 3)).astype(np.float32)
    step, start = opener(out)
    states = sorted(start)
    assert states == sorted(HOLDS)
    state = start
    for begin in range(0, 13, 5):  # the first 13 steps in chunks of 5, 5, 3
        after = step({"features": x[:, begin:min(begin + 5, 13)], **state})
        state = {name: after[name + "_next"] for name in states}
    continued = step({"features": x[:, 13:], **state})["scores"]
    fresh = step({"features": x[:, 13:], **start})["scores"]
    again = step({"features": x[:, 13:], **state})["scores"]
    whole, tail = np.asarray(model(x)), np.asarray(model(x[:, 13:]))
    assert np.abs(continued - whole[:, 13:]).max() < 1e-5
    assert np.abs(fresh - tail).max() < 1e-5
    assert np.abs(again - continued).max() < 1e-6
    assert np.abs(continued - fresh).max() > 1e-2


def _stack(*make):
    inputs = keras.Input((None, 4), name="x")
    x = inputs
    for layer in make:
        x = layer(x)
    return keras.Model(inputs, keras.layers.GRU(4, name="gru")(x))


LOOK_AHEAD = {
    "same": ((lambda: keras.layers.Conv1D(4, 3, padding="same", name="conv"),),
             r"layer 'conv' \(Conv1D, padding='same'\) reads 1 step after the one it outputs"),
    "valid": ((lambda: keras.layers.Conv1D(4, 3, padding="valid", name="conv"),),
              r"layer 'conv' \(Conv1D, padding='valid'\) reads 2 steps after the one it outputs, which a chunk does "
              r"not have yet; left-pad it with ZeroPadding1D\(\(2, 0\)\)"),
    "too_little_padding": ((lambda: keras.layers.ZeroPadding1D((1, 0), name="pad"),
                            lambda: keras.layers.Conv1D(4, 4, dilation_rate=1, name="conv")),
                           r"layer 'conv' \(Conv1D, padding='valid'\) reads 2 steps after the one it outputs"),
    "strided_pooling": ((lambda: keras.layers.MaxPooling1D(2, name="pool"),),
                        r"layer 'pool' \(MaxPooling1D, strides=2\) keeps one step in 2"),
    "same_pooling": ((lambda: keras.layers.AveragePooling1D(3, strides=1, padding="same", name="pool"),),
                     r"layer 'pool' \(AveragePooling1D, padding='same'\) reads 1 step after"),
    "strided_causal": ((lambda: keras.layers.Conv1D(4, 3, strides=2, padding="causal", name="conv"),),
                       r"layer 'conv' \(Conv1D, strides=2\) keeps one step in 2"),
    "right_padding": ((lambda: keras.layers.ZeroPadding1D((0, 2), name="pad"),),
                      r"layer 'pad' \(ZeroPadding1D\) adds 2 steps after the sequence's end"),
    "padding_into_the_recurrence": ((lambda: keras.layers.ZeroPadding1D((2, 0), name="pad"),),
                                    r"layer 'gru' \(GRU\) would read the 2 steps of zeros that padding adds"),
}


@pytest.mark.parametrize("kind", LOOK_AHEAD)
def test_a_layer_that_looks_ahead_is_refused_naming_it(kind, tmp_path):
    make, refused = LOOK_AHEAD[kind]
    model = _stack(*(m() for m in make))
    with pytest.raises(UnsupportedModelError, match=r"cannot stream: " + refused):
        rnnexport.convert(model, tmp_path, STREAMING)
    assert not any(tmp_path.iterdir())
