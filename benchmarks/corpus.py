"""Convert every published model of the corpus and tabulate what rnnexport makes of it.

    .venv/bin/python benchmarks/corpus/fetch.py            # once: obtain the models (checksummed)
    .venv/bin/python benchmarks/corpus.py [--only NAME] [--json FILE] [--cache DIR] [--timeout S]

The corpus (benchmarks/corpus/manifest.toml) holds recurrent models other people trained and
published, in every format rnnexport reads. Each cached model is converted with
`rnnexport.convert(..., ConvertOptions(targets=("all",), source=SourceOptions(...)))` in a
subprocess of its own, one at a time, with a timeout: a crash or a hang is that model's result,
never the end of the run. One row per model: its family, the result (passed, failed parity, refused,
export failed, crashed, timed out, not cached) with the one-line reason, the worst absolute error
of each target, and the recurrent ops of the ONNX export (fused `LSTM`/`GRU`/`RNN` nodes, or `Loop`/
`Scan`). The last line counts the models converted with every export passing.

A benchmark, not a test: nothing imports it. It reads only rnnexport's public API and the JSON
report (schema 2), so it keeps working while rnnexport changes underneath it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
sys.path.insert(0, str(CORPUS))

from fetch import DEFAULT_CACHE, load_manifest, missing_files  # noqa: E402

TARGETS = ("savedmodel", "onnx", "tflite")
STATUS_STYLE = {
    "passed": "green",
    "failed parity": "red",
    "refused": "yellow",
    "export failed": "magenta",
    "crashed": "bold red",
    "timed out": "bold red",
    "not cached": "dim",
}


def one_line(text: str, limit: int = 2000) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def shorten(text: str, limit: int = 260) -> str:
    """The head and the tail of a long reason: the tail often says what went wrong."""
    if len(text) <= limit:
        return text
    tail = limit // 3
    return text[: limit - tail - 3] + " … " + text[-tail:]


# ---------------------------------------------------------------- the worker (one model, own process)


def _source_options(spec: dict, notes: list[str]):
    """SourceOptions from the manifest entry, passing only the fields this rnnexport declares."""
    try:
        from rnnexport import SourceOptions
    except ImportError:
        from rnnexport.options import SourceOptions
    wanted = {
        "inputs": tuple(spec["inputs"]),
        "outputs": tuple(spec["outputs"]),
        "custom_objects": tuple(spec["custom_objects"]),
        "architecture": Path(spec["architecture"]) if spec["architecture"] else None,
    }
    declared = {f.name for f in dataclasses.fields(SourceOptions)}
    kwargs = {}
    for key, value in wanted.items():
        if not value:
            continue
        if key in declared:
            kwargs[key] = value
        else:
            notes.append(f"SourceOptions has no {key!r}: not passed")
    return SourceOptions(**kwargs)


def _classify(exc: BaseException) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "InternalError" in names:
        return "crashed"
    if "ExportError" in names:
        return "export failed"
    if "UserError" in names:
        return "refused"
    return "crashed"


def worker(spec_file: Path, result_file: Path) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    spec = json.loads(spec_file.read_text())
    notes: list[str] = []
    result: dict = {"status": "crashed", "reason": "the worker stopped before convert returned", "notes": notes}
    result_file.write_text(json.dumps(result))
    started = time.monotonic()
    try:
        import rnnexport
        from rnnexport import ConvertOptions

        options = ConvertOptions(targets=("all",), source=_source_options(spec, notes))
        converted = rnnexport.convert(spec["source"], spec["out"], options)
        report = converted.report.to_dict() if converted.report is not None else None
        passed = bool(converted.report.passed) if converted.report is not None else False
        result.update(status="passed" if passed else "failed parity", reason="", report=report)
        if not passed and report:
            bad = [e for e in report.get("exports", []) if not e.get("passed")]
            if bad:
                first = bad[0]
                why = first.get("error") or _first_failing_case(first)
                result["reason"] = f"{first.get('target')}: {one_line(why)}"
    except BaseException as exc:  # noqa: BLE001 - every failure is this model's result
        result.update(status=_classify(exc), reason=f"{type(exc).__name__}: {one_line(exc)}")
        if result["status"] == "crashed":
            import traceback

            result["traceback"] = traceback.format_exc()[-4000:]
    result["seconds"] = round(time.monotonic() - started, 1)
    result_file.write_text(json.dumps(result, default=str))
    return 0


def _first_failing_case(export: dict) -> str:
    for case in export.get("cases", []):
        if case.get("error"):
            return f"{case.get('name')}: {case['error']}"
        for out in case.get("outputs", []):
            if not out.get("passed"):
                return (f"{case.get('name')}: output {out.get('name')!r} max abs err {out.get('max_abs')}"
                        f" from step {out.get('first_bad_step')} {out.get('reason') or ''}")
    return "failed"


# ---------------------------------------------------------------- the driver


def run_model(model: dict, cache: Path, timeout: float, keep: Path | None) -> dict:
    row = {"name": model["name"], "family": model["family"], "status": "", "reason": "", "errors": {},
           "onnx_recurrent_ops": None, "tflite_recurrent_ops": None, "seconds": None}
    if missing_files(model, cache):
        row.update(status="not cached", reason=f"run benchmarks/corpus/fetch.py --cache {cache} --only {model['name']}")
        return row
    with tempfile.TemporaryDirectory(prefix=f"corpus-{model['name']}-") as tmp:
        out = (keep / model["name"]) if keep else Path(tmp) / "exports"
        if keep and out.exists():
            import shutil

            shutil.rmtree(out)
        spec = {
            "name": model["name"],
            "source": str(cache / model["name"] / model["entry"]),
            "out": str(out),
            "inputs": model.get("inputs", []),
            "outputs": model.get("outputs", []),
            "custom_objects": model.get("custom_objects", []),
            "architecture": str(CORPUS / model["architecture"]) if model.get("architecture") else "",
        }
        spec_file, result_file, log_file = Path(tmp) / "spec.json", Path(tmp) / "result.json", Path(tmp) / "log.txt"
        spec_file.write_text(json.dumps(spec))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(
            [str(CORPUS), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_file), str(result_file)]
        started = time.monotonic()
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                code = None
        row["seconds"] = round(time.monotonic() - started, 1)
        result = {}
        if result_file.is_file():
            try:
                result = json.loads(result_file.read_text())
            except json.JSONDecodeError:
                result = {}
        if code is None:
            row.update(status="timed out", reason=f"no result after {timeout:.0f} s")
        elif not result or (code != 0 and result.get("status") == "crashed"):
            tail = _log_tail(log_file)
            how = f"signal {-code}" if code and code < 0 else f"exit code {code}"
            row.update(status="crashed", reason=f"worker died ({how}): {tail}" if code else result.get("reason", tail))
        else:
            row.update(status=result["status"], reason=result.get("reason", ""))
        prefix = str(cache / model["name"]) + os.sep
        row["reason"] = row["reason"].replace(prefix, "")  # the cache path says nothing; keep the file name
        if result.get("notes"):
            row["notes"] = result["notes"]
        if result.get("traceback"):
            row["traceback"] = result["traceback"]
        report = result.get("report") or {}
        for export in report.get("exports", []):
            target = export.get("target", "?")
            row["errors"][target] = {
                "passed": bool(export.get("passed")),
                "validated": bool(export.get("validated", True)),
                "max_abs": export.get("max_abs"),
                "max_rel": export.get("max_rel"),
                "error": one_line(export.get("error") or ""),
            }
            ops = (export.get("details") or {}).get("recurrent_ops")
            if target in ("onnx", "tflite"):
                row[f"{target}_recurrent_ops"] = ops
        if code is None or row["status"] == "crashed":
            row["log_tail"] = _log_tail(log_file, lines=15)
    return row


def _kill(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _log_tail(log_file: Path, lines: int = 1) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return ""
    useful = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("WARNING", "I0000", "W0000"))]
    return "\n".join(useful[-lines:]) if lines > 1 else one_line(useful[-1] if useful else "")


def fmt_error(entry: dict | None) -> str:
    if not entry:
        return "-"
    if entry.get("error") and entry.get("max_abs") is None:
        return "[red]error[/red]"
    value = entry.get("max_abs")
    text = "n/a" if value is None else f"{value:.1e}"
    return f"[green]{text}[/green]" if entry.get("passed") else f"[red]{text} ✗[/red]"


def fmt_ops(ops: dict | None) -> str:
    if ops is None:
        return "-"
    if not ops:
        return "none"
    return ", ".join(f"{k}×{v}" for k, v in sorted(ops.items()))


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    width = int(os.environ.get("COLUMNS", "0")) or 220
    console = Console(width=max(width, 160))
    table = Table(title="rnnexport on the published-model corpus", show_lines=False)
    for col, kw in (("model", {"no_wrap": True}), ("family", {"no_wrap": True}), ("result", {"no_wrap": True}),
                    ("savedmodel", {"justify": "right"}), ("onnx", {"justify": "right"}),
                    ("tflite", {"justify": "right"}), ("ONNX fused ops", {}), ("s", {"justify": "right"}),
                    ("reason", {"overflow": "fold", "ratio": 1})):
        table.add_column(col, **kw)
    for row in rows:
        style = STATUS_STYLE.get(row["status"], "")
        table.add_row(
            row["name"], row["family"], f"[{style}]{row['status']}[/{style}]" if style else row["status"],
            *(fmt_error(row["errors"].get(t)) for t in TARGETS),
            fmt_ops(row["onnx_recurrent_ops"]),
            "" if row["seconds"] is None else f"{row['seconds']:.0f}",
            shorten(row["reason"]),
        )
    console.print(table)
    passing = sum(1 for r in rows if r["status"] == "passed")
    console.print(f"converted and passing: {passing} / {len(rows)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(Path(argv[1]), Path(argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="convert only this model (repeatable, or comma-separated)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every row, with details, as JSON")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"where fetch.py put the models (default {DEFAULT_CACHE})")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one model may take (default 900)")
    parser.add_argument("--keep-exports", type=Path, metavar="DIR", help="keep the exports under DIR/<model> instead of discarding them")
    parser.add_argument("--family", action="append", default=[], help="convert only models of this family (repeatable)")
    parser.add_argument("--from-json", action="append", type=Path, default=[], metavar="FILE",
                        help="convert nothing: print the table of earlier --json files (later rows of a model win)")
    args = parser.parse_args(argv)
    if args.from_json:
        merged: dict[str, dict] = {}
        for path in args.from_json:
            data = json.loads(path.read_text())
            for row in data["rows"]:
                row["reason"] = row["reason"].replace(str(Path(data.get("cache", "")) / row["name"]) + os.sep, "")
                merged[row["name"]] = row
        order = [m["name"] for m in load_manifest()]
        print_table(sorted(merged.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else len(order)))
        return 0
    models = load_manifest()
    only = {n for item in args.only for n in item.split(",") if n}
    if only:
        unknown = only - {m["name"] for m in models}
        if unknown:
            parser.error(f"not in the manifest: {', '.join(sorted(unknown))}")
        models = [m for m in models if m["name"] in only]
    if args.family:
        models = [m for m in models if m["family"] in args.family]
    cache = args.cache.expanduser()
    rows = []
    for i, model in enumerate(models, 1):
        print(f"[{i}/{len(models)}] {model['name']} ({model['family']}) ...", file=sys.stderr, flush=True)
        row = run_model(model, cache, args.timeout, args.keep_exports)
        print(f"    {row['status']} in {row['seconds']} s {shorten(row['reason'], 160)}", file=sys.stderr, flush=True)
        rows.append(row)
        if args.json:  # written after every model: a long run interrupted keeps what it did
            args.json.write_text(json.dumps({"cache": str(cache), "rows": rows}, indent=1, default=str))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
