"""Fleets: every model of a config in its own worker process, a model that crashes its worker or
cannot be read failing alone, a rerun that re-checks only what changed, and Ray tasks giving the
same report as local workers. The commands are those of README.md, "Many models"."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, rnnexport_cmd

from rnnexport.cli import cli
from rnnexport.fleet import content_hash


def _readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Many models"):].split("\n## ", 1)[0]


def _readme_config() -> str:
    return _readme_section().split("```toml\n", 1)[1].split("```", 1)[0]


def _readme_commands() -> list[list[str]]:
    shell = _readme_section().split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].split()[1:] for line in shell.splitlines() if line.startswith("rnnexport ")]


def _gru(path: Path, seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)
    i = keras.Input((None, 3), name="x")
    keras.Model(i, keras.layers.GRU(4, return_sequences=True, name="gru")(i)).save(path)


def _crashing(path: Path) -> None:
    """A model whose Lambda layer kills the process that loads it inside a fleet worker, as the
    kernel's out-of-memory killer would (only there: this process builds and saves it)."""
    import keras

    i = keras.Input((None, 3), name="x")
    x = keras.layers.Lambda(lambda t: (__import__("os").kill(__import__("os").getpid(), 9)
                                       if __import__("os").environ.get("RNNEXPORT_THREADS") else None, t)[1])(i)
    keras.Model(i, keras.layers.GRU(4, name="gru")(x)).save(path)


def _invoke(args: list[str], cwd: Path):
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, args)
    finally:
        os.chdir(old)


def _without_timing(report: dict) -> dict:
    """A report without what was measured in wall time (two runs never agree on it)."""
    for export in report["exports"]:
        export.pop("timing")
        export.pop("latency")
    return report


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The README's fleet of two models, and beside it, in broken.toml, the same two with a file
    that is no model and a model that kills its worker; the broken fleet is converted first."""
    work = tmp_path_factory.mktemp("fleet")
    (work / "models").mkdir()
    (work / "fleet.toml").write_text(_readme_config())
    _gru(work / "models" / "en.keras", 1)
    _gru(work / "models" / "de.keras", 2)
    (work / "models" / "broken.keras").write_bytes(b"not a keras file")
    _crashing(work / "models" / "crash.keras")
    broken = _readme_config().replace(
        '"models/de.keras"]', '"models/de.keras", "models/broken.keras",\n'
                              '          { source = "models/crash.keras", unsafe = true }]')
    assert broken != _readme_config()
    (work / "broken.toml").write_text(broken)
    first = _invoke(["convert", "--config", "broken.toml", "--jobs", "2", "--report", "broken.json",
                     "--junit", "broken.xml", "--markdown", "broken.md", "--html", "broken.html"], work)
    return work, first


def test_a_broken_model_and_a_crashing_one_fail_alone(fleet):
    work, first = fleet
    assert first.exit_code == 1, first.output
    report = json.loads((work / "broken.json").read_text())
    rows = [(Path(e["source"]).name, Path(e["path"]).name, e["passed"]) for e in report["exports"]]
    # The config's order, whatever order the workers finished in.
    assert rows == [("en.keras", "en.savedmodel", True), ("de.keras", "de.savedmodel", True),
                    ("broken.keras", "broken.savedmodel", False), ("crash.keras", "crash.savedmodel", False)]
    en, de, broken, crash = report["exports"]
    assert en["cases"] and all(c["passed"] for c in en["cases"]) and en["max_abs"] == 0.0
    assert "not a Keras model file" in broken["error"]
    assert "died (killed by SIGKILL" in crash["error"]
    assert (work / "dist" / "en.savedmodel").is_dir() and (work / "dist" / "de.savedmodel").is_dir()
    assert not (work / "dist" / "crash.savedmodel").exists()
    assert [p.name for p in (work / "dist").iterdir() if p.name.startswith(".rnnexport")] == []
    assert "[4/4]" in first.stderr and "crash.keras: FAIL: the worker running this model died" in first.stderr
    for name in ("broken.xml", "broken.md", "broken.html"):
        text = (work / name).read_text()
        assert all(model in text for model in ("en.keras", "de.keras", "broken.keras", "crash.keras")), name


def test_rerun_skips_unchanged_models_and_reruns_a_changed_one(fleet):
    work, _ = fleet
    dist = work / "dist"
    en_before, de_before = content_hash(dist / "en.savedmodel"), content_hash(dist / "de.savedmodel")
    # The two models of the README's fleet were converted with the same settings into the same
    # `out` as part of the broken fleet: nothing to do.
    (convert, *_) = _readme_commands()
    unchanged = _invoke(convert, work)
    assert unchanged.exit_code == 0, unchanged.output
    assert unchanged.stderr.count("up to date, not re-run") == 2, unchanged.stderr
    _gru(work / "models" / "de.keras", 3)
    changed = _invoke(convert, work)
    assert changed.exit_code == 0, changed.output
    assert "en.keras: up to date, not re-run" in changed.stderr
    assert "de.keras: PASS (" in changed.stderr and changed.stderr.count("up to date") == 1, changed.stderr
    assert content_hash(dist / "en.savedmodel") == en_before
    assert content_hash(dist / "de.savedmodel") != de_before
    report = json.loads((dist / "parity.json").read_text())
    assert [Path(e["path"]).name for e in report["exports"]] == ["en.savedmodel", "de.savedmodel"]
    assert report["passed"]
    shutil.copy(dist / "parity.json", work / "local.json")


def test_an_export_changed_by_hand_is_not_overwritten_without_force(fleet):
    work, _ = fleet
    planted = work / "dist" / "broken.savedmodel"
    planted.mkdir()
    (planted / "mine").write_text("somebody's file")
    try:
        result = _invoke(["convert", "--config", "broken.toml", "--jobs", "2", "--no-validate"], work)
        assert result.exit_code == 2, result.output
        assert "broken.savedmodel: already exists; pass --force to overwrite" in result.output
        assert (planted / "mine").read_text() == "somebody's file"
    finally:
        shutil.rmtree(planted)


def test_an_interrupted_fleet_resumes_where_it_stopped(fleet):
    """SIGTERM once the first of three models is recorded: its export stays, nothing half-written
    does, and the rerun takes it from the cache and converts only the other two."""
    work, _ = fleet
    here = work / "resume"
    (here / "models").mkdir(parents=True)
    for name in ("en", "de"):
        shutil.copy(work / "models" / f"{name}.keras", here / "models")
    _gru(here / "models" / "fr.keras", 4)
    (here / "fleet.toml").write_text(_readme_config().replace(
        '"models/de.keras"]', '"models/de.keras", "models/fr.keras"]'))
    command = [sys.executable, "-m", "rnnexport", "convert", "--config", "fleet.toml", "--jobs", "1",
               "--report", "resumed.json"]
    run = subprocess.Popen(command, cwd=here, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cache = here / ".rnnexport-cache"
    deadline = time.monotonic() + 240
    while not list(cache.glob("convert-*.pickle")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 143, stderr[-3000:]
    assert "Interrupted by SIGTERM: complete: " in stderr, stderr[-3000:]
    dist = here / "dist"
    finished = sorted(p.name for p in dist.iterdir() if p.name.endswith(".savedmodel"))
    assert finished == ["en.savedmodel"], stderr[-3000:]
    assert [p.name for p in dist.iterdir() if p.name.startswith(".rnnexport")] == []
    assert not (dist / "parity.json").exists() and not (here / "resumed.json").exists()
    en_before = content_hash(dist / "en.savedmodel")

    rerun = subprocess.run(command, cwd=here, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "en.keras: up to date, not re-run" in rerun.stderr, rerun.stderr
    assert rerun.stderr.count("up to date") == 1, rerun.stderr
    assert "de.keras: PASS (" in rerun.stderr and "fr.keras: PASS (" in rerun.stderr, rerun.stderr
    assert content_hash(dist / "en.savedmodel") == en_before
    report = json.loads((here / "resumed.json").read_text())
    assert [Path(e["path"]).name for e in report["exports"]] == ["en.savedmodel", "de.savedmodel", "fr.savedmodel"]
    assert report["passed"] and all(e["passed"] and e["cases"] for e in report["exports"])
    assert [p.name for p in dist.iterdir() if p.name.startswith(".rnnexport")] == []


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module, two CPUs."""
    ray = pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install 'rnnexport[ray]')")
    # A small object store: the tasks return reports, and CI's /dev/shm may be small.
    ray.init(num_cpus=2, object_store_memory=128 * 2**20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_executor_gives_the_report_local_workers_gave(fleet, ray_instance):
    work, _ = fleet
    assert (work / "local.json").exists(), "runs after the rerun test, whose report it compares with"
    command = _readme_commands()[2]
    assert command[:4] == ["convert", "--config", "fleet.toml", "--executor"] and "--rerun" in command
    command[command.index("--ray-address") + 1] = ray_instance
    result = rnnexport_cmd(*command, "--report", "ray.json", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("PASS (") == 2 and "up to date" not in result.stderr, result.stderr
    local = _without_timing(json.loads((work / "local.json").read_text()))
    on_ray = _without_timing(json.loads((work / "ray.json").read_text()))
    assert on_ray == local


def test_ray_reports_a_model_that_kills_its_worker_as_that_models_failure(fleet, ray_instance):
    work, _ = fleet
    config = _readme_config().replace('"models/en.keras", "models/de.keras"]',
                                      '"models/en.keras", { source = "models/crash.keras", unsafe = true }]')
    (work / "ray-crash.toml").write_text(config.replace('"dist', '"ray-crash'))
    result = rnnexport_cmd("convert", "--config", "ray-crash.toml", "--executor", "ray", "--ray-address",
                           ray_instance, "--report", "ray-crash.json", cwd=work)
    assert result.returncode == 1, result.stderr[-3000:]
    en, crash = json.loads((work / "ray-crash.json").read_text())["exports"]
    assert en["passed"] and Path(en["path"]).name == "en.savedmodel"
    assert not crash["passed"] and Path(crash["source"]).name == "crash.keras"
    assert crash["error"].startswith("the worker running this model died (Ray: WorkerCrashedError: "), crash["error"]
    assert not (work / "ray-crash" / "crash.savedmodel").exists()


def test_readme_validate_command_writes_one_junit_report(fleet):
    work, _ = fleet
    command = _readme_commands()[3]
    assert command[:2] == ["validate", "--config"]
    result = _invoke(command, work)
    assert result.exit_code == 0, result.output
    junit = (work / "dist" / "parity.xml").read_text()
    assert junit.count("<testsuite ") == 2 and 'failures="0"' in junit


@pytest.mark.parametrize("jobs", [None, "1", "2"])
def test_fail_fast_stops_the_whole_run(fleet, jobs):
    """The first model that fails ends the run, in one process or with workers (--jobs 2: the
    worker still running is ended): the models after it are reported as not run, exit 1."""
    work, _ = fleet
    (work / "failfast.toml").write_text(
        'models = [{ source = "models/en.keras", exports = ["dist/en.savedmodel"] },\n'
        '          { source = "models/de.keras", exports = ["dist/en.savedmodel"] },\n'
        '          { source = "models/de.keras", exports = ["dist/de.savedmodel"] }]\n'
        'lengths = [3, 9]\nbatches = [2]\n')
    workers = ["--jobs", jobs, "--rerun"] if jobs else []
    report = work / f"failfast-{jobs}.json"
    result = _invoke(["validate", "--config", "failfast.toml", "--fail-fast", "--latency-repeats", "0", *workers,
                      "--report", str(report)], work)
    assert result.exit_code == 1, result.output
    en, wrong, de = json.loads(report.read_text())["exports"]
    # de.keras checked against en's export fails on its first case, and the sweep stops there.
    assert not wrong["passed"] and wrong["cases"] and "stopped at the first failing case" in wrong["stopped"]
    first = "not run (--fail-fast): models/de.keras failed first"
    assert de["error"] == first and de["cases"] == [] and not de["passed"]
    assert en["passed"] or (jobs == "2" and en["error"] == first), en["error"]
    assert "not run (--fail-fast)" in result.output

    # convert: the first source failing its latency gate stops the run before the second is checked.
    converted = _invoke(["convert", "models/en.keras", "models/de.keras", "--to", "onnx", "--out", f"ff-{jobs}", "--fail-fast",
                         "--lengths", "3", "--batches", "1", "--max-latency-ms", "1e-9", *workers,
                         "--report", str(report)], work)
    assert converted.exit_code == 1, converted.output
    exports = json.loads(report.read_text())["exports"]
    assert "exceeds --max-latency-ms 1e-09" in converted.output and not any(e["passed"] for e in exports)
    failed = [Path(e["source"]).name for e in exports if e["cases"]]
    not_run = [(Path(e["source"]).name, e["error"]) for e in exports if not e["cases"]]
    if jobs != "2":  # in order: en fails, de is never checked
        assert failed == ["en.keras"] and not_run == [("de.keras", "not run (--fail-fast): models/en.keras failed first")]
    else:  # both at once: whichever fails first ends the other's worker
        assert len(failed) == 1 and [n for n, _ in not_run] == [{"en.keras": "de.keras"}.get(failed[0], "en.keras")]
        assert not_run[0][1] == f"not run (--fail-fast): models/{failed[0]} failed first"
