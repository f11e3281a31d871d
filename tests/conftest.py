import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ast  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from rnnexport import ValidateOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
REALWORLD = ROOT.parent / "shared" / "realworld"
# The sweep of a test that reads no latency: timing each shape (three more calls of every export and
# of the source) made up to half of a conversion's time.
UNTIMED = ValidateOptions(latency_repeats=0)


def run_python(script: Path, *args: str, legacy_keras: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a helper script in a fresh interpreter (no rnnexport state, optionally tf-keras)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if legacy_keras:
        env["TF_USE_LEGACY_KERAS"] = "1"
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


def rnnexport_cmd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed console entry point, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "rnnexport", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


# A line of the progress a run prints on stderr off a terminal: `[  12.3s] exporting m.keras to onnx`.
PROGRESS = re.compile(r"^\[ *\d+\.\ds\] ")


def without_progress(stderr: str) -> list[str]:
    """The lines of `stderr` that are not progress lines: errors and messages."""
    return [line for line in stderr.splitlines() if not PROGRESS.match(line)]


HEAVY = ("tensorflow", "keras", "tf2onnx", "onnxruntime", "numpy", "rich")


def heavy_imports(code: str) -> list[str]:
    """Which of the heavy frameworks are imported after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if sys.modules.get(m)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def _shared(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The run's temporary directory, which every xdist worker shares."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def written_once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str, write) -> Path:
    """The directory `name` that `write(directory)` fills once per run: the first xdist worker to
    need it writes it while the others wait, then every worker reads the same files."""
    import fcntl
    import shutil

    shared = _shared(tmp_path_factory, worker_id)
    out, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # left by a worker that failed here first; this one reports its own error
            out.mkdir()
            write(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def keras2_files(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict[str, Path]:
    """Keras 2 `.h5` files written by tf-keras itself, as users of tf.keras < 2.16 have them."""
    out = written_once(tmp_path_factory, worker_id, "keras2", lambda out: run_python(
        TESTS / "tfkeras_helper.py", "write", str(out), legacy_keras=True))
    return {p.stem: p for p in out.glob("*.h5")}


@pytest.fixture(scope="session")
def tf1_written(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The TF1 fixtures of tf1_helper, checkpoints and frozen graphs, written by one tf-keras process."""
    return written_once(tmp_path_factory, worker_id, "tf1", lambda out: run_python(
        TESTS / "tf1_helper.py", "both", str(out), legacy_keras=True))


@pytest.fixture(scope="session")
def tf1_files(tf1_written: Path) -> Path:
    """Checkpoints written by the real TF1 cells and runners (tf1_helper.CHECKPOINTED)."""
    return tf1_written / "ckpt"


@pytest.fixture(scope="session")
def frozen_files(tf1_written: Path) -> Path:
    """Frozen GraphDefs of statically unrolled TF1 graphs (tf1_helper.FROZEN), as `<name>.pb`."""
    return tf1_written / "frozen"


@pytest.fixture(scope="session")
def lstm_cells(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """TF1 LSTMCell checkpoints with peepholes, a cell clip and a projection (onnx_fusion_helper),
    which the ONNX and the TFLite tests both convert."""
    return written_once(tmp_path_factory, worker_id, "lstm_cells", lambda out: run_python(
        TESTS / "onnx_fusion_helper.py", "write", str(out), legacy_keras=True))


@pytest.fixture(scope="session")
def realworld() -> Path:
    if not REALWORLD.is_dir():
        pytest.skip(f"{REALWORLD} is absent (a clone outside the team); the real-world models live there")
    return REALWORLD


@pytest.fixture(scope="session")
def converted_kinds(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict:
    """Every Keras layer kind saved as .keras and converted to every target (and validated) once
    per run: kind -> (model, source path, ConvertResult). The first xdist worker to need them
    converts them (70 s), then every worker loads those files and results."""
    import pickle

    import keras

    import rnnexport
    from keras_models import KINDS, build

    def convert(out: Path) -> None:
        results = {}
        for kind in KINDS:
            path = out / f"{kind}.keras"
            build(kind).save(path)
            options = rnnexport.ConvertOptions(targets=("all",), validation=UNTIMED)  # these tests read no latency
            results[kind] = (path, rnnexport.convert(path, out / "exports", options))
        (out / "results.pickle").write_bytes(pickle.dumps(results))

    out = written_once(tmp_path_factory, worker_id, "kinds", convert)
    converted = pickle.loads((out / "results.pickle").read_bytes())
    return {kind: (keras.saving.load_model(path), path, result) for kind, (path, result) in converted.items()}


def artifact(result, target: str) -> Path:
    """The path a ConvertResult wrote for one target."""
    return next(a.path for a in result.artifacts if a.target == target)


def checked_exports(result, bound: float):
    """(target, export, lengths checked) for each target of a passing ConvertResult, after
    asserting that every output of every checked case is within `bound`."""
    assert result.report.passed, result.report.failures()
    for export in result.report.exports:
        for case in export.checked:
            for output in case.outputs:
                assert output.max_abs is not None and output.max_abs < bound, (export.target, case.case.name)
        yield export.target, export, {c.case.length for c in export.checked}


def export_result(result, target: str):
    """The parity result of one target in a ConvertResult."""
    return next(e for e in result.report.exports if e.target == target)


def every_kind(path, reset_before=False):
    """A softmax classifier over a Bidirectional LSTM, a GRU, (with `reset_before`, a
    GRU(reset_after=False),) a SimpleRNN and an LSTM, saved at `path`."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(3)
    i = keras.Input((None, 4), name="x")
    x = L.Bidirectional(L.LSTM(8, return_sequences=True), name="bilstm")(i)
    x = L.GRU(8, return_sequences=True, name="gru")(x)
    if reset_before:
        x = L.GRU(8, return_sequences=True, reset_after=False, name="gru_v1")(x)
    x = L.SimpleRNN(8, return_sequences=True, name="rnn")(x)
    x = L.LSTM(8, return_sequences=True, name="lstm")(x)
    dense = L.Dense(3, activation="softmax", name="probs")
    model = keras.Model(i, dense(x))
    # Decisive class scores: a quantized export is judged on decisions a float export makes clearly.
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 6.0, bias])
    model.save(path)
    return path


# The test files that take longest (minutes of fixtures and conversions), longest first. Two
# xdist workers take whole files in collection order (`--dist loadfile`); alphabetical order left
# most of these for the end, where one worker ran the last of them while the other sat idle.
LONGEST_FIRST = ("test_realworld.py", "test_tflite_target.py", "test_streaming.py", "test_tf2_savedmodel.py",
                 "test_tf1_source.py", "test_keras2_eras.py", "test_unrolled_source.py", "test_fleet.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
