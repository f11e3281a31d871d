"""The architecture a user names for a checkpoint saved without a graph: one `KIND:UNITS` per
recurrent layer (`lstm:64`, `GRUCell:128`), optionally followed by `:key=value` settings the
checkpoint cannot hold (`lstm:64:forget_bias=0.5`, `LSTMCell:64:cell_clip=3`,
`rnn:32:activation=relu`)."""

from __future__ import annotations

from dataclasses import dataclass

from rnnexport.errors import UserError

# Spellings of each kind, lower-cased: short names and the TF1 cell classes that compute it.
KINDS = {
    "lstm": "lstm", "basiclstmcell": "lstm", "lstmcell": "lstm", "lstmblockcell": "lstm",
    "gru": "gru", "grucell": "gru",
    "rnn": "rnn", "simplernn": "rnn", "basicrnncell": "rnn",
}
ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear")
# What an LSTM computes with that Saver does not store: added or applied at run time.
LSTM_SETTINGS = ("forget_bias", "activation", "cell_clip", "proj_clip")
EXAMPLES = {"lstm": "lstm:64", "gru": "gru:128", "rnn": "rnn:32"}


@dataclass(frozen=True)
class CellSpec:
    """One recurrent layer: its kind (`lstm`, `gru`, `rnn`), units, the name it was given by
    (`lstm`, `LSTMBlockCell`, a Keras class), and the run-time constants a Saver checkpoint does
    not store."""

    kind: str
    units: int
    title: str
    forget_bias: float = 1.0
    activation: str = "tanh"
    cell_clip: float | None = None
    proj_clip: float | None = None

    @property
    def gates(self) -> int:
        """Columns of the kernel per unit: LSTM 4 (i, j, f, o), GRU 2 (r, u; the candidate has
        its own kernel), RNN 1."""
        return {"lstm": 4, "gru": 2, "rnn": 1}[self.kind]

    def __str__(self) -> str:
        return f"{self.title}:{self.units}"


def _setting(text: str, item: str, kind: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    known = LSTM_SETTINGS if kind == "lstm" else ("activation",)
    if not sep or key not in known:
        raise UserError(f"cell spec '{text}': unknown setting '{item}'; settings are "
                        f"{', '.join(k + '=' for k in known)}")
    if key == "activation":
        if value not in ACTIVATIONS:
            raise UserError(f"cell spec '{text}': activation '{value}' is not one of {', '.join(ACTIVATIONS)}")
        return key, value
    try:
        return key, float(value)
    except ValueError:
        raise UserError(f"cell spec '{text}': {key} must be a number; e.g. {kind}:64:{key}=0.5") from None


def parse_one(text: str) -> CellSpec:
    """One layer's spec, or a one-line `UserError` saying what is wrong and giving an example."""
    name, _, rest = text.strip().partition(":")
    kind = KINDS.get(name.lower())
    if kind is None:
        raise UserError(f"cell spec '{text}': unknown cell '{name}'; known: lstm, gru, rnn, BasicLSTMCell, "
                        "LSTMCell, LSTMBlockCell, GRUCell, BasicRNNCell; e.g. lstm:64")
    units, *settings = rest.split(":") if rest else [""]
    if not units.strip().isdigit() or int(units) <= 0:
        raise UserError(f"cell spec '{text}': units must be a positive integer; e.g. {EXAMPLES[kind]}")
    values = dict(_setting(text, item, kind) for item in settings)
    return CellSpec(kind, int(units), name, **values)


def parse(texts: tuple[str, ...]) -> list[CellSpec]:
    """The layers, first to last, from `--cell` (already split on commas)."""
    specs = [parse_one(text) for text in texts if text.strip()]
    if not specs:
        raise UserError("--cell names no layer; e.g. --cell lstm:64 or --cell gru:128,gru:64")
    return specs
