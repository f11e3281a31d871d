"""Median latency of a 256-unit LSTM over 128 features: TensorFlow source versus exports.

TFLite files have a fixed batch (1 here), so the TFLite column is filled at batch 1 only.

    .venv/bin/python benchmarks/latency.py [--repeats 15]

Exports with rnnexport (parity checked at the benchmarked shapes), then times each runtime on
the same inputs after a warm-up call, on this machine's CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

LENGTHS = (16, 128, 1024)
BATCHES = (1, 32)


def median_ms(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    import keras
    import onnxruntime as ort
    import tensorflow as tf

    import rnnexport
    from rnnexport_converters.tflite.runtime import TfliteRunner
    from rnnexport import ConvertOptions, SweepOptions, ValidateOptions

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 128), name="features")
    model = keras.Model(inputs, keras.layers.LSTM(256, return_sequences=True, name="lstm")(inputs), name="lstm256")
    out = Path(tempfile.mkdtemp(prefix="rnnexport-bench-"))
    options = ConvertOptions(targets=("savedmodel", "onnx", "tflite"), validation=ValidateOptions(
        sweep=SweepOptions(lengths=LENGTHS, batches=BATCHES)))
    result = rnnexport.convert(model, out, options)
    paths = {a.target: a.path for a in result.artifacts}
    errors = {e.target: e.max_abs for e in result.report.exports}

    source = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    details = {e.target: e.details for e in result.report.exports}
    tflite = TfliteRunner(paths["tflite"])

    print(f"LSTM(256) over 128 features, CPU x{os.cpu_count()}, median of {args.repeats} runs, milliseconds")
    print("parity max abs err over this sweep: "
          + ", ".join(f"{target} {error:.2e}" for target, error in errors.items())
          + f" ({'PASS' if result.report.passed else 'FAIL'})")
    print(f"recurrent ops: ONNX {details['onnx']['recurrent_ops']}, TFLite {details['tflite']['recurrent_ops']}")
    header = (f"{'batch':>5} {'length':>6} {'TF source':>10} {'ONNX (ORT)':>11} {'TF / ONNX':>10}"
              f" {'TFLite':>9} {'TF / TFLite':>12}")
    print(header)
    print("-" * len(header))
    for batch in BATCHES:
        for length in LENGTHS:
            x = np.random.default_rng(length).standard_normal((batch, length, 128)).astype(np.float32)
            repeats = max(3, args.repeats // (4 if length * batch >= 8192 else 1))
            tf_ms = median_ms(lambda x=x: source(x).numpy(), repeats)
            onnx_ms = median_ms(lambda x=x: session.run(None, {"features": x}), repeats)
            row = f"{batch:>5} {length:>6} {tf_ms:>10.2f} {onnx_ms:>11.2f} {tf_ms / onnx_ms:>9.1f}x"
            if batch == 1:
                tflite_ms = median_ms(lambda x=x: tflite.run({"features": x}), repeats)
                row += f" {tflite_ms:>9.2f} {tf_ms / tflite_ms:>11.1f}x"
            print(row)


if __name__ == "__main__":
    main()
