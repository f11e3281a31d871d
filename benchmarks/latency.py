"""Median latency of every recurrent layer kind: the TensorFlow source, ONNX Runtime on the ONNX
export and LiteRT on the TFLite export in both its forms (the default, with LiteRT's fused kernels
where they exist, and `--tflite-form loop`), side by side in one run, with the ratios to ONNX.

    .venv/bin/python benchmarks/latency.py [--repeats 9] [--kinds lstm,gru] [--lengths 100,1000]
                                           [--batches 1,16] [--units 256] [--features 128]

Each model (one layer of 256 units over 128 features returning its sequence, unless the kind says
`last`) is exported with rnnexport and its parity checked at the benchmarked shapes, then every
runtime is timed on the same inputs after a warm-up call, the runtimes taking turns call by call. ONNX Runtime and LiteRT run on one
thread each (on this shared 2-core machine more threads give noisier, not faster, numbers);
TensorFlow uses its defaults. Absolute times drift with the machine's load: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from onnx_forms import median_ms  # noqa: E402  (the runtimes taking turns call by call)

KINDS = ("lstm", "lstm-last", "gru", "gru-v1", "gru-last", "simple-rnn", "bi-lstm", "bi-gru")


def layer(kind: str, units: int):
    from keras import layers

    sequences = not kind.endswith("-last")
    if kind.startswith("lstm"):
        return layers.LSTM(units, return_sequences=sequences)
    if kind == "gru-v1":
        return layers.GRU(units, return_sequences=True, reset_after=False)
    if kind.startswith("gru"):
        return layers.GRU(units, return_sequences=sequences)
    if kind == "simple-rnn":
        return layers.SimpleRNN(units, return_sequences=True)
    inner = layers.LSTM if kind == "bi-lstm" else layers.GRU
    # Half the units per direction: the same output width as the one-direction kinds.
    return layers.Bidirectional(inner(units // 2, return_sequences=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--lengths", default="100,1000")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--features", type=int, default=128)
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds {', '.join(unknown)}; known: {', '.join(KINDS)}")
    lengths = tuple(int(v) for v in args.lengths.split(","))
    batches = tuple(int(v) for v in args.batches.split(","))

    import keras
    import onnxruntime as ort
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    import rnnexport
    from rnnexport import ConvertOptions, SweepOptions, ValidateOptions
    from rnnexport.options import ExportOptions

    out = Path(tempfile.mkdtemp(prefix="rnnexport-bench-"))
    print(f"{args.units} units over {args.features} features, CPU x{os.cpu_count()}, median of {args.repeats} "
          "runs, milliseconds; ORT and LiteRT on one thread each")
    header = (f"{'kind':<11} {'batch':>5} {'length':>6} {'TF':>8} {'ORT':>8} {'LiteRT':>8} {'LiteRT/ORT':>10}"
              f" {'loop':>8} {'loop/ORT':>9}  fused kernels (default form; 'same': no layer has one)")
    print(header)
    print("-" * (len(header) + 10))
    for kind in kinds:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((None, args.features), name="features")
        model = keras.Model(inputs, layer(kind, args.units)(inputs), name=kind.replace("-", "_"))
        sweep = ValidateOptions(sweep=SweepOptions(lengths=(1, 17, max(lengths)), batches=(1, 3)))
        result = rnnexport.convert(model, out, ConvertOptions(targets=("onnx", "tflite"), validation=sweep))
        looped = rnnexport.convert(model, out / "loop", ConvertOptions(
            targets=("tflite",), validation=sweep, export=ExportOptions(target_options={"tflite": {"form": "loop"}})))
        if not (result.report.passed and looped.report.passed):
            raise SystemExit(f"{kind}: an export fails parity: {result.report.failures()} {looped.report.failures()}")
        paths = {a.target: a.path for a in result.artifacts}
        ops = next(e.details["recurrent_ops"] for e in result.report.exports if e.target == "tflite")
        loop_ops = looped.report.exports[0].details["recurrent_ops"]
        source = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        settings = ort.SessionOptions()
        settings.intra_op_num_threads = 1
        session = ort.InferenceSession(str(paths["onnx"]), settings, providers=["CPUExecutionProvider"])
        signature = Interpreter(model_path=str(paths["tflite"]), num_threads=1).get_signature_runner()
        loop = Interpreter(model_path=str(looped.artifacts[0].path), num_threads=1).get_signature_runner()
        for batch in batches:
            for length in lengths:
                x = np.random.default_rng(length).standard_normal((batch, length, args.features)).astype(np.float32)
                repeats = max(3, args.repeats // (3 if length * batch >= 8000 else 1))
                ms = median_ms({"tf": lambda x=x: source(x).numpy(),
                                "ort": lambda x=x: session.run(None, {"features": x}),
                                "lite": lambda x=x: signature(features=x),
                                "loop": lambda x=x: loop(features=x)}, repeats)
                tf_ms, ort_ms, lite_ms, loop_ms = ms["tf"], ms["ort"], ms["lite"], ms["loop"]
                forms = "same" if loop_ops == ops else ", ".join(f"{op} x{n}" for op, n in ops.items())
                print(f"{kind:<11} {batch:>5} {length:>6} {tf_ms:>8.2f} {ort_ms:>8.2f} {lite_ms:>8.2f} "
                      f"{lite_ms / ort_ms:>9.2f}x {loop_ms:>8.2f} {loop_ms / ort_ms:>9.2f}x  {forms}", flush=True)


if __name__ == "__main__":
    main()
