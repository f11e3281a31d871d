"""Where `convert` writes each export, with which target options, checked before anything is
written: no two exports share a path, nothing existing is overwritten without `force`, every
target option is one its target declares, and every target asked to stream can."""

from __future__ import annotations

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


def _stem(source: Path | Any) -> str:
    if isinstance(source, Path):
        return source.name.split(".")[0] if source.is_file() or not source.exists() else source.name
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


def plan_exports(sources: SourceLike | Sequence[SourceLike], out: str | Path, options: ConvertOptions
                 ) -> list[PlannedSource]:
    """Each source with the exports `convert` would write, checked before anything is written."""
    items = [sources] if isinstance(sources, (str, Path)) or not isinstance(sources, Sequence) else list(sources)
    items = [as_source(s) for s in items]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    chosen = targets(options.targets)
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
        for target, main in export_paths(source, options.targets, out):
            for dest in target.files(main, streaming):
                if dest in seen:
                    raise UserError(f"{dest}: two sources would be exported to the same path; convert them separately")
                if dest.exists() and not options.force:
                    raise OutputExistsError(f"{dest}: already exists; pass --force to overwrite")
                seen.add(dest)
            exports.append(PlannedExport(target, main, settings[target.name]))
        plan.append(PlannedSource(source, label(source), tuple(exports)))
    return plan
