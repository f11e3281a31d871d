"""Where an int8 LSTM loses precision: a numpy replica of ML-KWS LSTM_S's cell (TF1 `LSTMCell`,
peepholes, projection, no clip) with chosen tensors rounded to int8 (or int16) at the range they
take on the calibration half, judged on the other half against the float replica.

    .venv/bin/python benchmarks/int8_cell_state.py [--samples 300]

The inputs are those of `benchmarks/quantized.py` (the model's own MFCC ops on synthetic clips).
Each row rounds the named tensors only (asymmetric, as TFLite's activations): the cell state `c`
read and `c_new` written, the gates' pre-activations, the peephole-gate inputs, `m = o * tanh(c)`,
the projected hidden state `h`. The integer LSTM kernel keeps `c` in int16; the loop form had it
in int8.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from quantized import MODELS_DIR, mfcc_inputs  # noqa: E402

TENSORS = ("h", "c", "gates", "i_pre", "f_pre", "c_new", "o_pre", "m", "h_new")
ROWS = {
    "every tensor int8 (the loop form)": {name: 8 for name in TENSORS},
    **{f"only {name} int8": {name: 8} for name in TENSORS},
    "every tensor int8, c and c_new int16 (the kernel's split)": {**{name: 8 for name in TENSORS}, "c": 16, "c_new": 16},
}


def weights(model):
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(model.read_bytes())
    found = {n.name: tensor_util.MakeNdarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}
    cell = "lstm/rnn/lstm_cell/"
    return graph_def, {"kernel": found[cell + "kernel"], "bias": found[cell + "bias"], "w_i": found[cell + "w_i_diag"],
                       "w_f": found[cell + "w_f_diag"], "w_o": found[cell + "w_o_diag"],
                       "projection": found[cell + "projection/kernel"], "W_o": found["W_o"],
                       "b_o": found["b_o"]}


def run(w, x, bits=None, ranges=None, record=None):
    """The replica's softmax over `x` [batch, time, 10], the `bits` tensors rounded at `ranges`."""
    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    def q(name, v):
        if record is not None:
            record.setdefault(name, []).append(v)
        if not bits or name not in bits:
            return v
        low, high = min(ranges[name][0], 0.0), max(ranges[name][1], 0.0)
        scale = (high - low) / (2 ** bits[name] - 1)
        return np.clip(np.round((v - low) / scale), 0, 2 ** bits[name] - 1) * scale + low

    h = np.zeros((x.shape[0], w["projection"].shape[1]))
    c = np.zeros((x.shape[0], w["projection"].shape[0]))
    for t in range(x.shape[1]):
        h, c = q("h", h), q("c", c)
        i, j, f, o = np.split(q("gates", np.concatenate([x[:, t], h], 1) @ w["kernel"] + w["bias"]), 4, 1)
        # TF1 LSTMCell: forget_bias 1 added to f; peepholes read the previous c (i, f) and the new c (o).
        c = q("c_new", sigmoid(q("f_pre", f + 1.0 + w["w_f"] * c)) * c + sigmoid(q("i_pre", i + w["w_i"] * c)) * np.tanh(j))
        m = q("m", sigmoid(q("o_pre", o + w["w_o"] * c)) * np.tanh(c))
        h = q("h_new", m @ w["projection"])
    logits = h @ w["W_o"] + w["b_o"]
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()

    import tensorflow as tf

    model = MODELS_DIR / "LSTM_S.pb"
    graph_def, w = weights(model)
    features = mfcc_inputs(model, args.samples, seed=0)
    half = args.samples // 2
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        truth = np.concatenate([session.run("labels_softmax:0", {"Mfcc:0": features[k:k + 1]})
                                for k in range(half, args.samples)])
    recorded: dict[str, list[np.ndarray]] = {}
    run(w, features[:half], record=recorded)
    ranges = {name: (float(np.min(v)), float(np.max(v))) for name, v in recorded.items()}
    reference = run(w, features[half:])
    top = np.sort(reference, 1)
    clear = top[:, -1] - top[:, -2] >= 0.2
    print(f"replica against the graph: max abs {np.abs(reference - truth).max():.1e}; calibrated ranges: "
          f"c_new {ranges['c_new'][0]:.1f} to {ranges['c_new'][1]:.1f}, h_new {ranges['h_new'][0]:.2f} to "
          f"{ranges['h_new'][1]:.2f}")
    print(f"{'rounded':58} {'SNR dB':>7} {'top-1':>7} {'clear':>7}")
    for label, bits in ROWS.items():
        got = run(w, features[half:], bits, ranges)
        snr = 10 * np.log10(np.mean(reference ** 2) / np.mean((got - reference) ** 2))
        agree = got.argmax(1) == reference.argmax(1)
        print(f"{label:58} {snr:7.1f} {agree.mean():7.1%} {agree[clear].mean():7.1%}")


if __name__ == "__main__":
    main()
