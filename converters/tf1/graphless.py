"""A Saver checkpoint saved without a graph, its architecture named by the user: which of its
variables are each layer's weights, the start state and the output head.

The oldest advice for saving an RNN was to save only the cell's variables and rebuild the
unrolled graph at load time, so nothing in the checkpoint says how they connect. Variables are
found by the names TF1 cells give them (`.../lstm_cell/kernel`, `gru_cell/gates/kernel` and
`candidate/kernel`, TF 1.0's `weights`/`biases`, TF 0.x's `Linear/Matrix`/`Bias`) and by the
shapes the named layers need (an LSTM of u units over F features has a kernel [F + u, 4u]).
Anything that fits more than one way, or a recurrent-looking variable left over, is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from rnnexport_converters.tf1.cellspec import CellSpec
from rnnexport.errors import SourceError, UnsupportedModelError, one_line

# TF >= 1.2, TF 1.0 (`_linear`), TF 0.x (`Linear/Matrix`; its LSTMCell a one-shard `W_0` and `B`).
KERNELS = ("kernel", "weights", "Matrix", "W_0")
BIASES = ("bias", "biases", "Bias", "B")
# Optimizer slots, step counters and moving averages: saved beside a model, never part of it.
BOOKKEEPING = re.compile(r"(^|/)(global_step|beta[12]_power|_CHECKPOINTABLE_OBJECT_GRAPH)$|"
                         r"/(Adam|Momentum|Adagrad|AdagradDA|RMSProp|Ftrl|Adadelta|ExponentialMovingAverage)(_\d+)?$")
# The scopes TF1 cell classes create, by the kind of cell they compute.
CELL_SCOPES = {"basic_lstm_cell": "lstm", "lstm_cell": "lstm", "BasicLSTMCell": "lstm", "LSTMCell": "lstm",
               "gru_cell": "gru", "GRUCell": "gru", "basic_rnn_cell": "rnn", "BasicRNNCell": "rnn"}
# Scopes that only hold recurrent cells: a variable under one of these is recurrent-looking.
RNN_SCOPES = re.compile(r"(^|/)(rnn|RNN|multi_rnn_cell|MultiRNNCell|cell_\d+|Cell\d+|"
                        + "|".join(CELL_SCOPES) + r")(/|$)")
INITIAL = re.compile(r"^(init|initial|start)(_?(state|states|h|c|hidden|cell))?(_?\d+)?$|^[hc]_?0$", re.I)
EMBEDDING = re.compile(r"embed", re.I)
LISTED = 16
PEEPHOLES = ("w_i_diag", "w_f_diag", "w_o_diag")


@dataclass(frozen=True)
class Variables:
    """The model variables of a checkpoint (bookkeeping left out), by name: their shapes."""

    prefix: Path
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def read(cls, prefix: Path) -> Variables:
        from rnnexport.tf import tensorflow

        tf = tensorflow()
        try:
            listed = tf.train.list_variables(str(prefix))
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types for bad files
            raise SourceError(f"{prefix}: TensorFlow cannot read this checkpoint: "
                              f"{one_line(exc, typed=False)}") from None
        return cls.of(prefix, listed)

    @classmethod
    def of(cls, prefix: Path, listed: list[tuple[str, list[int]]]) -> Variables:
        """From (name, shape) pairs as `tf.train.list_variables` gives them."""
        return cls(prefix, {name: tuple(shape) for name, shape in listed if not BOOKKEEPING.search(name)})

    def listing(self, names: list[str] | None = None) -> str:
        """`name [shape]` for the variables (all, or `names`), truncated to a readable number."""
        names = sorted(self.shapes if names is None else names)
        shown = [f"{n} {list(self.shapes[n])}" for n in names[:LISTED]]
        more = f", ... ({len(names) - LISTED} more)" if len(names) > LISTED else ""
        return ", ".join(shown) + more if shown else "no model variables"


@dataclass(frozen=True)
class FoundLayer:
    """One named layer and the checkpoint variables that hold its weights, by role (`kernel`,
    `bias`; a GRU's `candidate_kernel`, `candidate_bias`; an LSTMCell's `projection` and peepholes
    `w_i_diag`, `w_f_diag`, `w_o_diag`). `output_size` is the projection's width, else the units."""

    spec: CellSpec
    input_size: int
    output_size: int
    names: dict[str, str]
    initial: dict[str, str] = field(default_factory=dict)  # role (c, h or ch) -> variable

    @property
    def scope(self) -> str:
        scope = _scope(self.names["kernel"])
        return scope.rsplit("/", 1)[0] if self.spec.kind == "gru" else scope


@dataclass(frozen=True)
class Mapping:
    """What each variable of the checkpoint is: layers first to last, a head, the rest unused."""

    layers: list[FoundLayer]
    head: tuple[str, str] | None
    embedding: str | None
    unused: list[str]

    @property
    def features(self) -> int:
        return self.layers[0].input_size


def _state_sizes(layer: FoundLayer) -> tuple[int, ...]:
    """The sizes a start-state variable of `layer` may have: c, h, or an LSTM's (c, h) together."""
    u, out = layer.spec.units, layer.output_size
    return (u, out, u + out) if layer.spec.kind == "lstm" else (u,)


def _scope(name: str) -> str:
    """The scope a weight belongs to: TF 0.x put every cell's weights under `Linear/`."""
    scope = name.rsplit("/", 1)[0] if "/" in name else ""
    return scope[: -len("/Linear")] if scope.endswith("/Linear") else scope


def _last(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _cell_index(name: str) -> int | None:
    """The layer a `MultiRNNCell` put a variable in (`cell_1`, TF 0.x's `Cell1`)."""
    found = re.search(r"(?:^|/)(?:cell_|Cell)(\d+)(?:/|$)", name)
    return int(found.group(1)) if found else None


def _named_kind(name: str) -> str | None:
    """The kind of cell a variable's scope names, where it names one."""
    return next((CELL_SCOPES[p] for p in name.split("/") if p in CELL_SCOPES), None)


class _Matcher:
    def __init__(self, variables: Variables, specs: list[CellSpec], head_wanted: bool | None) -> None:
        self.variables = variables
        self.shapes = variables.shapes
        self.specs = specs
        self.head_wanted = head_wanted
        self.claimed: set[str] = set()

    def refuse(self, problem: str, error: type = UnsupportedModelError) -> NoReturn:
        raise error(f"{self.variables.prefix}: {problem}; the checkpoint holds {self.variables.listing()}")

    def _bias(self, kernel: str, size: int) -> str | None:
        """The bias beside `kernel` (`.../kernel` and `.../bias`, `Linear/Matrix` and `Linear/Bias`)."""
        parent = kernel.rsplit("/", 1)[0] if "/" in kernel else ""
        for name in (f"{parent}/{b}" if parent else b for b in BIASES):
            if self.shapes.get(name) == (size,) and name not in self.claimed:
                return name
        return None

    def _kernels(self, columns: int, kind: str) -> list[str]:
        """Unclaimed kernels of `columns` columns whose scope names no other kind of cell."""
        return [name for name, shape in self.shapes.items()
                if name not in self.claimed and _last(name) in KERNELS and len(shape) == 2 and shape[1] == columns
                and _named_kind(name) in (None, kind)]

    def _lstm_extras(self, kernel: str, units: int) -> dict[str, str]:
        """An LSTMCell's peepholes (all three) and projection, beside its kernel (TF 0.x spelled
        them `W_F_diag` and `W_P_0`)."""
        parent = kernel.rsplit("/", 1)[0] + "/" if "/" in kernel else ""
        extras = {}
        for role in PEEPHOLES:
            spellings = (parent + role, f"{parent}W_{role[2].upper()}_diag")
            extras.update({role: name for name in spellings if self.shapes.get(name) == (units,)})
        if len(extras) != len(PEEPHOLES):
            extras = {}
        spellings = [parent + f"projection/{k}" for k in KERNELS] + [parent + "W_P_0"]
        projection = next((name for name in spellings if len(self.shapes.get(name, ())) == 2), None)
        if projection and self.shapes[projection][0] == units and projection not in self.claimed:
            extras["projection"] = projection
        return extras

    def _candidates(self, spec: CellSpec, previous: int | None) -> list[tuple[dict[str, str], int]]:
        """(weights by role, output size) of each set of variables that fits `spec` after a layer
        of `previous` outputs (None: the first layer, any input size)."""
        u = spec.units
        found = []
        for kernel in self._kernels(spec.gates * u, spec.kind):
            bias = self._bias(kernel, spec.gates * u)
            if bias is None:
                continue
            names, out, rows = {"kernel": kernel, "bias": bias}, u, self.shapes[kernel][0]
            if spec.kind == "lstm":
                names.update(self._lstm_extras(kernel, u))
                out = self.shapes[names["projection"]][1] if "projection" in names else u
            # The kernel multiplies concat([input, the fed-back output]).
            if (rows <= out) if previous is None else (rows != previous + out):
                continue
            if spec.kind == "gru":
                scope = _scope(kernel)
                if _last(scope).lower() != "gates":
                    continue
                candidate = [k for k in self._kernels(u, "gru") if self.shapes[k][0] == rows
                             and _scope(k).rsplit("/", 1)[0] == scope.rsplit("/", 1)[0]
                             and _last(_scope(k)).lower() == "candidate"]
                if len(candidate) != 1 or self._bias(candidate[0], u) is None:
                    continue
                names.update(candidate_kernel=candidate[0], candidate_bias=self._bias(candidate[0], u))
            found.append((names, out))
        return found

    def layer(self, index: int, spec: CellSpec, previous: int | None) -> FoundLayer:
        found = self._candidates(spec, previous)
        if len(found) > 1:
            # A MultiRNNCell numbers its layers; two cells of the same shape are told apart so.
            found = [f for f in found if _cell_index(f[0]["kernel"]) == index] or found
        where = f"layer {index} ({spec})"
        if not found:
            extra = " and a candidate kernel beside it" if spec.kind == "gru" else ""
            self.refuse(f"no variables fit {where}: it needs a kernel [{previous or 'F'} + {spec.units}, "
                        f"{spec.gates * spec.units}] with its bias{extra}{self._hint()}; check --cell")
        if len(found) > 1:
            kernels = [f[0]["kernel"] for f in found]
            self.refuse(f"{where} could be any of {len(found)} kernels ({', '.join(kernels)}); rnnexport will not "
                        "guess which")
        names, out = found[0]
        self.claimed.update(names.values())
        return FoundLayer(spec, self.shapes[names["kernel"]][0] - out, out, names)

    def _hint(self) -> str:
        """What the unclaimed kernels under a TF1 cell's scope would fit."""
        gates = {"lstm": 4, "gru": 2, "rnn": 1}
        fits = [f"{name} {list(shape)} is {kind}:{shape[1] // gates[kind]}"
                for name, shape in sorted(self.shapes.items())
                if name not in self.claimed and len(shape) == 2 and _last(name) in KERNELS
                and (kind := _named_kind(name)) and not (kind == "gru" and _last(_scope(name)).lower() == "candidate")]
        return f" ({'; '.join(fits)})" if fits else ""

    def embedding(self, features: int) -> str | None:
        """The variable an `embedding_lookup` before the first layer read: the one unclaimed
        [vocabulary, F] variable named like an embedding."""
        found = [n for n, shape in self.shapes.items() if n not in self.claimed and len(shape) == 2
                 and shape[1] == features and EMBEDDING.search(_last(n))]
        if len(found) > 1:
            self.refuse(f"{len(found)} embeddings could feed layer 0 ({', '.join(found)}); rnnexport will not guess "
                        "which")
        if found:
            self.claimed.add(found[0])
        return found[0] if found else None

    def initial_states(self, layers: list[FoundLayer]) -> list[FoundLayer]:
        """The layers with the start-state variables that belong to them."""
        chosen: dict[int, dict[str, str]] = {}
        for name in sorted(n for n in self.shapes if n not in self.claimed and INITIAL.match(_last(n))):
            size = int(np.prod(self.shapes[name]))
            fits = [i for i, layer in enumerate(layers) if size in _state_sizes(layer)]
            index = _cell_index(name)
            digits = re.search(r"(\d+)$", _last(name))
            if index is None and digits and not re.match(r"^[hc]_?0$", _last(name)):
                index = int(digits.group(1))
            if index is not None:
                fits = [i for i in fits if i == index]
            if len(fits) != 1:
                self.refuse(f"start-state variable '{name}' {list(self.shapes[name])} fits "
                            f"{'no' if not fits else 'more than one'} layer of {', '.join(map(str, self.specs))}")
            layer = layers[fits[0]]
            role = self._state_role(name, layer, size)
            roles = chosen.setdefault(fits[0], {})
            if role in roles or ("ch" in roles and role != "ch") or (role == "ch" and roles):
                self.refuse(f"layer {fits[0]} has more than one start state ('{name}' and "
                            f"'{next(iter(roles.values()))}')")
            roles[role] = name
            self.claimed.add(name)
        return [FoundLayer(layer.spec, layer.input_size, layer.output_size, layer.names, chosen.get(i, {}))
                for i, layer in enumerate(layers)]

    def _state_role(self, name: str, layer: FoundLayer, size: int) -> str:
        """Which state a start-state variable holds: by its size, else by its name (c0, h0)."""
        u, out = layer.spec.units, layer.output_size
        if layer.spec.kind != "lstm":
            return "h"
        if size == u + out:
            return "ch"  # an LSTMStateTuple's (c, h), concatenated
        last = _last(name).lower()
        if re.match(r"^(c_?0|(init|initial|start)_?(c|cell)(_?\d+)?)$", last) and size == u:
            return "c"
        if re.match(r"^(h_?0|(init|initial|start)_?(h|hidden)(_?\d+)?)$", last) and size == out:
            return "h"
        if u != out:
            return "c" if size == u else "h"
        self.refuse(f"start-state variable '{name}' {list(self.shapes[name])} could be the LSTM's c or h; "
                    "name it c0/h0 (initial_c/initial_h), or save both as one [c, h] vector")

    def head(self, units: int) -> tuple[str, str] | None:
        """(kernel, bias) of a dense head [units, K] + [K] after the last layer, where one fits."""
        pairs = []
        for name, shape in self.shapes.items():
            if name in self.claimed or len(shape) != 2 or shape[0] != units or RNN_SCOPES.search(name):
                continue
            last = _last(name)
            names = [f"{name.rsplit('/', 1)[0]}/{b}" if "/" in name else b for b in BIASES] if last in KERNELS else []
            for suffix, bias in (("_w", "_b"), ("_W", "_b"), ("W", "b"), ("w", "b")):
                if last.endswith(suffix):
                    names.append(name[: -len(suffix)] + bias)
            bias = next((b for b in names if self.shapes.get(b) == (shape[1],) and b not in self.claimed), None)
            if bias is not None:
                pairs.append((name, bias))
        if len(pairs) > 1:
            self.refuse(f"{len(pairs)} dense heads could follow the last layer "
                        f"({', '.join(k for k, _ in pairs)}); rnnexport will not guess which")
        if self.head_wanted and not pairs:
            self.refuse(f"the architecture ends in a Dense layer, but no kernel [{units}, K] with a bias [K] is "
                        "left for it")
        if pairs and self.head_wanted is False:
            return None
        if pairs:
            self.claimed.update(pairs[0])
        return pairs[0] if pairs else None


def find(variables: Variables, specs: list[CellSpec], head_wanted: bool | None = None,
         embedding_wanted: bool | None = None) -> Mapping:
    """Which variables are which. `head_wanted`: None takes a dense head where one fits, True
    requires one, False takes none; `embedding_wanted` likewise for an embedding."""
    matcher = _Matcher(variables, specs, head_wanted)
    if not variables.shapes:
        matcher.refuse("the checkpoint holds no model variables", error=SourceError)
    layers: list[FoundLayer] = []
    for index, spec in enumerate(specs):
        layers.append(matcher.layer(index, spec, layers[-1].output_size if layers else None))
    layers = matcher.initial_states(layers)
    embedding = matcher.embedding(layers[0].input_size) if embedding_wanted is not False else None
    if embedding_wanted and embedding is None:
        matcher.refuse(f"the architecture starts with an Embedding, but no variable [V, {layers[0].input_size}] "
                       "named like an embedding is left for it")
    head = matcher.head(layers[-1].output_size)
    left = sorted(n for n in variables.shapes if n not in matcher.claimed)
    recurrent = [n for n in left if RNN_SCOPES.search(n) or len(variables.shapes[n]) == 2
                 or _last(n) in KERNELS + BIASES]
    if recurrent:
        matcher.refuse(f"{', '.join(recurrent[:LISTED])} belong{'s' if len(recurrent) == 1 else ''} to no layer of "
                       f"{', '.join(map(str, specs))}, and rnnexport does not guess what "
                       f"{'they compute' if len(recurrent) > 1 else 'it computes'} (a layer missing from the "
                       "architecture, or weights of a kind it does not read?)")
    return Mapping(layers, head, embedding, left)
