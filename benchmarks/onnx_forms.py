"""Each recurrent layer kind in its two ONNX forms, side by side: the fused op and a `Loop` of
MatMuls, the form rnnexport chooses for each batch, and the TensorFlow source.

    .venv/bin/python benchmarks/onnx_forms.py [--repeats 5] [--units 256] [--features 128]
        [--kinds lstm,simple_rnn] [--batches 1,16,64] [--lengths 100,1000] [--no-tf]

Each kind (256 units over 128 features) is exported by rnnexport once per `--optimize-for`
batch (parity checked at short lengths); the loop form is the fused file with each fused op
rewritten by `converters/onnx/forms.py`. onnxruntime runs on one intra-op thread (this machine
is shared and has two cores; its default pool gives bimodal timings), TensorFlow as it comes.
Median milliseconds of `--repeats` rounds after a warm-up; each round runs every form of a shape
once, so that load from other processes falls on all of them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

BATCHES = (1, 16, 64)
LENGTHS = (100, 1000)
KINDS = ("lstm", "gru_reset_after", "gru_reset_before", "simple_rnn", "bidirectional_lstm")


def median_ms(runs: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of each run, interleaved (one of each per round) so that load from
    other processes falls on all forms alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, run in runs.items():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def build(kind: str, units: int, features: int):
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((None, features), name="features")
    layer = {
        "lstm": lambda: layers.LSTM(units, return_sequences=True),
        "gru_reset_after": lambda: layers.GRU(units, return_sequences=True, reset_after=True),
        "gru_reset_before": lambda: layers.GRU(units, return_sequences=True, reset_after=False),
        "simple_rnn": lambda: layers.SimpleRNN(units, return_sequences=True),
        "bidirectional_lstm": lambda: layers.Bidirectional(layers.LSTM(units, return_sequences=True)),
    }[kind]()
    return keras.Model(inputs, layer(inputs), name=kind)


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def loop_form(path: Path) -> Path:
    """The export with each fused recurrent op rewritten as a Loop of MatMuls."""
    import onnx
    from rnnexport_converters.onnx.forms import to_loop

    proto = onnx.load(str(path))
    for node in [n for n in proto.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]:
        to_loop(proto, node)
    looped = path.with_name(path.stem + ".loop.onnx")
    onnx.save(proto, str(looped))
    return looped


def export(model, out: Path, batch: int) -> tuple[Path, dict]:
    import rnnexport
    from rnnexport import ConvertOptions, SweepOptions, ValidateOptions
    from rnnexport.options import ExportOptions

    options = ConvertOptions(targets=("onnx",), export=ExportOptions(target_options={"onnx": {"optimize_for": f"batch={batch}"}}),
                             validation=ValidateOptions(sweep=SweepOptions(lengths=(1, 7), batches=(1, 3))))
    result = rnnexport.convert(model, out / f"batch{batch}", options)
    if not result.report.passed:
        raise SystemExit(f"{model.name}: parity failed: {result.report.failures()}")
    (artifact,) = [a.path for a in result.artifacts if a.target == "onnx"]
    return artifact, result.report.exports[0].details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--no-tf", action="store_true", help="leave the TensorFlow column out")
    args = parser.parse_args()

    import tensorflow as tf

    out = Path(tempfile.mkdtemp(prefix="rnnexport-forms-"))
    print(f"{args.units} units over {args.features} features, CPU x{os.cpu_count()}, onnxruntime on 1 thread, "
          f"median of {args.repeats} runs, milliseconds; chosen = the file rnnexport writes with "
          "--optimize-for batch=<batch>")
    header = (f"{'kind':<20} {'batch':>5} {'T':>5} {'fused':>9} {'loop':>9} {'loop/fused':>10} "
              f"{'chosen':>9} {'form':<6} {'TF':>9} {'TF/chosen':>9}")
    print(header)
    print("-" * len(header))
    for kind in args.kinds.split(","):
        model = build(kind, args.units, args.features)
        source = tf.function(lambda x, model=model: model(x, training=False), reduce_retracing=True)
        # rnnexport's default (batch=1) file holds every layer fused.
        fused_path, _ = export(model, out / kind, 1)
        loop_path = loop_form(fused_path)
        for batch in map(int, args.batches.split(",")):
            chosen_path, details = export(model, out / kind, batch) if batch != 1 else (fused_path, None)
            form = "loop" if details and set(details["recurrent_ops"]) == {"Loop"} else "fused"
            sessions = {"fused": session(fused_path), "loop": session(loop_path), "chosen": session(chosen_path)}
            for length in map(int, args.lengths.split(",")):
                x = np.random.default_rng(length).standard_normal((batch, length, args.features)).astype(np.float32)
                repeats = max(3, args.repeats // (3 if length * batch >= 16000 else 1))
                runs = {name: (lambda s=s, x=x: s.run(None, {"features": x})) for name, s in sessions.items()}
                if not args.no_tf:
                    runs["tf"] = lambda x=x, source=source: source(x).numpy()
                ms = median_ms(runs, repeats)
                tf_ms = ms.get("tf", float("nan"))
                print(f"{kind:<20} {batch:>5} {length:>5} {ms['fused']:>9.2f} {ms['loop']:>9.2f} "
                      f"{ms['loop'] / ms['fused']:>9.2f}x {ms['chosen']:>9.2f} {form:<6} {tf_ms:>9.2f} "
                      f"{tf_ms / ms['chosen']:>8.1f}x", flush=True)


if __name__ == "__main__":
    main()
