"""A Keras model run a chunk at a time: each recurrent layer starts from a state given as an input
and returns the state it ends in; each causal window (`windows`) reads the last steps of the
previous chunk from a state and returns the last steps of this one.

The model's own graph is walked once per trace, calling every layer as the model would, except
that recurrent layers receive `initial_state` and return their final states as well, and windows
read their state where they would read padding. Only models whose other layers compute each time
step on its own can be cut into chunks this way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from rnnexport_converters.keras import recurrences as keras_recurrences
from rnnexport_converters.keras import windows as keras_windows

from rnnexport.model import WINDOW, Replacement, StateInfo, Streaming, TensorInfo, state_name
from rnnexport.tf import function as traced, tensorflow

# Layers that compute each time step from that step alone (given the `axis` check below).
PER_STEP = frozenset({
    "InputLayer", "Dense", "EinsumDense", "TimeDistributed", "VariableTimeDistributed", "Embedding", "Masking",
    "Activation", "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "BatchNormalization", "LayerNormalization", "Concatenate", "Add", "Subtract",
    "Multiply", "Average", "Maximum", "Minimum", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Identity",
    "SequenceMask", "TrainedState",
})
RECURRENT = frozenset({"LSTM", "GRU", "SimpleRNN", "RNN"})


def _nested(layer: Any) -> Any:
    """The functional graph of a nested model (Sequential keeps one inside), or None."""
    import keras

    if isinstance(layer, keras.Sequential):
        return layer._functional
    if isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"):
        return layer
    return None


def _layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if _nested(layer) is not None:
            yield from _layers(layer)
        else:
            yield layer


def state_roles(layer: Any) -> tuple[tuple[str, int], ...]:
    """(role, size) of each state a recurrent layer carries, in the order Keras passes them
    (empty for a cell whose states rnnexport cannot name)."""
    cell = layer.cell
    kind = type(cell).__name__
    if kind == "LSTMCell":
        return ("h", cell.units), ("c", cell.units)
    if kind == "PeepholeLSTMCell":
        return ("c", cell.units), ("h", cell.output_size)
    if kind in ("GRUCell", "SimpleRNNCell"):
        return (("h", cell.units),)
    return ()


def _last_axis_only(layer: Any) -> bool:
    axis = getattr(layer, "axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    rank = len(layer.output.shape) if not isinstance(layer.output, (list, tuple)) else len(layer.output[0].shape)
    return all(a in (-1, rank - 1) for a in axes)


def _windows(model: Any) -> keras_windows.Plan:
    return keras_windows.plan(list(_layers(model)), list(getattr(model, "outputs", [])), PER_STEP)


def not_streamable(model: Any) -> str:
    """Why this model cannot run chunk by chunk with explicit state, naming the layer (empty: it can)."""
    windowed = _windows(model)
    if windowed.refused:
        return windowed.refused
    for layer in _layers(model):
        kind = type(layer).__name__
        if kind in keras_windows.LAYERS:
            continue
        if kind == "Bidirectional":
            return f"layer '{layer.name}' (Bidirectional) reads each sequence backwards, so it needs the whole sequence"
        if kind in RECURRENT:
            if layer.go_backwards:
                return f"layer '{layer.name}' ({kind}, go_backwards=True) needs the whole sequence"
            if not state_roles(layer):
                return f"layer '{layer.name}' runs a {type(layer.cell).__name__}, whose states rnnexport cannot name"
            if len(layer._inbound_nodes) > 1:
                calls = len(layer._inbound_nodes)
                return f"layer '{layer.name}' ({kind}) is called {calls} times, each call with a state of its own"
            if _given_states(layer) and trained_states(layer) is None:
                source = _given_states(layer)[0]._keras_history.operation.name
                return (f"layer '{layer.name}' ({kind}) takes its initial state from layer '{source}', so no chunk "
                        "can start from the state the previous one ended in")
            continue
        if kind not in PER_STEP:
            return (f"layer '{layer.name}' ({kind}) may combine several time steps; only recurrent layers can carry "
                    "state from one chunk to the next")
        if not _last_axis_only(layer):
            return f"layer '{layer.name}' ({kind}) works across the time axis (axis={layer.axis})"
    return ""


def _given_states(layer: Any) -> list[Any]:
    """The tensors a recurrent layer is given as its initial state in the model's graph."""
    node = layer._inbound_nodes[0]
    given = node.arguments.kwargs.get("initial_state") or list(node.arguments.args[1:])
    return list(given) if isinstance(given, (list, tuple)) else [given]


def trained_states(layer: Any) -> list[Any] | None:
    """The `TrainedState` layers a recurrent layer starts from (None: it starts from zeros)."""
    given = _given_states(layer)
    if not given:
        return None
    makers = [t._keras_history.operation for t in given]
    return makers if all(type(m).__name__ == "TrainedState" for m in makers) else None


def recurrent_layers(model: Any) -> list[Any]:
    return [layer for layer in _layers(model) if type(layer).__name__ in RECURRENT]


def states_of(model: Any) -> tuple[StateInfo, ...]:
    """The states of every causal window and recurrent layer, in graph order, named
    `<layer>_<role>` (step outputs `<layer>_<role>_next`)."""
    windows = {id(w.layer): w for w in _windows(model).windows}
    states = []
    for layer in _layers(model):
        if id(layer) in windows:
            window = windows[id(layer)]
            states.append(StateInfo.of(layer.name, WINDOW, (window.steps, window.channels)))
        elif type(layer).__name__ in RECURRENT:
            states += [StateInfo.of(layer.name, role, size) for role, size in state_roles(layer)]
    return tuple(states)


@contextlib.contextmanager
def _returning_state(layers: Sequence[Any]) -> Iterator[None]:
    saved = [(layer, layer.return_state) for layer in layers]
    for layer in layers:
        layer.return_state = True
    try:
        yield
    finally:
        for layer, value in saved:
            layer.return_state = value


def run_chunk(model: Any, inputs: Sequence[Any], states: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The model's outputs on `inputs` with each recurrent layer starting from `states` (keyed by
    state name), and the states each ends in (keyed by the `_next` names)."""
    layers = recurrent_layers(model)
    requested = {layer.name: layer.return_state for layer in layers}
    own: dict[str, list[StateInfo]] = {layer.name: [] for layer in layers}
    windows = {w.layer.name: w for w in _windows(model).windows}
    for info in states_of(model):
        own.setdefault(info.layer, []).append(info)
    finals: dict[str, Any] = {}

    def operation_fn(operation: Any) -> Any:
        graph = _nested(operation)
        if graph is not None:
            return lambda *args, **kwargs: _walk(graph, args[0])
        if operation.name in windows:
            def windowed(*args: Any, **kwargs: Any) -> Any:
                (info,) = own[operation.name]
                output, finals[info.next_name] = keras_windows.call(windows[operation.name], operation, args[0],
                                                                    states[info.name], kwargs)
                return output
            return windowed
        if type(operation).__name__ not in RECURRENT:
            def call(*args: Any, **kwargs: Any) -> Any:
                if "training" in getattr(operation, "_call_context_args", {}):
                    kwargs["training"] = False
                return operation(*args, **kwargs)
            return call

        def recurrent(*args: Any, **kwargs: Any) -> Any:
            # A trained initial state starts the sequence, which `initial_state()` returns; each
            # chunk starts from the state given instead.
            layer_states = own[operation.name]
            kwargs["training"] = False
            kwargs["initial_state"] = [states[s.name] for s in layer_states]
            returned = operation(args[0], **kwargs)
            for info, value in zip(layer_states, returned[1:]):
                finals[info.next_name] = value
            return returned if requested[operation.name] else returned[0]
        return recurrent

    def _walk(graph: Any, tensors: Any) -> Any:
        return graph._run_through_graph(tensors, operation_fn=operation_fn)

    with _returning_state(layers):
        graph = _nested(model)
        outputs = _walk(graph, list(inputs))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return list(outputs), finals


def initial_values(model: Any) -> dict[str, np.ndarray]:
    """The trained initial states of the model's recurrent layers, keyed by state name."""
    from keras import ops

    values = {}
    for layer in recurrent_layers(model):
        for (role, _), maker in zip(state_roles(layer), trained_states(layer) or []):
            values[state_name(layer.name, role)] = ops.convert_to_numpy(maker.value)
    return values


def start_state(model: Any, batch: int) -> dict[str, np.ndarray]:
    """The state the model starts each sequence from, for `batch` rows, keyed by state name."""
    trained = initial_values(model)
    return {s.name: np.broadcast_to(trained[s.name], (batch, *s.shape)).copy() if s.name in trained
            else np.zeros((batch, *s.shape), s.dtype) for s in states_of(model)}


def streaming(model: Any, module: Any, inputs: Sequence[TensorInfo], output_names: Sequence[str]) -> Streaming:
    """The initial-state and step functions of `model`, tracked by `module` for saving."""
    tf = tensorflow()
    states = states_of(model)

    def trace_step_with(replacement: Replacement | None, batch: int | None) -> tuple[Any, dict[str, str]]:
        left: dict[str, str] = {}
        if replacement is None:
            return trace_step(batch), left
        layers = [layer for layer in recurrent_layers(model) if keras_recurrences.is_recurrent(layer)]
        with keras_recurrences.replaced(layers, replacement, left):
            return trace_step(batch), left

    def trace_step(batch: int | None) -> Any:
        specs = [tf.TensorSpec((batch, *spec.shape[1:]), spec.dtype, name=spec.name) for spec in inputs]
        specs += [tf.TensorSpec((batch, *s.shape), s.dtype, name=s.name) for s in states]

        def step(*tensors: Any) -> dict[str, Any]:
            given = dict(zip([s.name for s in states], tensors[len(inputs):]))
            outputs, finals = run_chunk(model, tensors[:len(inputs)], given)
            result = {name: tf.identity(out, name=name) for name, out in zip(output_names, outputs)}
            result.update({s.next_name: tf.identity(finals[s.next_name], name=s.next_name) for s in states})
            return result

        function = traced(step, input_signature=specs)
        function.get_concrete_function()
        return function

    trained = initial_values(model)

    def initial_state(batch: Any) -> dict[str, Any]:
        values = {}
        for s in states:
            shape = tf.stack([batch, *s.shape])
            start = tf.broadcast_to(trained[s.name], shape) if s.name in trained else tf.zeros(shape, dtype=s.dtype)
            values[s.name] = tf.identity(start, name=s.name)
        return values

    init = traced(initial_state, input_signature=[tf.TensorSpec((), tf.int32, name="batch")])
    init.get_concrete_function()
    module.initial_state = init
    module.step = trace_step(None)
    return Streaming(states, module.initial_state, module.step, trace_step, trace_step_with)
