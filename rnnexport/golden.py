"""Golden files: the sweep's inputs and the source's outputs, kept in one `.npz` so that an export
can be checked later where only its runtime is installed (Polygraphy's `--save-outputs` and
`--load-outputs`, with the length sweep and the streaming cases kept).

The archive holds `meta` (JSON: the source and its checksum, its inputs and outputs, the sweep,
the tolerances, the versions) and, for case `i` of the sweep in order, `case<i>/input/<name>` and
`case<i>/output/<name>`. Reading one needs numpy only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import OutputExistsError, UserError, one_line
from rnnexport.options import ValidateOptions
from rnnexport.model import TensorInfo
from rnnexport.parity import Expected, ReferenceOutputs
from rnnexport.plan import check_writable
from rnnexport.sweep import Case
from rnnexport.tolerance import Tolerance, ToleranceOverrides
from rnnexport.version import __version__

FORMAT = "rnnexport-golden"
VERSION = 1


def checksum(source: Path | Any) -> str | None:
    """The sha256 of a source file (as `sha256sum` prints it); of a source directory or a
    checkpoint prefix (`model.ckpt.index`, ...), that of each file's relative path and contents in
    turn; None for a model given as an object."""
    if not isinstance(source, Path):
        return None
    if source.is_file():
        return hashlib.sha256(source.read_bytes()).hexdigest()
    if source.is_dir():
        files = sorted((str(p.relative_to(source)), p) for p in source.rglob("*") if p.is_file())
    else:
        files = sorted((p.name, p) for p in source.parent.glob(f"{source.name}.*") if p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _layers(overrides: ToleranceOverrides | None) -> list[dict[str, Any]]:
    """The user's tolerance layers, lowest first, as JSON."""
    layers = []
    while overrides is not None:
        layers.insert(0, {"device": overrides.device, "atol": dict(overrides.atol), "rtol": dict(overrides.rtol)})
        overrides = overrides.under
    return layers


@dataclass(frozen=True)
class Golden:
    """A golden file read back: what the source computed on the sweep, and how to judge exports."""

    path: Path
    meta: dict[str, Any]
    reference: ReferenceOutputs

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return tuple(TensorInfo(**{**spec, "shape": tuple(spec["shape"])}) for spec in self.meta["inputs"])

    @property
    def time_axes(self) -> dict[str, int | None]:
        return {o["name"]: o["time_axis"] for o in self.meta["outputs"]}

    @property
    def floor(self) -> Tolerance | None:
        floor = self.meta["tolerance"]["floor"]
        return None if floor is None else Tolerance(floor["atol"], floor["rtol"])

    def overrides(self, given: ToleranceOverrides) -> ToleranceOverrides:
        """The golden file's tolerance layers with those `given` now over them."""
        under = None
        for layer in self.meta["tolerance"]["overrides"]:
            under = ToleranceOverrides(layer["atol"], layer["rtol"], layer["device"], under)
        layers = []
        while given is not None:
            layers.append(given)
            given = given.under
        for layer in reversed(layers):
            under = ToleranceOverrides(layer.atol, layer.rtol, layer.device, under)
        return under or ToleranceOverrides()

    def describe(self) -> str:
        digest = self.meta.get("source_sha256")
        return f"golden {self.path.name} of {self.meta['source']}" + (f" (sha256 {digest[:12]})" if digest else "")


def check_saveable(options: ValidateOptions, sources: int, validate: bool) -> None:
    """Refuse a golden file that could not be written whole, before anything runs."""
    path = options.save_golden
    if path is None:
        return
    if not validate:
        raise UserError(f"{path}: a golden file keeps the sweep's outputs; it needs the parity sweep (drop "
                        "--no-validate)")
    if sources != 1:
        raise UserError(f"{path}: a golden file keeps one source's outputs; {sources} sources were given")
    if options.fail_fast:
        raise UserError(f"{path}: a golden file keeps the whole sweep; --fail-fast would cut it short")
    if path.exists() and not options.force_golden:
        raise OutputExistsError(path)
    check_writable(path, "golden file")


def sweep_of(options: ValidateOptions) -> dict[str, Any]:
    """The sweep as the golden file records it."""
    sweep = options.sweep
    return {"lengths": sweep.lengths, "batches": sweep.batches, "seed": sweep.seed, "chunks": sweep.chunks,
            "data": None if sweep.data is None else str(sweep.data)}


def save(path: Path, reference: ReferenceOutputs, *, source: str, digest: str | None, kind: str,
         inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], sweep: Mapping[str, Any],
         floor: Tolerance | None, overrides: ToleranceOverrides, min_length: int,
         versions: Mapping[str, str], force: bool) -> None:
    """Write the golden file whole, or not at all; an existing one only with `force`."""
    if path.exists() and not force:
        raise OutputExistsError(path)
    meta = {
        "format": FORMAT, "version": VERSION, "rnnexport_version": __version__,
        "source": source, "source_sha256": digest, "source_kind": kind,
        "inputs": [asdict(spec) for spec in inputs],
        "outputs": [{"name": o.name, "time_axis": o.time_axis} for o in outputs],
        "min_length": min_length,
        "sweep": dict(sweep),
        "reference_device": reference.device,
        "tolerance": {"floor": None if floor is None else floor.to_dict(),
                      "overrides": _layers(overrides)},
        "versions": dict(versions),
        "cases": [{**e.case.to_dict(), "method": e.method, "skipped": e.skipped} for e in reference.cases],
    }
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta, default=str))}
    for i, expected in enumerate(reference.cases):
        arrays.update({f"case{i}/input/{name}": value for name, value in expected.case.inputs.items()})
        arrays.update({f"case{i}/output/{name}": value for name, value in expected.outputs.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> Golden:
    """Read a golden file; a file that is not one is a one-line `UserError` naming it."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise UserError(f"{path}: not a golden file (not a readable .npz: {one_line(exc, typed=False)})") from None
    try:
        meta = json.loads(str(stored["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError("its meta is not rnnexport's")
        if meta.get("version") != VERSION:
            raise ValueError(f"version {meta.get('version')}; this rnnexport reads version {VERSION}")
        cases = []
        for i, case in enumerate(meta["cases"]):
            prefix = f"case{i}/"
            inputs = {k[len(prefix) + 6:]: v for k, v in stored.items() if k.startswith(prefix + "input/")}
            outputs = {k[len(prefix) + 7:]: v for k, v in stored.items() if k.startswith(prefix + "output/")}
            if not inputs and not case["skipped"]:
                raise ValueError(f"case {case['name']} has no inputs")
            cases.append(Expected(Case(case["name"], case["kind"], case["batch"], case["length"], inputs,
                                       case.get("chunk")), case["method"], outputs, case["skipped"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a golden file rnnexport can read ({one_line(exc, typed=False)}); "
                        "write one with --save-golden") from None
    return Golden(path, meta, ReferenceOutputs(f"{meta['reference_device']}, saved in {path.name}", tuple(cases)))
