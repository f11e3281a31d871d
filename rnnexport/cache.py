"""A fleet's memory between runs: each model's result under a key of everything it depends on.

The key hashes the model's source files (and architecture, data, custom-object modules, and for
`validate` the exports), the options it is converted and checked with, and rnnexport's version.
An entry also holds the content hash of each export the run wrote, so that an export changed or
removed since makes the model run again.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport import settings
from rnnexport.config import ModelEntry
from rnnexport.errors import UserError, one_line
from rnnexport.version import __version__

if TYPE_CHECKING:
    from rnnexport.fleet import Outcome, Task

def _files(path: Path) -> list[Path]:
    """The files a path stands for: itself, everything under a directory, or those of a TF1
    checkpoint prefix (`model.ckpt` names `model.ckpt.index`, `model.ckpt.data-*`)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.exists():
        return [path]
    return sorted(p for p in path.parent.glob(f"{path.name}.*") if p.is_file())


def content_hash(path: Path) -> str:
    """The hash of what `path` holds (names relative to it, and bytes); 'missing' when nothing."""
    digest = hashlib.sha256()
    files = _files(path)
    if not files:
        return "missing"
    for each in files:
        digest.update(str(each.relative_to(path) if path.is_dir() else each.name).encode() + b"\0")
        with open(each, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _module_file(reference: str) -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(reference.partition(":")[0])
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin != "built-in" else None


def task_key(task: Task, exports: Sequence[Path], out: Path | None) -> str:
    """Everything the model's result depends on, hashed."""
    model, config = task.model, task.config
    source = settings.source_options(task.given, model)
    validation = settings.validate_options(task.given, config, model)
    parts: list[str] = [__version__, task.command, repr(source), repr(validation), repr(task.validate),
                        repr(settings.targets(task.given, config)), repr(task.export), str(out)]
    inputs = [model.source, source.architecture, validation.sweep.data,
              *(_module_file(c) for c in source.custom_objects), *(exports if task.command == "validate" else ())]
    parts += [f"{p}={content_hash(p)}" for p in inputs if p is not None]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class Cache:
    """One entry per model and command: `<command>-<hash of source and out>.pickle`, written whole
    or not at all. Entries are pickles (they hold report objects): the directory is trusted as
    the config file beside it is, whose writer can change the models anyway."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, command: str, model: ModelEntry, out: Path | None) -> Path:
        slot = hashlib.sha256(f"{model.source.resolve()}\n{out}".encode()).hexdigest()[:24]
        return self.directory / f"{command}-{slot}.pickle"

    def load(self, command: str, model: ModelEntry, out: Path | None) -> tuple[str, Outcome] | None:
        path = self._path(command, model, out)
        try:
            with open(path, "rb") as handle:
                version, key, outcome = pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
            return None
        return (key, outcome) if version == __version__ else None

    def save(self, command: str, model: ModelEntry, out: Path | None, key: str, outcome: Outcome) -> None:
        path = self._path(command, model, out)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(pickle.dumps((__version__, key, outcome)))
            tmp.replace(path)
        except OSError as exc:
            raise UserError(f"{path}: cannot write the fleet cache ({exc.strerror or one_line(exc)})") from None


def intact(outcome: Outcome) -> bool:
    """Every export the cached run wrote is still there, byte for byte."""
    return all(content_hash(Path(path)) == digest for path, digest in outcome.hashes.items())
