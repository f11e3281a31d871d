"""Where `convert` writes each export, with which target options, checked before anything is
written: no two exports share a path, nothing existing is overwritten without `force`, every
target option is one its target declares, every target asked to stream can, and the directory
can be created and written.

`--out` is a directory, or, ending in a target's suffix (`exports/m.onnx`) with one source and
that one target, the export's own path."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexport import plugins, target_options
from rnnexport.errors import OutputExistsError, UserError
from rnnexport.options import ConvertOptions, ExportOptions
from rnnexport.plugins import Target

SourceLike = str | Path | Any


def as_source(source: SourceLike) -> Path | Any:
    return Path(source) if isinstance(source, str) else source


def label(source: Path | Any) -> str:
    """How reports name a source: its path, or the type and name of an in-memory model."""
    return str(source) if isinstance(source, Path) else f"<{type(source).__name__} {getattr(source, 'name', '')}>"


# A TF1 Saver's files: `<prefix>.index`, `.meta`, `.data-*`; its prefix may end in `-<step>`.
_CHECKPOINT_FILE = re.compile(r"\.(meta|index|data-\d+-of-\d+)$")


def _checkpoint_stem(source: Path) -> str | None:
    """`<folder>-<step>` (`<folder>` without a step) for a TF1 checkpoint prefix or one of its
    files, None for anything else: every Saver names its files `model.ckpt-<step>`, so the folder
    tells models apart and the step tells a model's checkpoints apart."""
    prefix = _CHECKPOINT_FILE.sub("", source.name)
    if not any((source.parent / f"{prefix}{ext}").is_file() for ext in (".index", ".meta")):
        return None
    folder = source.resolve().parent.name or "model"
    step = re.search(r"-(\d+)$", prefix)
    return f"{folder}-{step.group(1)}" if step else folder


def _stem(source: Path | Any) -> str:
    if isinstance(source, Path):
        if source.is_dir():
            return source.name
        return _checkpoint_stem(source) or source.name.split(".")[0]
    return getattr(source, "name", None) or "model"


def targets(names: Sequence[str]) -> list[Target]:
    """The target plugins named (or every one for `all`), each once, in the order given."""
    if "all" in names:
        return plugins.targets()
    chosen = []
    for name in names:
        target = plugins.get_target(name)
        if target not in chosen:
            chosen.append(target)
    return chosen


def export_paths(source: SourceLike, names: Sequence[str], out: str | Path) -> list[tuple[Target, Path]]:
    """Where `convert` writes `source` for each target named (or `all`): `out/<stem><suffix>`."""
    stem = _stem(as_source(source))
    return [(t, Path(out) / f"{stem}{t.suffix}") for t in targets(names)]


@dataclass(frozen=True)
class PlannedExport:
    """One export to write: the target, its path, and the target's checked options."""

    target: Target
    path: Path
    options: Any


@dataclass(frozen=True)
class PlannedSource:
    source: Path | Any
    label: str
    exports: tuple[PlannedExport, ...]


@dataclass(frozen=True)
class Plan:
    """The directory every export is written in, and each source's exports."""

    directory: Path
    sources: tuple[PlannedSource, ...]

    def __iter__(self) -> Any:
        return iter(self.sources)


def check_writable(path: Path, what: str, directory: bool = False) -> None:
    """Refuse a path that cannot be created or overwritten as a file (as a directory with
    `directory`): a regular file on the way, or a directory this process may not write in.
    Nothing is created."""
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        if parent == path and parent.is_dir() != directory:
            raise UserError(f"{path}: exists and is {'not ' if directory else ''}a directory; the {what} "
                            f"{'go in a directory' if directory else 'is a file'}")
        if parent != path and not parent.is_dir():
            raise UserError(f"{path}: cannot write the {what} here: {parent} is a file, not a directory")
        writable = parent if parent.is_dir() else parent.parent
        if not os.access(writable, os.W_OK | os.X_OK):
            raise UserError(f"{path}: cannot write the {what} here: no permission to write in {writable}")
        return


def _named(out: Path, items: Sequence[Any], chosen: Sequence[Target]) -> Target | None:
    """The target whose export `out` names by its suffix (None: `out` is a directory)."""
    named = [t for t in plugins.targets() if t.suffix and out.name.endswith(t.suffix) and out.name != t.suffix]
    if not named:
        return None
    target = named[0]
    if len(items) != 1 or [t.name for t in chosen] != [target.name]:
        raise UserError(f"{out}: ends in '{target.suffix}', so it names one {target.name} export; with "
                        f"{len(items)} source(s) and target(s) {', '.join(t.name for t in chosen)}, give a directory "
                        "for --out instead")
    return target


def target_settings(chosen: Sequence[Target], options: ExportOptions) -> dict[str, Any]:
    """Each chosen target's options, checked against what it declares; options for a target that
    is not installed are refused (options for an installed target not chosen are checked too)."""
    installed = {t.name: t for t in plugins.targets()}
    unknown = sorted(set(options.target_options) - set(installed))
    if unknown:
        raise UserError(f"options given for target '{unknown[0]}', which is not installed; targets: "
                        f"{', '.join(sorted(installed))}")
    checked = {name: target_options.settings(name, installed[name].Options, values)
               for name, values in options.target_options.items()}
    return {t.name: checked.get(t.name) or target_options.settings(t.name, t.Options, {}) for t in chosen}


def plan_exports(sources: SourceLike | Sequence[SourceLike], out: str | Path, options: ConvertOptions) -> Plan:
    """Each source with the exports `convert` would write, checked before anything is written."""
    items = [sources] if isinstance(sources, (str, Path)) or not isinstance(sources, Sequence) else list(sources)
    items = [as_source(s) for s in items]
    out = Path(out)
    chosen = targets(options.targets)
    named = _named(out, items, chosen)
    directory = out.parent if named else out
    check_writable(directory, "exports", directory=True)
    streaming = options.export.streaming
    if streaming:
        for target in chosen:
            if not target.streams:
                raise UserError(f"target '{target.name}' cannot write streaming entry points; leave it out of --to")
    settings = target_settings(chosen, options.export)
    plan: list[PlannedSource] = []
    seen: set[Path] = set()
    for source in items:
        exports = []
        paths = [(named, out)] if named else export_paths(source, options.targets, out)
        for target, main in paths:
            for dest in target.files(main, streaming):
                if dest in seen:
                    raise UserError(f"{dest}: two sources would be exported to the same path; convert them separately")
                if dest.exists() and not options.force:
                    raise OutputExistsError(dest)
                seen.add(dest)
            exports.append(PlannedExport(target, main, settings[target.name]))
        plan.append(PlannedSource(source, label(source), tuple(exports)))
    return Plan(directory, tuple(plan))


# Temporary entries in the output directory: `.rnnexport-<pid>-<random>` while an export is being
# written, `.rnnexport-<pid>-old-<name>` while a previous export is being replaced. A later run
# removes those whose process is gone (killed), putting a replaced export back if its
# replacement never arrived.
TEMPORARY = ".rnnexport-"
LOCK = ".rnnexport.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(entry: Path) -> int | None:
    pid = entry.name.removeprefix(TEMPORARY).split("-")[0]
    return int(pid) if pid.isdigit() else None


class Writing:
    """The output directory while one run writes in it: locked against other runs (a second one
    is refused), the leftovers of killed runs removed, exports built in temporary directories
    and moved into place whole.

        with Writing(plan.directory) as writing:
            with writing.temporary() as tmp:
                ...
                writing.install(tmp / "m.onnx", plan.directory / "m.onnx", force)
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock: int | None = None
        self.created = not directory.exists()

    def __enter__(self) -> Writing:
        import fcntl

        from rnnexport.errors import OutputBusyError

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.directory}: cannot create the output directory ({exc.strerror})") from None
        path = self.directory / LOCK
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = path.read_text().strip() if path.exists() else "?"
                raise OutputBusyError(f"{self.directory}: another rnnexport run (process {owner}) is writing here; "
                                      "wait for it to finish, or give another --out") from None
            # A run that finished between our open and our lock removed the file we hold.
            if path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.lock = fd
        self._remove_stale()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lock is not None:
            (self.directory / LOCK).unlink(missing_ok=True)
            os.close(self.lock)
            self.lock = None
        # A run that wrote nothing leaves no directory of its own behind.
        if self.created and not any(self.directory.iterdir()):
            self.directory.rmdir()

    def _remove_stale(self) -> None:
        import shutil

        for entry in sorted(self.directory.glob(f"{TEMPORARY}*")):
            owner = _owner(entry)
            if owner is None or owner == os.getpid() or _alive(owner):
                continue
            replaced = entry.name.partition("-old-")[2]
            if replaced and not (self.directory / replaced).exists():
                entry.rename(self.directory / replaced)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def temporary(self) -> Any:
        import tempfile

        return tempfile.TemporaryDirectory(dir=self.directory, prefix=f"{TEMPORARY}{os.getpid()}-")

    def install(self, built: Path, dest: Path, force: bool) -> None:
        """Move a complete export into place; an existing one is removed only after that succeeds."""
        import shutil

        old = None
        if dest.exists() or dest.is_symlink():
            if not force:
                raise OutputExistsError(dest)
            old = dest.with_name(f"{TEMPORARY}{os.getpid()}-old-{dest.name}")
            dest.rename(old)
        built.rename(dest)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
