"""The loop form of a recurrent layer in TFLite (see `layers`): builtin `WHILE` loops of the
recurrent part only, the input projection of every step done before them as one matrix product."""

from __future__ import annotations

from typing import Any

from rnnexport.model import DirectionWeights, LayerCall, Recurrence
from rnnexport.tf import tensorflow

# The nested loops of a returned sequence (see `_sequence`): the outermost runs blocks of 128
# steps, each a loop over blocks of 8, each a loop over single steps. Measured against one loop
# level less and one more, and other sizes, on LSTM(256) over 100 and 1000 steps.
SPANS = (128, 8, 1)


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
    """Every step's output [time, batch, out] and the final state, in one pass of nested loops.

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

    def blocks(spans: tuple[int, ...], start: Any, count: Any, capacity: Any, h: Any, c: Any) -> Any:
        """Steps start .. start + count - 1 in blocks of spans[0] steps: their outputs [capacity,
        *h's shape] (rows past `count` zeros) and the state after them."""
        span = spans[0]

        def body(j: Any, h: Any, c: Any, outputs: Any) -> Any:
            first = start + j * span
            if span == 1:
                keep = None if steps is None else tf.gather(steps, first)
                out, h, c = step(tf.gather(projected, first), h, c, keep)
                block = tf.expand_dims(out, 0)
            else:
                block, h, c = blocks(spans[1:], first, tf.minimum(span, count - j * span), span, h, c)
            at = tf.concat([[j * span], tf.zeros([len(h.shape)], tf.int32)], 0)
            return j + 1, h, c, xla_dynamic_update_slice(outputs, block, at)

        outputs = empty[capacity] if isinstance(capacity, int) else tf.zeros(
            tf.concat([[capacity], tf.shape(h)], 0), h.dtype)
        trips = (count + span - 1) // span
        _, h, c, outputs = tf.while_loop(lambda j, *_: j < trips, body, [tf.constant(0), h, c, outputs])
        return outputs, h, c

    length = tf.shape(projected)[0]
    outer = SPANS[0]
    sequence, h, c = blocks(SPANS, 0, length, (length + outer - 1) // outer * outer, h, c)
    # A GATHER of the first rows, not the STRIDED_SLICE that `sequence[:length]` becomes: LiteRT's
    # strided slice copies element by element through a callback (6-9% of a 1000-step layer's
    # time), its gather copies whole rows.
    return tf.gather(sequence, tf.range(length)), h, c


def _directions(recurrence: Recurrence, inputs: Any, mask: Any, initial: Any,
                zero_masked_output: bool) -> list[tuple[Any, Any, Any]]:
    """Every direction of the layer in one set of loops: per direction (sequence [batch, time,
    out] in input order, or None; h; c)."""
    tf = tensorflow()
    directions = recurrence.directions
    count = len(directions)
    states = 2 if recurrence.cell == "lstm" else 1
    step = _masked_step(_cell(recurrence, directions), zero_masked_output)
    batch = tf.shape(inputs)[0]
    steps = None if mask is None else tf.transpose(tf.cast(mask, tf.bool), [1, 0])
    projections, masks, starts = [], [], []
    for index, weights in enumerate(directions):
        projected = tf.matmul(inputs, tf.constant(weights.kernel)) + tf.constant(weights.input_bias)
        projected = tf.transpose(projected, [1, 0, 2])
        direction_steps = steps
        if recurrence.go_backwards or index == 1:
            projected = tf.reverse(projected, [0])
            direction_steps = None if steps is None else tf.reverse(steps, [0])
        projections.append(projected)
        masks.append(direction_steps)
        h = tf.zeros(tf.stack([batch, weights.recurrent_kernel.shape[0]]), inputs.dtype)
        c = tf.zeros(tf.stack([batch, recurrence.units]), inputs.dtype)
        if initial is not None:
            h = initial[index * states] + h
            if states == 2:
                c = initial[index * states + 1] + c
        starts.append((h, c))

    def stack(tensors: list[Any], axis: int) -> Any:
        return tensors[0] if count == 1 else tf.stack(tensors, axis)

    def unstack(tensor: Any, axis: int) -> list[Any]:
        return [tensor] if count == 1 else tf.unstack(tensor, count, axis)

    projected, steps = stack(projections, 1), None if steps is None else stack(masks, 1)
    h, c = stack([h for h, _ in starts], 0), stack([c for _, c in starts], 0)
    if not recurrence.return_sequences:
        h, c = _last_step(step, projected, steps, h, c, tf.shape(projected)[0])
        return [(None, h, c) for h, c in zip(unstack(h, 0), unstack(c, 0))]
    sequence, h, c = _sequence(step, projected, steps, h, c)
    results = []
    for index, (direction, h, c) in enumerate(zip(unstack(sequence, 1), unstack(h, 0), unstack(c, 0))):
        direction = tf.transpose(direction, [1, 0, 2])
        # A Bidirectional layer turns its backward sequence back into input order.
        results.append((tf.reverse(direction, [1]) if index == 1 else direction, h, c))
    return results


def loop_layer(recurrence: Recurrence, inputs: Any, call: LayerCall) -> Any:
    """The layer's outputs, as Keras returns them, from loops with hoisted input projections."""
    results = _directions(recurrence, inputs, call.mask, call.initial_state, recurrence.zero_output_for_mask)
    outputs = [sequence if recurrence.return_sequences else h for sequence, h, _ in results]
    merged = outputs[0] if len(outputs) == 1 else merge(recurrence.merge_mode, *outputs)
    if not recurrence.return_state:
        return merged
    states = 2 if recurrence.cell == "lstm" else 1
    finals = [state for _, h, c in results for state in ((h, c) if states == 2 else (h,))]
    return [*(merged if isinstance(merged, list) else [merged]), *finals]
