"""What `inspect` and `plugins` print: the facts as lines, the lists as rich tables drawn as the
reports draw theirs (`rnnexport.console.table`). Their `--json` output does not come from here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rnnexport.console import render, table

if TYPE_CHECKING:
    from rnnexport.exported import ExportContents
    from rnnexport.model import SourceInfo
    from rnnexport.plugins import PluginEntry


def _row(rows: Any, *cells: str) -> None:
    """Add a row of plain text: shapes such as `[batch, time, 6]` are not rich markup."""
    from rich.text import Text

    rows.add_row(*(Text(cell) for cell in cells))


def _indented(text: str) -> list[str]:
    return [f"  {line}" for line in text.splitlines()]


def source_text(info: SourceInfo, targets: Iterable[str]) -> str:
    """`inspect` of a source: what it takes and gives, its length, its layers, what blocks an export."""
    lines = [f"{info.path}: {info.kind} source, {info.format}",
             "inputs:   " + "; ".join(t.describe() for t in info.inputs),
             "outputs:  " + "; ".join(t.describe() for t in info.outputs),
             f"length:   {'fixed at ' + str(info.fixed_length) if info.fixed_length else 'any'}"
             f"  ({'causal' if info.causal else 'not causal'})",
             "layers:"]
    layers = table("name", "kind", "units", "direction", "details")
    for layer in info.layers:
        _row(layers, layer.name, layer.kind, "" if layer.units is None else str(layer.units), layer.direction or "",
                       "  ".join(f"{k}={v}" for k, v in layer.details.items()))
    lines += _indented(render(layers))
    lines += [f"note:     {note}" for note in info.notes]
    if info.exportable:
        lines.append(f"exportable to: {', '.join(targets)}")
    lines += [f"cannot export: {problem}" for problem in info.problems]
    return "\n".join(lines)


def export_text(contents: ExportContents) -> str:
    """`inspect` of an export: its entry points tensor by tensor, its recurrent ops, batch policy,
    streaming states and the parity stored in it."""
    from rnnexport.exported import summary

    lines = [f"{contents.path}: {contents.target} export" + (f" of {contents.source}" if contents.source else "")]
    entries = table("entry point", "file", "io", "tensor")
    for entry in contents.entry_points:
        ports = [("input", port) for port in entry.inputs] + [("output", port) for port in entry.outputs]
        for index, (kind, port) in enumerate(ports):
            _row(entries, entry.name if index == 0 else "", entry.file if index == 0 else "", kind,
                            port.describe())
    lines += render(entries).splitlines()
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(contents.recurrent_ops.items()))
    lines.append(f"recurrent ops: {ops or 'none'}")
    lines.append(f"batch: {contents.batch}")
    if contents.states:
        lines.append("streaming states (step input <name>, returned as <name>_next):")
        states = table("state", "per row", "holds")
        for state in contents.states:
            _row(states, state.name, f"[{', '.join(map(str, state.shape))}]", state.holds)
        lines += _indented(render(states))
    else:
        lines.append("streaming: no step entry point")
    stored = summary(contents.parity) if contents.parity else "none stored (convert stores one when it validates)"
    lines.append(f"parity: {stored}")
    lines += [f"note: {note}" for note in contents.notes]
    return "\n".join(lines)


def plugins_text(entries: Sequence[PluginEntry], groups: Sequence[tuple[str, str]]) -> str:
    """`plugins`: one row per installed plugin, by kind (`groups`: (kind, entry-point group)); a
    plugin that fails to load says why instead of what it does."""
    plugins = table("kind", "name", "what it does", "entry point")
    for kind, group in groups:
        for e in (e for e in entries if e.group == group):
            _row(plugins, kind, e.name, f"BROKEN: {e.error}" if e.broken else e.plugin.description,
                            f"{e.value} from {e.distribution or '?'}")
    return render(plugins)
