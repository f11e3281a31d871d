"""Recurrent layers in the forms TFLite runs fast, at any batch, with no state kept between calls.

Two forms, chosen per layer by `form`:

- **loop**: the input projection of every step is one matrix product over the whole sequence,
  then a `WHILE` loop of builtin ops runs only the recurrent part, the directions of a
  Bidirectional layer side by side in one loop. Nothing in it is a variable tensor, so every call
  starts from the initial state, and no shape in it is fixed. It computes everything a Keras or
  TF1 layer may ask for: masks with Keras's semantics (holes included), initial states,
  `go_backwards`, returned states, peepholes, clipping and projection. A returned sequence is
  written by nested loops over blocks of steps, so that what LiteRT copies on every trip stays
  small (see `_sequence`).
- **quantized fused** (int8 files, `Layers(integer=True)`): an LSTM a Keras-2 `lstm_` function
  computes, which the converter itself fuses into `UNIDIRECTIONAL_SEQUENCE_LSTM` and quantizes with
  the rest (int8 weights and hidden state, int16 cell state). The converter does so only at a fixed
  batch, and its kernel keeps its state between calls, which `surgery.reset_quantized_states`
  undoes. Its Keras LSTM clips the cell state at 10 (`ConvertKerasLSTMLayer`). An LSTM it does
  not fuse (TF1 peepholes, projection, clipping) is a stub whose fused kernel goes in before
  calibration (`surgery.replace_stubs(calibrated_batch=1)`), so the quantizer makes it the same
  integer kernel: in the loop form its cell state would be int8, which ruined LSTM_S (7.5 dB).
- **fused**: a stub that the converter keeps as one custom op, which `surgery` replaces with
  LiteRT's `UNIDIRECTIONAL_SEQUENCE_LSTM` or `UNIDIRECTIONAL_SEQUENCE_RNN` kernel (TF1
  peepholes, projection and clipping included). Those write the whole sequence in one pass, so
  they are the form for returned sequences; their final states are read from the kernel's state
  tensors after it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from rnnexport.model import DirectionWeights, LayerCall, Recurrence
from rnnexport_converters.tflite.loops import loop_layer, merge
from rnnexport.tf import function, tensorflow

STUB_PREFIX = "RnnexportRecurrence"
# The activations LiteRT's fused sequence kernels compute (their `fused_activation_function`);
# their gates are always the logistic sigmoid.
FUSED_ACTIVATIONS = ("tanh", "relu", "linear")


@dataclass(frozen=True)
class Stub:
    """One fused kernel to put in place of custom op `name`: the weights of one direction of
    `recurrence`, run forwards over the custom op's first input."""

    name: str
    recurrence: Recurrence
    weights: DirectionWeights


def fusable(recurrence: Recurrence, call: LayerCall) -> str:
    """Why this layer is not given a fused kernel (empty: it is)."""
    if recurrence.cell == "gru":
        return "LiteRT has no fused GRU kernel"
    if not recurrence.return_sequences:
        return "only its last step is used: the loop form is faster than the fused kernel there"
    if call.mask is not None and (recurrence.bidirectional or recurrence.go_backwards):
        return "its input is masked and it reads the sequence backwards, which the loop form does exactly"
    if call.mask is not None and recurrence.return_state:
        return "its input is masked and it returns its final states, which the fused kernel leaves after the padding"
    if call.initial_state is not None:
        return "it is given an initial state"
    if recurrence.activation not in FUSED_ACTIVATIONS:
        return f"the fused kernel has no {recurrence.activation} activation"
    if recurrence.cell == "lstm" and recurrence.recurrent_activation != "sigmoid":
        return f"the fused kernel's gates are sigmoid, not {recurrence.recurrent_activation}"
    return ""


def converter_fusable(recurrence: Recurrence, call: LayerCall) -> str:
    """Why the converter would not fuse this layer as a Keras LSTM (empty: it would)."""
    weights = recurrence.directions[0]
    if recurrence.cell != "lstm":
        return "only LSTMs have a quantized fused kernel"
    if (recurrence.activation, recurrence.recurrent_activation) != ("tanh", "sigmoid"):
        return "the converter's Keras LSTM has tanh and sigmoid activations only"
    if weights.peepholes is not None or weights.projection is not None or recurrence.cell_clip or recurrence.proj_clip:
        return "the converter's Keras LSTM has no peepholes, projection or clipping"
    if call.mask is not None or call.initial_state is not None or recurrence.return_state:
        return "the converter's Keras LSTM takes no mask or initial state and returns no state"
    return ""


def integer_kernel(recurrence: Recurrence, call: LayerCall) -> str:
    """Why an LSTM the converter does not fuse (peepholes, projection, clipping) cannot be LiteRT's
    integer `UNIDIRECTIONAL_SEQUENCE_LSTM`, calibrated and quantized as the fused kernel (empty: it
    can). That kernel (8x8_16: int8 weights and hidden state, int16 cell state and peepholes)
    computes peepholes, projection and both clips; its state is a variable tensor of a fixed batch."""
    if recurrence.cell != "lstm":
        return "only LSTMs have an integer fused kernel"
    if (recurrence.activation, recurrence.recurrent_activation) != ("tanh", "sigmoid"):
        return "LiteRT's integer LSTM kernel has tanh and sigmoid activations only"
    if call.mask is not None or call.initial_state is not None or recurrence.return_state:
        return "LiteRT's integer LSTM kernel here takes no mask or initial state and returns no state"
    return ""


def _keras_lstm(inputs: Any, weights: DirectionWeights) -> Any:
    """One direction's sequence from a function the converter fuses into its quantized LSTM kernel:
    the signature and attributes of Keras 2's `standard_lstm`, whose body the converter replaces
    (it computes the same, for the shapes and for a converter that does not fuse)."""
    tf = tensorflow()
    batch, units = inputs.shape[0], weights.recurrent_kernel.shape[0]

    @function(experimental_attributes={"api_implements": f"lstm_{uuid.uuid4().hex}", "time_major": False,
                                       "go_backwards": False})
    def standard_lstm(x: Any, init_h: Any, init_c: Any, kernel: Any, recurrent_kernel: Any, bias: Any) -> Any:
        def step(state: Any, x_t: Any) -> Any:
            h, c = state
            i, f, g, o = tf.split(tf.matmul(x_t, kernel) + tf.matmul(h, recurrent_kernel) + bias, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c

        hs, cs = tf.scan(step, tf.transpose(x, [1, 0, 2]), initializer=(init_h, init_c))
        outputs = tf.transpose(hs, [1, 0, 2])
        return outputs[:, -1], outputs, hs[-1], cs[-1], tf.constant(0.0)

    # Static where the batch is fixed: the converter fuses only initial states of a static shape.
    zeros = tf.zeros([batch, units] if batch is not None else tf.stack([tf.shape(inputs)[0], units]), inputs.dtype)
    _, sequence, _, _, _ = standard_lstm(inputs, zeros, zeros, tf.constant(weights.kernel),
                                         tf.constant(weights.recurrent_kernel),
                                         tf.constant(weights.input_bias + weights.recurrent_bias))
    return sequence


def _keras_lstm_layer(recurrence: Recurrence, inputs: Any) -> Any:
    tf = tensorflow()
    if recurrence.go_backwards:
        inputs = tf.reverse(inputs, [1])
    sequence = _keras_lstm(inputs, recurrence.directions[0])
    if recurrence.bidirectional:
        backward = tf.reverse(_keras_lstm(tf.reverse(inputs, [1]), recurrence.directions[1]), [1])
        if not recurrence.return_sequences:
            return merge(recurrence.merge_mode, sequence[:, -1], backward[:, 0])
        return merge(recurrence.merge_mode, sequence, backward)
    return sequence if recurrence.return_sequences else sequence[:, -1]


class Layers:
    """The replacement a TFLite export is traced with; remembers which stubs it emitted and why
    each layer got the form it did."""

    def __init__(self, refused: str = "", integer: bool = False) -> None:
        """`refused`: why no layer may get a fused kernel in this file (empty: they may);
        `integer`: a full-integer file, whose LSTMs the converter fuses where it can."""
        self.refused = refused
        self.integer = integer
        self.stubs: dict[str, Stub] = {}
        self.forms: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.converter_fused: list[str] = []

    def __call__(self, recurrence: Recurrence, inputs: Any, call: LayerCall) -> Any:
        if self.integer and not self.refused and not converter_fusable(recurrence, call):
            self.forms[recurrence.name] = "fused"
            self.converter_fused.append(recurrence.name)
            return _keras_lstm_layer(recurrence, inputs)
        reason = (integer_kernel(recurrence, call) if self.integer else fusable(recurrence, call)) or self.refused
        self.forms[recurrence.name] = "loop" if reason else "fused"
        if reason:
            self.reasons[recurrence.name] = reason
            return loop_layer(recurrence, inputs, call)
        if call.mask is not None:
            return self._masked(recurrence, inputs, call)
        return self._fused(recurrence, inputs)

    def _masked(self, recurrence: Recurrence, inputs: Any, call: LayerCall) -> Any:
        """A masked layer as Keras computes it. Where every row's mask is its leading steps (post-
        padding), the fused kernel runs over all the steps and the padded ones get what Keras gives
        them; where some row has a hole, the loop form runs instead (chosen in the graph)."""
        tf = tensorflow()
        lengths = call.lengths
        holes = tf.reduce_any(tf.not_equal(tf.cast(call.mask, tf.bool), tf.sequence_mask(lengths, tf.shape(inputs)[1])))

        def post_padded() -> Any:
            sequence = self._stub(recurrence, recurrence.directions[0], inputs)[0]
            valid = tf.expand_dims(tf.sequence_mask(lengths, tf.shape(sequence)[1]), -1)
            if recurrence.zero_output_for_mask:
                return tf.where(valid, sequence, tf.zeros_like(sequence))
            # A masked step repeats the last output; a row with no step at all gives zeros.
            last = tf.gather(sequence, tf.maximum(lengths - 1, 0), batch_dims=1)
            last = tf.where(tf.expand_dims(lengths > 0, -1), last, tf.zeros_like(last))
            return tf.where(valid, sequence, tf.expand_dims(last, 1))

        return tf.cond(holes, lambda: loop_layer(recurrence, inputs, call), post_padded)

    def _stub(self, recurrence: Recurrence, weights: DirectionWeights, inputs: Any) -> Any:
        """The direction's (sequence, h[, c]) from a custom op that `surgery` replaces."""
        tf = tensorflow()
        name = f"{STUB_PREFIX}{len(self.stubs)}"
        self.stubs[name] = Stub(name, recurrence, weights)
        signature = f'name: "{name}" attr {{key: "tfl_fusable_op" value {{ b: true }} }}'
        batch = tf.shape(inputs)[0]
        shapes = [tf.stack([batch, weights.recurrent_kernel.shape[0]])]
        if recurrence.cell == "lstm":
            shapes.append(tf.stack([batch, recurrence.units]))

        # The body only gives the converter the results' shapes. The state shapes [batch, size]
        # are operands so that the kernel's state tensors can be filled with zeros from them; the
        # kernel leaves its final state in those tensors, which serve as the op's other results.
        @function(experimental_implements=signature)
        def stub(x: Any, *state_shapes: Any) -> Any:
            sequence = tf.zeros(tf.concat([tf.shape(x)[:2], state_shapes[0][1:]], axis=0), x.dtype)
            return (sequence, *(tf.zeros(shape, x.dtype) for shape in state_shapes))

        return stub(inputs, *shapes)

    def _fused(self, recurrence: Recurrence, inputs: Any) -> Any:
        tf = tensorflow()
        if recurrence.go_backwards:
            inputs = tf.reverse(inputs, [1])
        sequence, *finals = self._stub(recurrence, recurrence.directions[0], inputs)
        if recurrence.bidirectional:
            backward, *backward_finals = self._stub(recurrence, recurrence.directions[1], tf.reverse(inputs, [1]))
            if not recurrence.return_sequences:
                return merge(recurrence.merge_mode, sequence[:, -1], backward[:, -1])
            sequence = merge(recurrence.merge_mode, sequence, tf.reverse(backward, [1]))
            finals += backward_finals
        elif not recurrence.return_sequences:
            sequence = sequence[:, -1]
        if not recurrence.return_state:
            return sequence
        return [*(sequence if isinstance(sequence, list) else [sequence]), *finals]
