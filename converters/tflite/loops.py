"""The loop form of a recurrent layer in TFLite (see `layers`): builtin `WHILE` loops of the
recurrent part only, the input projection of every step done before them as one matrix product."""

from __future__ import annotations

from typing import Any

from rnnexport.model import DirectionWeights, LayerCall, Recurrence
from rnnexport.tf import tensorflow

# The nested loops of a returned sequence (see `_sequence`): the outermost runs blocks of 128
# steps, each a loop over blocks of 16, each a loop over single steps. Measured against one loop
# level less and one more, and other sizes (64-512, 8-32), on LSTM(256) and Bidirectional(LSTM(128))
# over 100 and 1000 steps: the blocks of 16 halve how often LiteRT allocates and frees the
# innermost loop's tensors, which it does each time a loop starts.
SPANS = (128, 16, 1)


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


def merge(mode: str | None, forward: Any, backward: Any) -> Any:
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


def _stacked(arrays: list[Any], matrix: bool) -> Any:
    """One constant holding every direction's `arrays`: as it is for one direction; for several, a
    leading direction axis (vectors also get a batch axis, to broadcast over [directions, batch, n])."""
    tf = tensorflow()
    import numpy as np

    if len(arrays) == 1:
        return tf.constant(arrays[0])
    stacked = np.stack(arrays)
    return tf.constant(stacked if matrix else stacked[:, None, :])


def _cell(recurrence: Recurrence, directions: list[DirectionWeights]) -> Any:
    """One step of the recurrence from the projected input: (x_t, h, c) -> (h, c). With several
    directions every tensor has a leading direction axis and each direction its own weights, so
    both directions of a Bidirectional layer step together (one batched matrix product)."""
    tf = tensorflow()
    act = _activation(recurrence.activation)
    gate = _activation(recurrence.recurrent_activation)
    recurrent = _stacked([w.recurrent_kernel for w in directions], matrix=True)
    units = recurrence.units
    if recurrence.cell == "rnn":
        return lambda x, h, c: (act(x + tf.matmul(h, recurrent)), c)
    if recurrence.cell == "gru" and recurrence.reset_after:
        recurrent_bias = _stacked([w.recurrent_bias for w in directions], matrix=False)

        def gru(x: Any, h: Any, c: Any) -> Any:
            xz, xr, xh = tf.split(x, 3, axis=-1)
            hz, hr, hh = tf.split(tf.matmul(h, recurrent) + recurrent_bias, 3, axis=-1)
            z, r = gate(xz + hz), gate(xr + hr)
            return z * h + (1.0 - z) * act(xh + r * hh), c

        return gru
    if recurrence.cell == "gru":
        gates_kernel = _stacked([w.recurrent_kernel[:, : 2 * units] for w in directions], matrix=True)
        candidate_kernel = _stacked([w.recurrent_kernel[:, 2 * units:] for w in directions], matrix=True)

        def gru_v1(x: Any, h: Any, c: Any) -> Any:
            xz, xr, xh = tf.split(x, 3, axis=-1)
            hz, hr = tf.split(tf.matmul(h, gates_kernel), 2, axis=-1)
            z, r = gate(xz + hz), gate(xr + hr)
            return z * h + (1.0 - z) * act(xh + tf.matmul(r * h, candidate_kernel)), c

        return gru_v1
    peepholes = None if directions[0].peepholes is None else [
        _stacked([w.peepholes[row] for w in directions], matrix=False) for row in range(3)]
    projection = None if directions[0].projection is None else _stacked(
        [w.projection for w in directions], matrix=True)
    cell_clip, proj_clip = recurrence.cell_clip, recurrence.proj_clip

    def lstm(x: Any, h: Any, c: Any) -> Any:
        i, f, g, o = tf.split(x + tf.matmul(h, recurrent), 4, axis=-1)
        if peepholes is not None:
            i, f = i + peepholes[0] * c, f + peepholes[1] * c
        c = gate(f) * c + gate(i) * act(g)
        if cell_clip:
            c = tf.clip_by_value(c, -cell_clip, cell_clip)
        if peepholes is not None:
            o = o + peepholes[2] * c
        h = gate(o) * act(c)
        if projection is not None:
            h = tf.matmul(h, projection)
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


def _last_step(step: Any, read: Any, h: Any, c: Any, length: Any) -> tuple[Any, Any]:
    """The state after `length` steps, from a loop that carries nothing else (`read(t)`: step t's
    input and mask). The condition reads `length`, not the sequence: LiteRT copies everything
    the condition reads on every step."""
    tf = tensorflow()

    def body(t: Any, h: Any, c: Any) -> Any:
        x, keep = read(t)
        _, h, c = step(x, h, c, keep)
        return t + 1, h, c

    _, h, c = tf.while_loop(lambda t, *_: t < length, body, [tf.constant(0), h, c])
    return h, c


def _sequence(step: Any, read: Any, h: Any, c: Any, length: Any) -> tuple[Any, Any, Any]:
    """Every step's output [capacity, (direction,) batch, out] (rows past the length zeros) and
    the final state, in one pass of nested loops (`read(t)`: step t's input and mask).

    A LiteRT loop copies what it carries on every trip, so a loop over the steps that carried
    every output so far would copy the whole sequence per step. Here the steps are run in blocks
    (SPANS): the innermost loop carries only one block's outputs, each loop above it writes the
    block below into its own, and only the outermost carries the whole sequence, once per block."""
    tf = tensorflow()
    from tensorflow.compiler.tf2xla.ops.gen_xla_ops import xla_dynamic_update_slice

    # The inner levels' empty outputs, made before the loops: a FILL in a loop body makes the body
    # dynamic, which LiteRT runs on its slower path, sizing and allocating its tensors on every
    # trip (a 1000-step LSTM took 10% longer).
    empty = {span: tf.zeros(tf.concat([[span], tf.shape(h)], 0), h.dtype) for span in SPANS[:-1]}

    def blocks(spans: tuple[int, ...], start: Any, end: Any, capacity: Any, h: Any, c: Any) -> Any:
        """Steps start .. end - 1 in blocks of spans[0] steps: their outputs [capacity, *h's
        shape] (rows past the last step zeros) and the state after them."""
        span = spans[0]
        # Where the next block goes in this level's outputs, a row index followed by zeros: carried
        # and advanced, with the step it starts at, by one addition each per trip.
        advance = tf.constant([span] + [0] * len(h.shape), tf.int32)

        def body(first: Any, at: Any, h: Any, c: Any, outputs: Any) -> Any:
            if span == 1:
                x, keep = read(first)
                out, h, c = step(x, h, c, keep)
                block = tf.expand_dims(out, 0)
            else:
                block, h, c = blocks(spans[1:], first, tf.minimum(first + span, end), span, h, c)
            return first + span, at + advance, h, c, xla_dynamic_update_slice(outputs, block, at)

        outputs = empty[capacity] if isinstance(capacity, int) else tf.zeros(
            tf.concat([[capacity], tf.shape(h)], 0), h.dtype)
        start_at = tf.zeros([len(h.shape) + 1], tf.int32)
        _, _, h, c, outputs = tf.while_loop(lambda first, *_: first < end, body, [start, start_at, h, c, outputs])
        return outputs, h, c

    outer = SPANS[0]
    sequence, h, c = blocks(SPANS, tf.constant(0), length, (length + outer - 1) // outer * outer, h, c)
    return sequence, h, c


def _order(length: Any, batch: Any, reads_backwards: list[bool], returns_reversed: list[bool]) -> tuple[Any, Any]:
    """GATHER_ND indices that move every direction's steps into the loops' order and back.

    The first, [(direction,) time, batch, 2], reads the batch-first [batch, time, features] inputs
    time-major, once per direction, a direction that `reads_backwards` from the last step; the
    second, [batch, time, (direction,) 2-3], reads the loops' time-major [capacity, (direction,)
    batch, features] outputs batch-first, the first `length` steps, in input order where a
    direction `returns_reversed` (the backward half of a Bidirectional layer). One gather each
    where it would otherwise take transposes, reversals, stacking and a slice, each a copy of
    the whole sequence; the inputs are moved before their projection, which is several times
    their size."""
    tf = tensorflow()
    t = tf.range(length)
    rows = tf.range(batch)

    def times(flip: bool) -> Any:
        return length - 1 - t if flip else t

    shape = tf.stack([length, batch])
    into = [tf.stack([tf.broadcast_to(rows[None, :], shape), tf.broadcast_to(times(flip)[:, None], shape)], -1)
            for flip in reads_backwards]
    if len(returns_reversed) == 1:
        back = [tf.broadcast_to(times(returns_reversed[0])[:, None], shape), tf.broadcast_to(rows[None, :], shape)]
    else:
        shape = tf.stack([length, len(returns_reversed), batch])
        back = [tf.broadcast_to(tf.stack([times(flip) for flip in returns_reversed], 1)[:, :, None], shape),
                tf.broadcast_to(tf.range(len(returns_reversed))[None, :, None], shape),
                tf.broadcast_to(rows[None, None, :], shape)]
    back = tf.stack(back, -1)
    into = into[0] if len(into) == 1 else tf.stack(into, 0)
    return into, tf.transpose(back, [len(back.shape) - 2, *range(len(back.shape) - 2), len(back.shape) - 1])


def _directions(recurrence: Recurrence, inputs: Any, mask: Any, initial: Any,
                zero_masked_output: bool) -> tuple[Any, list[tuple[Any, Any]]]:
    """Every direction of the layer in one set of loops: the sequence [batch, time, (direction,)
    out] in the order Keras returns it (a go_backwards layer's reversed, a Bidirectional layer's
    backward half in input order), None unless the layer returns it; each direction's final (h, c)."""
    tf = tensorflow()
    import numpy as np

    directions = recurrence.directions
    count = len(directions)
    states = 2 if recurrence.cell == "lstm" else 1
    step = _masked_step(_cell(recurrence, directions), zero_masked_output)
    batch, length = tf.shape(inputs)[0], tf.shape(inputs)[1]
    backwards = [recurrence.go_backwards or index == 1 for index in range(count)]
    to_loops, from_loops = _order(length, batch, backwards, [index == 1 for index in range(count)])
    features, gates = directions[0].kernel.shape
    if count == 1:
        projected = tf.matmul(tf.gather_nd(inputs, to_loops), tf.constant(directions[0].kernel))
        projected = projected + tf.constant(directions[0].input_bias)
    else:
        # Every direction's projection in one batched product over all its steps. A batched
        # product has no bias, and adding one after it would pass over the projections again: the
        # inputs get a feature that is always 1, and the kernels the biases as its row.
        ones = tf.concat([inputs, tf.ones_like(inputs[:, :, :1])], -1)
        flat = tf.reshape(tf.gather_nd(ones, to_loops), tf.stack([count, length * batch, features + 1]))
        kernels = [np.concatenate([w.kernel, w.input_bias[None, :]]) for w in directions]
        projected = tf.reshape(tf.matmul(flat, _stacked(kernels, matrix=True)), tf.stack([count, length, batch, gates]))
    steps = None
    if mask is not None:
        steps = tf.transpose(tf.cast(mask, tf.bool), [1, 0])
        reversed_steps = [tf.reverse(steps, [0]) if backward else steps for backward in backwards]
        steps = reversed_steps[0] if count == 1 else tf.stack(reversed_steps, 0)
    # Time is the first axis of one direction's tensors, the second after the direction axis.
    time_axis = 0 if count == 1 else 1

    def read(t: Any) -> tuple[Any, Any]:
        return tf.gather(projected, t, axis=time_axis), None if steps is None else tf.gather(steps, t, axis=time_axis)

    starts = []
    for index, weights in enumerate(directions):
        h = tf.zeros(tf.stack([batch, weights.recurrent_kernel.shape[0]]), inputs.dtype)
        c = tf.zeros(tf.stack([batch, recurrence.units]), inputs.dtype)
        if initial is not None:
            h = initial[index * states] + h
            if states == 2:
                c = initial[index * states + 1] + c
        starts.append((h, c))

    def stack(tensors: list[Any]) -> Any:
        return tensors[0] if count == 1 else tf.stack(tensors, 0)

    def unstack(tensor: Any) -> list[Any]:
        return [tensor] if count == 1 else tf.unstack(tensor, count, 0)

    h, c = stack([h for h, _ in starts]), stack([c for _, c in starts])
    if not recurrence.return_sequences:
        h, c = _last_step(step, read, h, c, length)
        return None, list(zip(unstack(h), unstack(c)))
    sequence, h, c = _sequence(step, read, h, c, length)
    return tf.gather_nd(sequence, from_loops), list(zip(unstack(h), unstack(c)))


def loop_layer(recurrence: Recurrence, inputs: Any, call: LayerCall) -> Any:
    """The layer's outputs, as Keras returns them, from loops with hoisted input projections."""
    tf = tensorflow()
    sequence, finals = _directions(recurrence, inputs, call.mask, call.initial_state, recurrence.zero_output_for_mask)
    if not recurrence.return_sequences:
        merged = finals[0][0] if len(finals) == 1 else merge(recurrence.merge_mode, *(h for h, _ in finals))
    elif len(finals) == 1:
        merged = sequence
    elif recurrence.merge_mode == "concat":  # [batch, time, direction, out] is already the concatenation
        shape = tf.shape(sequence)
        merged = tf.reshape(sequence, tf.stack([shape[0], shape[1], 2 * sequence.shape[-1]]))
    else:
        merged = merge(recurrence.merge_mode, *tf.unstack(sequence, 2, axis=2))
    if not recurrence.return_state:
        return merged
    states = 2 if recurrence.cell == "lstm" else 1
    finals = [state for h, c in finals for state in ((h, c) if states == 2 else (h,))]
    return [*(merged if isinstance(merged, list) else [merged]), *finals]
