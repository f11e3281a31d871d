"""Recurrent layers in the forms TFLite runs fast, at any batch, with no state kept between calls.

Two forms, chosen per layer by `form`:

- **loop**: the input projection of every step is one matrix product over the whole sequence,
  then a `WHILE` loop of builtin ops runs only the recurrent part. Nothing in it is a variable
  tensor, so every call starts from the initial state, and no shape in it is fixed. It computes
  everything a Keras or TF1 layer may ask for: masks with Keras's semantics (holes included),
  initial states, `go_backwards`, returned states, peepholes, clipping and projection. A
  returned sequence is written step by step into a buffer the loop carries, which LiteRT copies
  on every step: fine for short sequences, quadratic for long ones.
- **quantized fused** (int8 files, `Layers(integer=True)`): an LSTM a Keras-2 `lstm_` function
  computes, which the converter itself fuses into `UNIDIRECTIONAL_SEQUENCE_LSTM` and quantizes with
  the rest (int8 weights and hidden state, int16 cell state). The converter does so only at a fixed
  batch, and its kernel keeps its state between calls, which `surgery.reset_quantized_states`
  undoes. Its Keras LSTM clips the cell state at 10 (`ConvertKerasLSTMLayer`).
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
from rnnexport.tf import tensorflow

STUB_PREFIX = "RnnexportRecurrence"
# Steps per chunk of a returned sequence computed in two passes (see `_sequence`).
CHUNK = 16
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


def _activation(name: str) -> Any:
    tf = tensorflow()
    return {
        "tanh": tf.tanh,
        "sigmoid": tf.sigmoid,
        "relu": tf.nn.relu,
        "linear": lambda x: x,
        "hard_sigmoid": lambda x: tf.nn.relu6(x + 3.0) / 6.0,
        "hard_sigmoid_keras2": lambda x: tf.clip_by_value(0.2 * x + 0.5, 0.0, 1.0),
    }[name]


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


def _keras_lstm(inputs: Any, weights: DirectionWeights) -> Any:
    """One direction's sequence from a function the converter fuses into its quantized LSTM kernel:
    the signature and attributes of Keras 2's `standard_lstm`, whose body the converter replaces
    (it computes the same, for the shapes and for a converter that does not fuse)."""
    tf = tensorflow()
    batch, units = inputs.shape[0], weights.recurrent_kernel.shape[0]

    @tf.function(experimental_attributes={"api_implements": f"lstm_{uuid.uuid4().hex}", "time_major": False,
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
            return _merge(recurrence.merge_mode, sequence[:, -1], backward[:, 0])
        return _merge(recurrence.merge_mode, sequence, backward)
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
        if self.integer and not converter_fusable(recurrence, call):
            self.forms[recurrence.name] = "fused"
            self.converter_fused.append(recurrence.name)
            return _keras_lstm_layer(recurrence, inputs)
        reason = fusable(recurrence, call) or self.refused
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
        @tf.function(experimental_implements=signature)
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
            sequence = _merge(recurrence.merge_mode, sequence, tf.reverse(backward, [1]))
            finals += backward_finals
        if not recurrence.return_state:
            return sequence
        return [*(sequence if isinstance(sequence, list) else [sequence]), *finals]


def _merge(mode: str | None, forward: Any, backward: Any) -> Any:
    tf = tensorflow()
    if mode == "concat":
        return tf.concat([forward, backward], axis=-1)
    if mode == "sum":
        return forward + backward
    if mode == "mul":
        return forward * backward
    if mode == "ave":
        return (forward + backward) / 2.0
    return [forward, backward]


def _cell(recurrence: Recurrence, weights: DirectionWeights) -> Any:
    """One step of the recurrence from the projected input: (x_t, h, c) -> (h, c)."""
    tf = tensorflow()
    act = _activation(recurrence.activation)
    gate = _activation(recurrence.recurrent_activation)
    recurrent = tf.constant(weights.recurrent_kernel)
    units = recurrence.units
    if recurrence.cell == "rnn":
        return lambda x, h, c: (act(x + tf.matmul(h, recurrent)), c)
    if recurrence.cell == "gru" and recurrence.reset_after:
        recurrent_bias = tf.constant(weights.recurrent_bias)

        def gru(x: Any, h: Any, c: Any) -> Any:
            xz, xr, xh = tf.split(x, 3, axis=1)
            hz, hr, hh = tf.split(tf.matmul(h, recurrent) + recurrent_bias, 3, axis=1)
            z, r = gate(xz + hz), gate(xr + hr)
            return z * h + (1.0 - z) * act(xh + r * hh), c

        return gru
    if recurrence.cell == "gru":
        gates_kernel, candidate_kernel = tf.constant(weights.recurrent_kernel[:, : 2 * units]), tf.constant(
            weights.recurrent_kernel[:, 2 * units:])

        def gru_v1(x: Any, h: Any, c: Any) -> Any:
            xz, xr, xh = tf.split(x, 3, axis=1)
            hz, hr = tf.split(tf.matmul(h, gates_kernel), 2, axis=1)
            z, r = gate(xz + hz), gate(xr + hr)
            return z * h + (1.0 - z) * act(xh + tf.matmul(r * h, candidate_kernel)), c

        return gru_v1
    peepholes, projection = weights.peepholes, weights.projection
    cell_clip, proj_clip = recurrence.cell_clip, recurrence.proj_clip

    def lstm(x: Any, h: Any, c: Any) -> Any:
        i, f, g, o = tf.split(x + tf.matmul(h, recurrent), 4, axis=1)
        if peepholes is not None:
            i, f = i + peepholes[0] * c, f + peepholes[1] * c
        c = gate(f) * c + gate(i) * act(g)
        if cell_clip:
            c = tf.clip_by_value(c, -cell_clip, cell_clip)
        if peepholes is not None:
            o = o + peepholes[2] * c
        h = gate(o) * act(c)
        if projection is not None:
            h = tf.matmul(h, tf.constant(projection))
            if proj_clip:
                h = tf.clip_by_value(h, -proj_clip, proj_clip)
        return h, c

    return lstm


def _masked_step(step: Any, zero_masked_output: bool) -> Any:
    """`step` that leaves the state as it was where `keep` is False, and returns there the previous
    output (or zeros) as a masked Keras layer does: (x, h, c, keep) -> (out, h, c)."""
    tf = tensorflow()

    def masked(x: Any, h: Any, c: Any, keep: Any) -> Any:
        new_h, new_c = step(x, h, c)
        if keep is None:
            return new_h, new_h, new_c
        keep = tf.expand_dims(keep, -1)
        out = tf.where(keep, new_h, tf.zeros_like(new_h) if zero_masked_output else h)
        return out, tf.where(keep, new_h, h), tf.where(keep, new_c, c)

    return masked


def _last_step(step: Any, projected: Any, steps: Any, h: Any, c: Any, length: Any) -> tuple[Any, Any]:
    """The state after `length` steps, from a loop that carries nothing else. The condition reads
    `length`, not the sequence: LiteRT copies everything the condition reads on every step."""
    tf = tensorflow()

    def body(t: Any, h: Any, c: Any) -> Any:
        _, h, c = step(tf.gather(projected, t), h, c, None if steps is None else tf.gather(steps, t))
        return t + 1, h, c

    _, h, c = tf.while_loop(lambda t, *_: t < length, body, [tf.constant(0), h, c])
    return h, c


def _sequence(step: Any, projected: Any, steps: Any, h: Any, c: Any) -> tuple[Any, Any, Any]:
    """Every step's output [time, batch, out] and the final state, in two passes.

    A loop that carries the outputs costs a copy of all of them per step in LiteRT, so the
    sequence is cut into chunks of CHUNK steps: the first pass runs the recurrence carrying only
    the state, keeping the state at the start of each chunk (a loop over chunks around a loop
    over their steps); the second runs every chunk at once from those states, the chunks side by
    side in the batch, in a loop of CHUNK steps that carries only one chunk's outputs. The second
    pass repeats the first's arithmetic on the same values, so both give the same outputs."""
    tf = tensorflow()
    from tensorflow.compiler.tf2xla.ops.gen_xla_ops import xla_dynamic_update_slice

    length, batch, width = tf.shape(projected)[0], tf.shape(h)[0], projected.shape[-1]
    chunks = (length + CHUNK - 1) // CHUNK
    padding = chunks * CHUNK - length
    # Steps past the end are masked: the state carries through them unchanged.
    valid = tf.ones(tf.stack([length, batch]), tf.bool) if steps is None else steps
    valid = tf.reshape(tf.pad(valid, [[0, padding], [0, 0]]), tf.stack([chunks, CHUNK, batch]))
    chunked = tf.reshape(tf.pad(projected, [[0, padding], [0, 0], [0, 0]]), tf.stack([chunks, CHUNK, batch, width]))

    def chunk_body(j: Any, h: Any, c: Any, starts_h: Any, starts_c: Any) -> Any:
        starts_h = xla_dynamic_update_slice(starts_h, tf.expand_dims(h, 0), tf.stack([j, 0, 0]))
        starts_c = xla_dynamic_update_slice(starts_c, tf.expand_dims(c, 0), tf.stack([j, 0, 0]))
        h, c = _last_step(step, tf.gather(chunked, j), tf.gather(valid, j), h, c, CHUNK)
        return j + 1, h, c, starts_h, starts_c

    starts_h = tf.zeros(tf.concat([[chunks], tf.shape(h)], 0), h.dtype)
    starts_c = tf.zeros(tf.concat([[chunks], tf.shape(c)], 0), c.dtype)
    _, h, c, starts_h, starts_c = tf.while_loop(
        lambda j, *_: j < chunks, chunk_body, [tf.constant(0), h, c, starts_h, starts_c])
    rows, out_size = chunks * batch, h.shape[-1]
    # Step k of every chunk, the chunks' rows one after the other: [CHUNK, chunks * batch, ...].
    side_by_side = tf.reshape(tf.transpose(chunked, [1, 0, 2, 3]), tf.stack([CHUNK, rows, width]))
    side_by_side_valid = tf.reshape(tf.transpose(valid, [1, 0, 2]), tf.stack([CHUNK, rows]))

    def step_body(k: Any, state_h: Any, state_c: Any, outputs: Any) -> Any:
        out, state_h, state_c = step(tf.gather(side_by_side, k), state_h, state_c, tf.gather(side_by_side_valid, k))
        return k + 1, state_h, state_c, xla_dynamic_update_slice(outputs, tf.expand_dims(out, 0), tf.stack([k, 0, 0]))

    outputs = tf.zeros(tf.stack([CHUNK, rows, out_size]), h.dtype)
    _, _, _, outputs = tf.while_loop(lambda k, *_: k < CHUNK, step_body, [
        tf.constant(0), tf.reshape(starts_h, tf.stack([rows, out_size])),
        tf.reshape(starts_c, tf.stack([rows, c.shape[-1]])), outputs])
    # [CHUNK, chunks * batch, out] -> [chunks * CHUNK, batch, out], the padding cut off.
    stacked = tf.reshape(outputs, tf.stack([CHUNK, chunks, batch, out_size]))
    sequence = tf.reshape(tf.transpose(stacked, [1, 0, 2, 3]), tf.stack([chunks * CHUNK, batch, out_size]))
    return sequence[:length], h, c


def _direction(recurrence: Recurrence, weights: DirectionWeights, inputs: Any, mask: Any, initial: Any,
               backwards: bool, zero_masked_output: bool) -> tuple[Any, Any, Any]:
    """One direction as loops: (sequence [batch, time, out] or None, h, c)."""
    tf = tensorflow()
    step = _masked_step(_cell(recurrence, weights), zero_masked_output)
    batch = tf.shape(inputs)[0]
    projected = tf.matmul(inputs, tf.constant(weights.kernel)) + tf.constant(weights.input_bias)
    projected = tf.transpose(projected, [1, 0, 2])
    steps = None if mask is None else tf.transpose(tf.cast(mask, tf.bool), [1, 0])
    if backwards:
        projected = tf.reverse(projected, [0])
        steps = None if steps is None else tf.reverse(steps, [0])
    h = tf.zeros(tf.stack([batch, weights.recurrent_kernel.shape[0]]), inputs.dtype)
    c = tf.zeros(tf.stack([batch, recurrence.units]), inputs.dtype)
    if initial is not None:
        h = initial[0] + h
        if recurrence.cell == "lstm":
            c = initial[1] + c
    if not recurrence.return_sequences:
        return (None, *_last_step(step, projected, steps, h, c, tf.shape(projected)[0]))
    sequence, h, c = _sequence(step, projected, steps, h, c)
    return tf.transpose(sequence, [1, 0, 2]), h, c


def loop_layer(recurrence: Recurrence, inputs: Any, call: LayerCall) -> Any:
    """The layer's outputs, as Keras returns them, from loops with hoisted input projections."""
    tf = tensorflow()
    mask, initial = call.mask, call.initial_state
    zero_masked = recurrence.zero_output_for_mask
    states = 2 if recurrence.cell == "lstm" else 1
    backwards = recurrence.go_backwards
    results = []
    for index, weights in enumerate(recurrence.directions):
        given = None if initial is None else tuple(initial[index * states:(index + 1) * states])
        results.append(_direction(recurrence, weights, inputs, mask, given, backwards or index == 1, zero_masked))
    outputs = []
    for index, (sequence, h, _) in enumerate(results):
        if not recurrence.return_sequences:
            outputs.append(h)
        else:
            # A Bidirectional layer turns its backward sequence back into input order.
            outputs.append(tf.reverse(sequence, [1]) if index == 1 else sequence)
    merged = outputs[0] if len(outputs) == 1 else _merge(recurrence.merge_mode, *outputs)
    if not recurrence.return_state:
        return merged
    finals = [state for _, h, c in results for state in ((h, c) if states == 2 else (h,))]
    return [*(merged if isinstance(merged, list) else [merged]), *finals]

