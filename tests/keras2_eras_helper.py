"""Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process.

    write DIR    write the Keras 2 `.h5` fixtures of every era into DIR, each with `<name>.npz`
                 holding inputs `x` and what tf-keras itself predicts on them from the file (`y0`, ...)

tf-keras 2.21 writes the tf.keras 2.15 layout. Older layouts cannot be written by the Keras that
wrote them here (Keras 2.0-2.3 need TensorFlow 1 and Python <= 3.8), so those files are written by
tf-keras and their `model_config` rewritten to the layout the named Keras version wrote, as read
in its sources (keras-team/keras at that tag): `keras/models.py` and `keras/engine/topology.py`
for 2.0.8, `keras/engine/sequential.py` and `keras/engine/network.py` for 2.2.5, and
`keras/layers/recurrent.py` of both. tf-keras then loads the rewritten file back and predicts.
"""

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

keras = tf.keras
layers = keras.layers


class Keras2GRU(layers.GRU):
    """A GRU config without `reset_after` (before Keras 2.1.3) computed reset_after=False."""

    def __init__(self, *args, reset_after=False, **kwargs):
        super().__init__(*args, reset_after=reset_after, **kwargs)


class Scale(layers.Layer):
    """A custom layer: multiplies each feature by a learned factor."""

    def build(self, input_shape):
        self.factor = self.add_weight(name="factor", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.factor


# Keys a config of that Keras version did not have yet, per layer class (None: every class).
ABSENT = {
    "2.0.8": {None: ("ragged", "optional", "time_major", "zero_output_for_mask", "groups", "data_format",
                     "keepdims"), "GRU": ("reset_after",)},
    "2.2.5": {None: ("ragged", "optional", "time_major", "zero_output_for_mask", "groups", "keepdims")},
}
ABSENT["2.2.4-tf"] = ABSENT["2.2.5"]


def _strip(value, era):
    """Keras before tf.keras 2.13 wrote `{class_name, config}` objects without module keys."""
    if isinstance(value, dict):
        return {k: _strip(v, era) for k, v in value.items() if k not in ("module", "registered_name")}
    if isinstance(value, list):
        return [_strip(v, era) for v in value]
    return value


def _old_layer(entry, era):
    cfg = entry["config"]
    for key in ABSENT[era].get(None, ()) + ABSENT[era].get(entry["class_name"], ()):
        cfg.pop(key, None)
    if entry["class_name"] == "BatchNormalization" and isinstance(cfg.get("axis"), list):
        cfg["axis"] = -1  # Keras 2 kept the axis as given, -1 by default
    for key in ("layer", "backward_layer"):
        if isinstance(cfg.get(key), dict):
            _old_layer(cfg[key], era)


def as_era(model_config, era, string_initializers=False):
    """The config as Keras `era` wrote it: a Sequential as a bare list (2.0.8) or `{name, layers}`
    (2.2.5), without the InputLayer entry; a functional model as class `Model`."""
    config = _strip(model_config, era)
    inner = config["config"]
    for entry in inner["layers"]:
        _old_layer(entry, era)
        if string_initializers:
            for key in list(entry["config"]):
                if key.endswith("_initializer"):
                    entry["config"][key] = "glorot_uniform" if "kernel" in key else "zeros"
    if config["class_name"] == "Sequential":
        body = [e for e in inner["layers"] if e["class_name"] != "InputLayer"]
        config["config"] = body if era == "2.0.8" else {"name": inner["name"], "layers": body}
    else:
        config["class_name"] = "Model"
        inner.pop("trainable", None)
    return config


def rewrite(path, era, **kwargs):
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = json.dumps(as_era(config, era, **kwargs)).encode()
        f.attrs["keras_version"] = era.encode()


def record(path, x):
    """What tf-keras computes from the file as written (rewritten files included)."""
    model = keras.models.load_model(path, compile=False, custom_objects={"GRU": Keras2GRU, "Scale": Scale})
    outputs = model(x, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    np.savez(path.with_suffix(".npz"), x=x, **{f"y{i}": np.asarray(o) for i, o in enumerate(outputs)})


def tokens(rng, vocab, length):
    return rng.integers(1, vocab, size=(3, length)).astype("float32")


def write(out):
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)

    # Keras 2.0.8: a bare list, the input shape on the Embedding (input_dim, input_length,
    # batch_input_shape), a GRU before reset_after with hard_sigmoid, string initializers.
    model = keras.Sequential([
        layers.Embedding(30, 8, input_length=12, name="embedding_1"),
        layers.GRU(8, return_sequences=True, recurrent_activation="hard_sigmoid", reset_after=False,
                   implementation=1, name="gru_1"),
        layers.Dense(6, activation="relu", name="dense_1"),
        layers.Dropout(0.1, name="dropout_1"),
        layers.Dense(4, activation="softmax", name="dense_2"),
    ])
    model.save(out / "keras208_sequential.h5")
    rewrite(out / "keras208_sequential.h5", "2.0.8", string_initializers=True)
    record(out / "keras208_sequential.h5", tokens(rng, 30, 12))

    # Keras 2.2.5: {name, layers}, the input shape on a Conv1D of kernel 5 with valid padding.
    model = keras.Sequential([
        layers.Conv1D(6, 5, padding="valid", activation="relu", input_shape=(20, 3), name="conv1d_1"),
        layers.MaxPooling1D(2, name="max_pooling1d_1"),
        layers.BatchNormalization(name="batch_normalization_1"),
        layers.LSTM(6, name="lstm_1"),
        layers.Dense(2, name="dense_1"),
    ])
    _moved_statistics(model)
    model.save(out / "keras225_conv_sequential.h5")
    rewrite(out / "keras225_conv_sequential.h5", "2.2.5")
    record(out / "keras225_conv_sequential.h5", rng.standard_normal((3, 20, 3)).astype("float32"))

    # Keras 2.2.5 functional (class Model): stacked BiLSTMs with BatchNormalization, every merge mode.
    inputs = keras.Input((10, 4), name="frames")
    x = layers.Bidirectional(layers.LSTM(5, return_sequences=True), merge_mode="concat", name="bi_concat")(inputs)
    x = layers.BatchNormalization(name="bn_1")(x)
    x = layers.Bidirectional(layers.LSTM(5, return_sequences=True), merge_mode="sum", name="bi_sum")(x)
    x = layers.BatchNormalization(name="bn_2")(x)
    x = layers.Bidirectional(layers.GRU(4, return_sequences=True, reset_after=False), merge_mode="mul",
                             name="bi_mul")(x)
    x = layers.Bidirectional(layers.GRU(4, return_sequences=True), merge_mode="ave", name="bi_ave")(x)
    forward, backward = layers.Bidirectional(layers.LSTM(3), merge_mode=None, name="bi_none")(x)
    outputs = layers.Dense(2, name="label")(layers.Concatenate(name="joined")([forward, backward]))
    model = keras.Model(inputs, outputs)
    _moved_statistics(model)
    model.save(out / "keras225_bidirectional.h5")
    rewrite(out / "keras225_bidirectional.h5", "2.2.5")
    record(out / "keras225_bidirectional.h5", rng.standard_normal((3, 10, 4)).astype("float32"))

    # Every supported layer kind, as tf.keras 2.15 and as Keras 2.2.5 wrote it.
    model = every_layer_kind()
    _moved_statistics(model)
    x = rng.standard_normal((3, 9, 4)).astype("float32")
    for name, era in (("tfkeras_every_layer", None), ("keras225_every_layer", "2.2.5")):
        model.save(out / f"{name}.h5")
        if era:
            rewrite(out / f"{name}.h5", era)
        record(out / f"{name}.h5", x)

    # tf.keras 2.15 layout as tf-keras writes it: '/' in names, unroll=True at a fixed length.
    inputs = keras.Input((8, 3), name="features/frames")
    x = layers.LSTM(6, return_sequences=True, unroll=True, name="encoder/lstm")(inputs)
    x = layers.Masking(name="encoder/pass")(x)
    outputs = layers.TimeDistributed(layers.Dense(2), name="decoder/scores")(x)
    keras.Model(inputs, outputs).save(out / "tfkeras_slash_unrolled.h5")
    record(out / "tfkeras_slash_unrolled.h5", rng.standard_normal((3, 8, 3)).astype("float32"))

    # A custom layer, as tf.keras 2.15 writes it.
    inputs = keras.Input((None, 3), name="x")
    x = Scale(name="attn")(inputs)
    outputs = layers.LSTM(4, return_sequences=True, name="lstm")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("attn").set_weights([np.array([0.5, -2.0, 3.0], "float32")])
    model.save(out / "custom_layer.h5")
    record(out / "custom_layer.h5", rng.standard_normal((3, 9, 3)).astype("float32"))

    # tf.keras 1.x (2.2.4-tf): cuDNN-only layers. tf-keras cannot run them on a CPU, but reads their
    # weights into the LSTM and GRU they compute (its preprocess_weights_for_loading): that is its reading.
    cudnn = tf.compat.v1.keras.layers
    inputs = keras.Input((None, 3), name="x")
    x = layers.Bidirectional(cudnn.CuDNNLSTM(4, return_sequences=True), name="bilstm")(inputs)
    x = cudnn.CuDNNGRU(5, return_sequences=True, name="gru")(x)
    model = keras.Model(inputs, layers.Dense(2, name="out")(x))
    for layer in model.layers[1:3]:
        layer.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.5 for w in layer.get_weights()])
    model.save(out / "tfkeras1_cudnn.h5")
    rewrite(out / "tfkeras1_cudnn.h5", "2.2.4-tf")
    inputs = keras.Input((None, 3), name="x")
    x = layers.Bidirectional(layers.LSTM(4, return_sequences=True), name="bilstm")(inputs)
    x = layers.GRU(5, return_sequences=True, reset_after=True, name="gru")(x)
    plain = keras.Model(inputs, layers.Dense(2, name="out")(x))
    plain.load_weights(out / "tfkeras1_cudnn.h5")
    x = rng.standard_normal((3, 11, 3)).astype("float32")
    np.savez(out / "tfkeras1_cudnn.npz", x=x, y0=np.asarray(plain(x)))

    # Weights without their config: the JSON beside them, by two naming conventions.
    model = keras.Sequential([layers.GRU(5, return_sequences=True, input_shape=(None, 3), name="gru"),
                              layers.Dense(2, name="dense")], name="split")
    for folder, weights, architecture in (("json_beside", "model.h5", "model.json"),
                                          ("architecture_beside", "model_weights.h5", "model_architecture.json")):
        (out / folder).mkdir()
        model.save_weights(out / folder / weights)
        (out / folder / architecture).write_text(model.to_json())
    x = rng.standard_normal((3, 7, 3)).astype("float32")
    np.savez(out / "json_beside" / "model.npz", x=x, y0=np.asarray(model(x)))


def every_layer_kind():
    """Every layer kind the Keras source supports, with arguments away from their defaults."""
    i = keras.Input((None, 4), name="x")
    a = layers.Conv1D(6, 3, padding="causal", dilation_rate=2, activation="elu", name="conv")(i)
    a = layers.MaxPooling1D(2, strides=1, padding="same", name="maxpool")(a)
    a = layers.AveragePooling1D(3, strides=1, padding="same", name="avgpool")(a)
    a = layers.LayerNormalization(name="ln")(a)
    a = layers.BatchNormalization(center=False, name="bn")(a)
    a = layers.SpatialDropout1D(0.2, name="sdrop")(a)
    a = layers.GaussianNoise(0.1, name="noise")(a)
    a = layers.GaussianDropout(0.1, name="gdrop")(a)
    a = layers.AlphaDropout(0.1, name="adrop")(a)
    a = layers.ActivityRegularization(l1=0.01, name="actreg")(a)
    b = layers.Dense(6, kernel_regularizer=keras.regularizers.l2(0.01), kernel_constraint=keras.constraints.MaxNorm(2),
                     name="dense")(i)
    b = layers.ReLU(max_value=6.0, negative_slope=0.1, name="relu")(b)
    merged = layers.Add(name="add")([a, layers.LeakyReLU(alpha=0.2, name="leaky")(b)])
    merged = layers.Subtract(name="sub")([merged, layers.PReLU(shared_axes=[1], name="prelu")(b)])
    merged = layers.Multiply(name="mul")([merged, layers.ELU(alpha=0.5, name="elu")(b)])
    merged = layers.Average(name="avg")([merged, layers.Softmax(axis=-1, name="softmax")(b)])
    merged = layers.Maximum(name="max")([merged, a])
    merged = layers.Minimum(name="min")([merged, b])
    merged = layers.Concatenate(axis=-1, name="cat")([merged, a])
    x = layers.Activation("hard_sigmoid", name="act")(merged)
    x = layers.Masking(mask_value=0.0, name="mask")(x)
    x = layers.SimpleRNN(5, return_sequences=True, activation="relu", name="srnn")(x)
    x = layers.Bidirectional(layers.GRU(3, return_sequences=True), name="bigru")(x)
    x = layers.LSTM(4, return_sequences=True, go_backwards=True, name="lstm_back")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(i, layers.Dense(2, activation="softmax", name="out")(x))


def _moved_statistics(model):
    """BatchNormalization weights away from (1, 0, 0, 1), so that one read wrongly shows; positive,
    as a variance must be."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in layer.get_weights()])


if __name__ == "__main__":
    write(Path(sys.argv[2]))
