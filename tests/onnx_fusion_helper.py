"""Writes TF1 Saver checkpoints of `LSTMCell`s whose ONNX export is judged cell by cell: with
peepholes (ONNX's `P` input), with `cell_clip` (ONNX's `clip` is another function) and with a
projection (no ONNX equivalent). Each graph reads `x` [batch, any length, 5] through
`dynamic_rnn` and returns every step's output as `y`, so the graph is ground truth at any length.

Runs under tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, never inside the test process:

    write DIR    checkpoints DIR/NAME/model.ckpt, one per entry of CELLS
"""

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
FEATURES, UNITS = 5, 8
CELLS = {
    "peepholes": {"use_peepholes": True, "forget_bias": 0.7},
    "peepholes_clipped": {"use_peepholes": True, "cell_clip": 0.6},
    "projected": {"num_proj": 4},
}


def write(out: Path, name: str) -> None:
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(3)
        x = v1.placeholder(tf.float32, [None, None, FEATURES], name="x")
        cell = v1.nn.rnn_cell.LSTMCell(UNITS, initializer=v1.random_normal_initializer(0, 0.6), **CELLS[name])
        outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
        tf.identity(outputs, name="y")
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            # Peephole weights start at zero; give them values so that leaving them out shows.
            for variable in v1.global_variables():
                if "_diag" in variable.name:
                    variable.load(np.linspace(-0.8, 0.8, UNITS).astype(np.float32), session)
            (out / name).mkdir(parents=True, exist_ok=True)
            v1.train.Saver().save(session, str(out / name / "model.ckpt"))


if __name__ == "__main__":
    v1.disable_v2_behavior()
    for fixture in CELLS:
        write(Path(sys.argv[2]), fixture)
