"""Quantized exports of the ML-KWS keyword-spotting models (../shared/realworld/mlkws-rnn-frozen,
cut at `Mfcc:0`): size, latency and decisions per mode, side by side in one run.

    .venv/bin/python benchmarks/quantized.py [--models Basic_LSTM_S.pb,GRU_S.pb] [--samples 300]
                                             [--repeats 20] [--modes tflite:int8,onnx:int8]

The inputs are MFCC-like: each model's own DecodeWav -> AudioSpectrogram -> Mfcc ops run on
synthetic one-second clips (two to four tones with a syllable-like envelope over noise), so the
features have the statistics the recurrence was trained on. The first half calibrates the
quantized exports; the second half is what their decisions are compared on, against the frozen
graph itself: top-1 agreement, the agreement on the clips the float graph decides clearly (top
class ahead of the second by 0.2 or more, `decisions.CLEAR_MARGIN`; how many of them), KL
divergence and SNR of `labels_softmax`. Latency is the median of
single-clip calls (batch 1) on one thread (LiteRT, onnxruntime). Absolute times drift with the
machine's load: read the ratios to each format's float file.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
import wave
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parents[2] / "shared" / "realworld" / "mlkws-rnn-frozen"
MODELS = ("Basic_LSTM_S.pb", "GRU_S.pb", "LSTM_S.pb", "CRNN_S.pb")
MODES = ("tflite:float", "tflite:int8", "tflite:int16x8", "onnx:float", "onnx:float16", "onnx:dynamic-range",
         "onnx:int8")
RATE = 16000


def clip(rng: np.random.Generator) -> bytes:
    """One second of 16-bit mono WAV: a few tones under a syllable-like envelope, over noise."""
    t = np.arange(RATE) / RATE
    sound = np.zeros(RATE)
    for _ in range(rng.integers(2, 5)):
        start, width = rng.uniform(0.1, 0.7), rng.uniform(0.05, 0.3)
        envelope = np.exp(-0.5 * ((t - start - width / 2) / (width / 4)) ** 2)
        sound += envelope * rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
    sound += rng.normal(0, rng.uniform(0.001, 0.03), RATE)
    samples = (np.clip(sound, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def mfcc_inputs(model: Path, count: int, seed: int) -> np.ndarray:
    """`count` MFCC arrays [count, time, 10] from the model's own feature ops on synthetic clips."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(model.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    rng = np.random.default_rng(seed)
    with tf.compat.v1.Session(graph=graph) as session:
        return np.concatenate([session.run("Mfcc:0", {"wav_data:0": clip(rng)}) for _ in range(count)])


def median_ms(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def export(model: Path, out: Path, target: str, mode: str, calibration: Path) -> tuple[Path | None, str]:
    import rnnexport
    from rnnexport.errors import UserError
    from rnnexport.options import ExportOptions

    values = {} if mode == "float" else {"quantize": mode}
    if mode in ("int8", "int16x8"):
        values["calibration"] = str(calibration)
    options = rnnexport.ConvertOptions(
        targets=(target,), validate=False, source=rnnexport.SourceOptions(inputs=("Mfcc:0",)),
        export=ExportOptions(target_options={target: values}))
    path = out / f"{model.stem}.{mode}{'.tflite' if target == 'tflite' else '.onnx'}"
    try:
        rnnexport.convert(model, path, options)
    except UserError as exc:
        return None, str(exc).split(f" to {target}: ", 1)[-1]
    return path, ""


def single_thread_runner(path: Path):
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"Mfcc": x})[0]
    from rnnexport_converters.tflite.runtime import TfliteRunner

    runner = TfliteRunner(path)
    return lambda x: runner.run({"Mfcc": x})["labels_softmax"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    import rnnexport
    from rnnexport import plugins
    from rnnexport.device import resolve_device
    from rnnexport.parity.decisions import SOFTMAX, Scores, scores

    print(f"ML-KWS models cut at Mfcc:0, {args.samples} MFCC-like inputs (half calibrate, half judge), "
          f"latency: median of {args.repeats} single-clip calls, one thread")
    header = f"{'model':16} {'target':7} {'mode':14} {'KiB':>7} {'ms':>7} {'x float':>7} {'top-1':>7} " \
             f"{'clear':>12} {'KL':>9} {'SNR dB':>7}  note"
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        model = MODELS_DIR / name
        features = mfcc_inputs(model, args.samples, seed=0)
        half = args.samples // 2
        opened = plugins.find_source(model).open(model, rnnexport.SourceOptions(inputs=("Mfcc:0",)))
        reference = opened.reference(resolve_device("cpu"))
        expected = reference.run({"Mfcc": features[half:]})["labels_softmax"]
        with tempfile.TemporaryDirectory(prefix="rnnexport-quantized-") as tmp:
            calibration = Path(tmp) / "calibration.npz"
            np.savez(calibration, Mfcc=features[:half])
            float_ms: dict[str, float] = {}
            for entry in args.modes.split(","):
                target, mode = entry.split(":")
                path, refused = export(model, Path(tmp), target, mode, calibration)
                if path is None:
                    print(f"{name:16} {target:7} {mode:14} {'-':>7} {'-':>7} {'-':>7} {'-':>7} {'-':>12} {'-':>9} {'-':>7}  "
                          f"refused: {refused}")
                    continue
                run = single_thread_runner(path)
                got = np.concatenate([run(features[i:i + 1]) for i in range(half, args.samples)])
                found = sum((scores(expected[i], got[i], SOFTMAX) for i in range(len(got))), Scores())
                ms = median_ms(lambda: run(features[half:half + 1]), args.repeats)
                if mode == "float":
                    float_ms[target] = ms
                ratio = f"{ms / float_ms[target]:.2f}" if target in float_ms else "-"
                snr = f"{found.snr_db:.1f}" if found.snr_db is not None else "exact"
                print(f"{name:16} {target:7} {mode:14} {path.stat().st_size / 1024:7.1f} {ms:7.2f} {ratio:>7} "
                      f"{found.agreement:7.1%} {f'{found.clear_agreement:.1%} of {found.clear}':>12} "
                      f"{found.mean_kl:9.2e} {snr:>7}")
        getattr(reference, "close", lambda: None)()


if __name__ == "__main__":
    main()
