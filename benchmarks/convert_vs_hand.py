"""`rnnexport convert M.keras --to all` (three exports and the default parity sweep) against a
competent hand-written script that exports the same three formats and checks each once, both run
in fresh processes, alternately, side by side in one run.

    .venv/bin/python benchmarks/convert_vs_hand.py [--repeats 5] [--units 256] [--features 64]
                                                   [--length N]

The hand script is `hand` below: it loads the Keras file, saves a SavedModel with a
[batch, time, features] signature, converts a batch-1 trace with its weights frozen with
TFLiteConverter (what the converter needs to run a Keras 3 LSTM on LiteRT), converts the
SavedModel's function with tf2onnx, and compares each export with Keras once, at one shape.
rnnexport additionally checks every export at 11 shapes (lengths 1 to 4x beyond, batches 1 and
3, the first case twice), reads back what it wrote and records the verdict in each file.

Wall time counts the whole process (interpreter start, imports); CPU time is user + system of
the child, which drifts less than wall time on a shared machine. Read the ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def hand(source: str, out: str) -> None:
    """The hand-written conversion the comparison is against."""
    import numpy as np
    import keras
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    Path(out).mkdir(parents=True, exist_ok=True)
    model = keras.saving.load_model(source)
    features = model.inputs[0].shape[-1]
    serve = tf.function(lambda x: model(x, training=False),
                        input_signature=[tf.TensorSpec([None, None, features], tf.float32, name="x")])
    module = tf.Module()
    module.model, module.serve = model, serve
    tf.saved_model.save(module, f"{out}/m.savedmodel", signatures=serve.get_concrete_function())
    batch1 = tf.function(lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec([1, None, features], tf.float32, name="x")])
    frozen = convert_variables_to_constants_v2(batch1.get_concrete_function())
    Path(f"{out}/m.tflite").write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert())
    tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17,
                                  output_path=f"{out}/m.onnx")

    x = np.random.default_rng(0).standard_normal((1, 50, features)).astype(np.float32)
    expected = model(x, training=False).numpy()
    saved = tf.saved_model.load(f"{out}/m.savedmodel").signatures["serving_default"]
    session = ort.InferenceSession(f"{out}/m.onnx", providers=["CPUExecutionProvider"])
    interpreter = Interpreter(f"{out}/m.tflite")
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    got = {
        "savedmodel": next(iter(saved(x=tf.constant(x)).values())).numpy(),
        "onnx": session.run(None, {session.get_inputs()[0].name: x})[0],
        "tflite": interpreter.get_tensor(interpreter.get_output_details()[0]["index"]),
    }
    for name, value in got.items():
        error = float(np.abs(value - expected).max())
        assert error < 1e-4, f"{name}: max abs err {error}"


def make_model(path: Path, units: int, features: int, length: int | None) -> None:
    import keras

    inputs = keras.Input((length, features), name="x")
    keras.Model(inputs, keras.layers.LSTM(units, return_sequences=True, name="lstm")(inputs)).save(path)


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--length", type=int, default=None, help="fix the model's length (default: any)")
    parser.add_argument("--hand", nargs=2, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--make", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hand:
        hand(*args.hand)
        return
    if args.make:
        make_model(Path(args.make), args.units, args.features, args.length)
        return

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="convert-vs-hand-") as tmp:
        source = Path(tmp) / "M.keras"
        # In a child, like the runs: TensorFlow's native start-up logs stay out of the table.
        subprocess.run([sys.executable, __file__, "--make", str(source), "--units", str(args.units), "--features",
                        str(args.features), *(["--length", str(args.length)] if args.length else [])],
                       check=True, capture_output=True)
        script = Path(sys.executable).with_name("rnnexport")
        rnnexport = [str(script)] if script.is_file() else [sys.executable, "-m", "rnnexport"]
        commands = {
            "hand script": [sys.executable, __file__, "--hand", str(source), f"{tmp}/hand"],
            "rnnexport convert --to all": [*rnnexport, "convert", str(source), "--to", "all", "--out",
                                           f"{tmp}/rnnexport", "--force", "-q"],
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # alternated, so that a burst of load hits both alike
            for name, command in commands.items():
                times[name].append(timed(command))

    hand_wall = statistics.median(w for w, _ in times["hand script"])
    hand_cpu = statistics.median(c for _, c in times["hand script"])
    print(f"LSTM({args.units}) over {args.features} features, length {args.length or 'any'}; "
          f"median of {args.repeats} alternated runs, each a fresh process")
    print(f"{'':<28} {'wall s':>8} {'CPU s':>8} {'wall ratio':>11} {'CPU ratio':>10}")
    for name, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:<28} {wall:8.2f} {cpu:8.2f} {wall / hand_wall:10.2f}x {cpu / hand_cpu:9.2f}x")


if __name__ == "__main__":
    main()
