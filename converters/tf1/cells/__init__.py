"""TF1 cell recognition: one matcher per cell pattern, tried in the order of `MATCHERS`.

A matcher takes the graph, one op and the recurrent kernels other steps revealed, and returns a
typed match of the step that op anchors, or None (with a debug log line) when the op is not
where its pattern starts. It raises `UnsupportedModelError` when the op starts its pattern but
the rest is not what the pattern needs, and `patterns.Ambiguous` when it cannot tell its
MatMuls apart yet. Adding a cell kind is one matcher module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rnnexport_converters.tf1.cells import basic_rnn, block_gru, block_lstm, gru, keras_gru, keras_lstm, keras_rnn, lstm
from rnnexport_converters.tf1.cells.base import Cell, CellMatch, Step
from rnnexport_converters.tf1.cells.patterns import Ambiguous
from rnnexport_converters.tf1.graph import GraphView

__all__ = ["MATCHERS", "Ambiguous", "Cell", "CellMatch", "Step", "match"]

Matcher = Callable[[GraphView, Any, Sequence[str]], CellMatch | None]

# By the cell class each recognises. The three TF1 classes start at the same kernel MatMul: an
# LSTM's four-way split is looked for first, then a GRU's gates, then a BasicRNNCell.
MATCHERS: dict[str, Matcher] = {
    "LSTMBlockCell": block_lstm.match,
    "GRUBlockCell": block_gru.match,
    "LSTMCell": lstm.match,
    "GRUCell": gru.match,
    "BasicRNNCell": basic_rnn.match,
    # The Keras cells start at a candidate activation; an LSTM's and a GRU's read a gate, so the
    # SimpleRNN, whose activation reads none, is looked for last.
    "keras LSTM": keras_lstm.match,
    "keras GRU": keras_gru.match,
    "keras SimpleRNN": keras_rnn.match,
}


def match(view: GraphView, op: Any, known: Sequence[str] = ()) -> CellMatch | None:
    """The step `op` anchors, as the first matcher that recognises it makes it; else None."""
    for matcher in MATCHERS.values():
        found = matcher(view, op, known)
        if found is not None:
            return found
    return None
