"""Options a target declares for itself, as a frozen dataclass whose fields are made with `option`.

The declaration is the only place an option is spelled: the API passes values by name
(`ExportOptions(target_options={"tflite": {"batch": 2}})`), the command line gets one flag per
option, and both are checked here against the declaration before anything is exported.

    >>> @dataclass(frozen=True)
    ... class EchoOptions:
    ...     level: int = option(1, "How loud.", minimum=0, maximum=9)
    >>> settings("echo", EchoOptions, {"level": 3})
    EchoOptions(level=3)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from rnnexport.errors import UserError

METADATA_KEY = "rnnexport.option"


@dataclass(frozen=True)
class OptionSpec:
    """What the command line and the checks need to know of one option. `kind` is `bool`, `int`,
    `float` or `str`; `flag` defaults to `--<name>` with dashes."""

    help: str
    kind: type
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    flag: str | None = None


def option(default: Any, help: str, *, kind: type | None = None, choices: tuple[str, ...] = (),
           minimum: int | None = None, maximum: int | None = None, flag: str | None = None) -> Any:
    """A field of a target's options dataclass. `kind` is taken from `default` unless given
    (give it where the default is None)."""
    spec = OptionSpec(help, kind or type(default), choices, minimum, maximum, flag)
    if spec.kind not in (bool, int, float, str):
        raise TypeError(f"an option's kind is bool, int, float or str, not {spec.kind.__name__}")
    return field(default=default, metadata={METADATA_KEY: spec})


@dataclass(frozen=True)
class NoOptions:
    """The options of a target that declares none."""


@dataclass(frozen=True)
class Declared:
    """One option of one target, as the command line offers it."""

    target: str
    name: str
    default: Any
    spec: OptionSpec

    @property
    def flag(self) -> str:
        return self.spec.flag or "--" + self.name.replace("_", "-")


def declared(target: str, options_type: type) -> list[Declared]:
    return [Declared(target, f.name, f.default, f.metadata[METADATA_KEY])
            for f in fields(options_type) if METADATA_KEY in f.metadata]


def _checked(target: str, item: Declared, value: Any) -> Any:
    spec, where = item.spec, f"target '{target}' option '{item.name}'"
    if value is None and item.default is None:
        return None
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if spec.kind in (int, float):
        if not isinstance(value, spec.kind if spec.kind is int else (int, float)) or isinstance(value, bool):
            raise UserError(f"{where}: expected {'an integer' if spec.kind is int else 'a number'}, got {value!r}")
        low = "" if spec.minimum is None else f"{spec.minimum}"
        high = "" if spec.maximum is None else f"{spec.maximum}"
        if (spec.minimum is not None and value < spec.minimum) or (spec.maximum is not None and value > spec.maximum):
            bounds = f"from {low} to {high}" if low and high else f">= {low}" if low else f"<= {high}"
            raise UserError(f"{where}: {value} is out of range; expected {bounds}")
        return value
    if not isinstance(value, str):
        raise UserError(f"{where}: expected a string, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise UserError(f"{where}: '{value}' is not supported; supported are: {', '.join(spec.choices)}")
    return value


def settings(target: str, options_type: type, values: Mapping[str, Any]) -> Any:
    """The options of `target` from `values` keyed by option name, each checked against the
    declaration; what is not given keeps its declared default."""
    known = {item.name: item for item in declared(target, options_type)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        names = ", ".join(sorted(known)) or "none"
        raise UserError(f"target '{target}' has no option '{unknown[0]}'; its options are: {names}")
    return options_type(**{name: _checked(target, known[name], value) for name, value in values.items()})
