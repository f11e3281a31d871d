"""The one contract every backend runs behind: named numpy arrays in, named arrays out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from rnnexport.errors import UnsupportedModelError
from rnnexport.model import NEXT, TensorInfo

if TYPE_CHECKING:
    import numpy as np

Arrays: TypeAlias = "dict[str, np.ndarray]"


class Closable:
    """A runner, reference or probe that holds a session or an interpreter. Use it as a context
    manager (or call `close`) so that what it opened is released when the run is over."""

    def close(self) -> None:
        """Release sessions and interpreters; safe to call twice."""

    def __enter__(self) -> Closable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runner(Protocol):
    """Runs one artifact (or the source) on one device. `device` names where numbers came from."""

    name: str
    device: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays: ...


@dataclass(frozen=True)
class Timing:
    """How the reference is timed at one shape for the latency table: `call` runs it the way a
    deployer runs the source (compiled: a traced function, a session), and was warmed up at that
    shape; `how` says what it runs. `eager` says why it runs eagerly instead (tracing failed)."""

    call: Callable[[], object]
    how: str
    eager: str = ""


class ReferenceRunner(Runner, Protocol):
    def method(self, inputs: Mapping[str, np.ndarray]) -> str:
        """How the reference serves these inputs (e.g. the source as is, or rebuilt)."""
        ...

    # A reference may also define `serves(inputs) -> str`: why it holds no ground truth for
    # these inputs (empty when it does). The parity engine then skips the case and says why.
    # For the latency table it may define `timing(inputs, outputs) -> Timing` (`outputs`: what
    # `run` returned for `inputs`, to check a new trace against), and `per_shape(inputs) -> bool`:
    # whether timing these inputs costs a trace or an eager run of their own; else `run` is
    # timed, described by its `runs_as` attribute.

    def final_state(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """The state of every recurrent layer after the whole sequence, keyed `<state>_next`."""
        ...


# Each layer's output for some inputs, in the order the model computes them: (name, class, array).
LayerOutputs: TypeAlias = "Callable[[Mapping[str, np.ndarray]], list[tuple[str, str, np.ndarray]]]"


class Probe(Protocol):
    """Looks inside one export: every intermediate floating-point tensor it computes. `batch` is
    the batch the export runs at (None: any)."""

    batch: int | None

    def tensors(self, inputs: Mapping[str, np.ndarray]) -> Arrays: ...


class StreamRunner(Protocol):
    """Runs the streaming entry points of one artifact. States are keyed by their input names
    (`states`); the step entry point returns each as `<name>_next`."""

    name: str
    device: str
    states: list[str]

    def initial_state(self, batch: int) -> Arrays: ...

    def step(self, inputs: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
        """One chunk: the outputs, and the state after it keyed by state name."""
        ...


def state_names(inputs: Iterable[str], outputs: Iterable[str]) -> list[str]:
    """The step inputs that carry state: those returned again as `<name>_next`."""
    returned = set(outputs)
    return [name for name in inputs if name + NEXT in returned]


def split_state(outputs: Mapping[str, np.ndarray], states: Iterable[str]) -> tuple[Arrays, Arrays]:
    """A step's outputs, separated into the model's outputs and the next state keyed by state name."""
    states = list(states)
    carried = {name + NEXT for name in states}
    return ({k: v for k, v in outputs.items() if k not in carried}, {name: outputs[name + NEXT] for name in states})


def seen_tensor(name: str, dtype: Any, shape: Sequence[int | None], output: bool = False) -> TensorInfo:
    """An export's input or output as its runtime declares it, the time axis inferred the way
    rnnexport writes them: inputs `[batch, time, ...]` (an integer `[batch]` input holds each
    row's length), outputs with a time axis when of rank 3 or more."""
    import numpy as np

    dtype = np.dtype(dtype).name
    dims = tuple(None if d is None or isinstance(d, str) or d < 0 else int(d) for d in shape)
    if not output and len(dims) == 1 and np.issubdtype(np.dtype(dtype), np.integer):
        return TensorInfo(name, dtype, dims, None, role="lengths")
    time_axis = 1 if len(dims) >= (3 if output else 2) else None
    return TensorInfo(name, dtype, dims, time_axis)


class ExportReference(Closable):
    """Another export as the reference (`rnnexport compare A B`): A's outputs are the ground
    truth, its streaming entry points (fed the whole sequence as one chunk) the final states."""

    def __init__(self, runner: Runner, stream_runner: StreamRunner | None, label: str) -> None:
        self.runner, self.stream_runner, self.label = runner, stream_runner, label
        self.name, self.device = runner.name, runner.device

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        return self.runner.run(inputs)

    def method(self, inputs: Mapping[str, np.ndarray]) -> str:
        return f"the export {self.label}"

    @property
    def runs_as(self) -> str:
        return f"the export {self.label} in its runtime, as the other export"

    def final_state(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        if self.stream_runner is None:
            raise UnsupportedModelError(f"{self.label} has no streaming entry points")
        batch = next(iter(inputs.values())).shape[0]
        _, state = self.stream_runner.step(inputs, self.stream_runner.initial_state(batch))
        return {name + NEXT: value for name, value in state.items()}

    def close(self) -> None:
        for part in (self.runner, self.stream_runner):
            close = getattr(part, "close", None)
            if close is not None:
                close()
