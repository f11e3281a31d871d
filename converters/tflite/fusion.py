"""Keras LSTMs traced the way the TFLite converter fuses them into UNIDIRECTIONAL_SEQUENCE_LSTM.

The converter replaces a function whose `api_implements` attribute starts with `lstm_` and
whose signature is Keras 2's standard LSTM: arguments (inputs, init_h, init_c, kernel,
recurrent_kernel, bias), five results (last output, sequence, h, c, runtime), attributes
`time_major` and `go_backwards`. It needs constant weights and a static initial-state shape
(fixed batch); time may stay dynamic. The fused kernel is fixed to sigmoid gates and tanh
activations (the target turns off the cell_clip of 10 the converter sets), and returns zeros
for the final states, so only layers that match and do not return their state are replaced.
"""

from __future__ import annotations

import uuid
from typing import Any

from rnnexport.model import DirectionWeights, LayerCall, Recurrence
from rnnexport.tf import tensorflow


def unfusable(recurrence: Recurrence) -> str:
    """Why the TFLite converter cannot fuse this layer (empty: it can)."""
    if recurrence.cell == "gru":
        return "TFLite has no fused GRU kernel; it runs as a WHILE loop of builtin ops"
    if recurrence.cell == "rnn":
        return "the converter fuses no Keras SimpleRNN; it runs as a WHILE loop of builtin ops"
    if (recurrence.activation, recurrence.recurrent_activation) != ("tanh", "sigmoid"):
        return "the fused LSTM kernel only computes tanh and sigmoid activations"
    if recurrence.return_state:
        return "the fused LSTM kernel does not return the final states"
    return ""


def _standard_lstm() -> Any:
    """A Keras-2-style LSTM function the converter recognises; its body is the fallback."""
    tf = tensorflow()
    attributes = {"api_implements": f"lstm_{uuid.uuid4().hex}", "time_major": False, "go_backwards": False}

    def lstm(inputs: Any, init_h: Any, init_c: Any, kernel: Any, recurrent_kernel: Any, bias: Any) -> Any:
        def step(state: Any, x_t: Any) -> Any:
            h, c = state
            gates = tf.matmul(x_t, kernel) + tf.matmul(h, recurrent_kernel) + bias
            i, f, g, o = tf.split(gates, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c

        hs, cs = tf.scan(step, tf.transpose(inputs, [1, 0, 2]), initializer=(init_h, init_c))
        outputs = tf.transpose(hs, [1, 0, 2])
        return outputs[:, -1], outputs, hs[-1], cs[-1], tf.constant(0.0)

    return tf.function(lstm, autograph=False, experimental_attributes=attributes)


def _direction(weights: DirectionWeights, inputs: Any, units: int) -> tuple[Any, Any]:
    tf = tensorflow()
    zeros = tf.zeros([inputs.shape[0], units], dtype=inputs.dtype)
    last, sequence, *_ = _standard_lstm()(
        inputs, zeros, zeros, tf.constant(weights.kernel), tf.constant(weights.recurrent_kernel),
        tf.constant(weights.input_bias),
    )
    return last, sequence


def fused_lstm(recurrence: Recurrence, inputs: Any, call: LayerCall) -> Any:
    """The layer's outputs from fused LSTM functions, or why the layer keeps its own loop."""
    if unfusable(recurrence):
        return None
    if call.mask is not None:
        return "its input is masked; the fused LSTM here models no mask"
    if call.initial_state is not None:
        return "it is given an initial state; the fused LSTM here starts from zeros"
    if recurrence.go_backwards:
        return "go_backwards=True; the fused LSTM here reads forwards"
    if recurrence.bidirectional and recurrence.merge_mode is None:
        return "merge_mode=None returns the directions separately; the fused LSTM here merges them"
    tf = tensorflow()
    forward_last, forward_sequence = _direction(recurrence.directions[0], inputs, recurrence.units)
    if not recurrence.bidirectional:
        return forward_sequence if recurrence.return_sequences else forward_last
    backward_last, backward_sequence = _direction(recurrence.directions[1], tf.reverse(inputs, [1]), recurrence.units)
    if recurrence.return_sequences:
        forward, backward = forward_sequence, tf.reverse(backward_sequence, [1])
    else:
        forward, backward = forward_last, backward_last
    if recurrence.merge_mode == "concat":
        return tf.concat([forward, backward], axis=-1)
    if recurrence.merge_mode == "sum":
        return forward + backward
    if recurrence.merge_mode == "mul":
        return forward * backward
    return (forward + backward) / 2.0
