"""Running a TFLite export on the LiteRT interpreter: the sequence signature, the streaming
signatures, and a probe that keeps every tensor."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import ExportError, NotRunnableError, one_line
from rnnexport.runner import Arrays, Closable, split_state, state_names
from rnnexport.tf import threads
from rnnexport_converters.tflite.files import read_file


class TfliteRunner(Closable):
    """Runs the file as deployers call it: one interpreter, its `serving_default` signature runner
    called case after case with no reset in between (a file that keeps state between calls then
    fails the sweep's repeated case), on LiteRT's default XNNPACK delegate. A file with a fixed
    batch runs larger batches in chunks of its batch."""

    name = "tflite"

    def __init__(self, path: Path, preserve_all_tensors: bool = False) -> None:
        from ai_edge_litert.interpreter import Interpreter

        flex = sorted(op for op in read_file(path)[1] if op.startswith("Flex"))
        if flex:
            # The LiteRT wheel has no Flex delegate: such a file loads, then fails at every invoke.
            raise NotRunnableError(
                f"{path}: uses TensorFlow (Flex) ops {', '.join(flex)}, which this LiteRT interpreter cannot run"
            )
        try:
            with warnings.catch_warnings():
                # It warns that keeping every tensor costs memory: the point when probing.
                warnings.simplefilter("ignore")
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads() or None,
                                               experimental_preserve_all_tensors=preserve_all_tensors)
            # Only its details here: a live signature runner pins the interpreter's buffers, which
            # the probe's own resizing needs free.
            signature = self.interpreter.get_signature_runner()
            inputs, outputs = signature.get_input_details(), signature.get_output_details()
            del signature
        except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError/ValueError with C++ text
            raise ExportError(f"{path}: the LiteRT interpreter cannot load it: {one_line(exc, typed=False)}") from None
        batches = {int(d["shape_signature"][0]) for d in inputs.values()}
        self.batch = batches.pop() if len(batches) == 1 and -1 not in batches else None
        self.inputs = {name: (d["index"], d["dtype"]) for name, d in inputs.items()}
        self.outputs = {name: d["index"] for name, d in outputs.items()}
        # An --integer-io file takes and returns integers: fed real values quantized, read dequantized.
        self.scales = {name: d["quantization"] for name, d in (*inputs.items(), *outputs.items())
                       if d["quantization"][0] and np.issubdtype(d["dtype"], np.integer)}
        self.device = "CPU (LiteRT, XNNPACK delegate)"

    @functools.cached_property
    def signature(self) -> Any:
        return self.interpreter.get_signature_runner()

    def _feed(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name, (_, dtype) in self.inputs.items():
            value = inputs[name]
            if name in self.scales:
                scale, zero_point = self.scales[name]
                limits = np.iinfo(dtype)
                value = np.clip(np.round(np.asarray(value) / scale) + zero_point, limits.min, limits.max)
            feed[name] = np.asarray(value, dtype=dtype)
        return feed

    def _read(self, name: str, value: np.ndarray) -> np.ndarray:
        if name not in self.scales:
            return np.array(value)
        scale, zero_point = self.scales[name]
        return ((np.asarray(value, np.float32) - zero_point) * scale).astype(np.float32)

    def _call(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        return {name: self._read(name, value) for name, value in self.signature(**self._feed(inputs)).items()}

    def _invoke(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """One call through the interpreter itself, so that its tensors can be read afterwards."""
        interpreter = self.interpreter
        feed = self._feed(inputs)
        for name, (index, _) in self.inputs.items():
            interpreter.resize_tensor_input(index, feed[name].shape)
        interpreter.allocate_tensors()
        for name, (index, _) in self.inputs.items():
            interpreter.set_tensor(index, feed[name])
        interpreter.invoke()
        return {name: self._read(name, interpreter.get_tensor(index)) for name, index in self.outputs.items()}

    def tensors(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """After one invoke at the file's batch, every floating-point tensor the interpreter kept, and
        every quantized one, dequantized."""
        self._invoke(inputs)
        found = {}
        for detail in self.interpreter.get_tensor_details():
            scale, zero_point = detail["quantization"]
            quantized = bool(scale) and detail["dtype"] in (np.int8, np.int16)
            if not (np.issubdtype(detail["dtype"], np.floating) or quantized):
                continue
            try:
                value = np.array(self.interpreter.get_tensor(detail["index"]))
            except ValueError:
                continue  # a tensor without data (a scratch buffer the interpreter never filled)
            found[detail["name"]] = ((value.astype(np.float32) - zero_point) * scale) if quantized else value
        return found

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        size = next(iter(inputs.values())).shape[0]
        if self.batch is None or size == self.batch:
            return self._call(inputs)
        chunks = []
        for start in range(0, size, self.batch):
            rows = np.arange(start, start + self.batch).clip(max=size - 1)
            out = self._call({name: value[rows] for name, value in inputs.items()})
            chunks.append({name: value[: size - start] for name, value in out.items()})
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    def close(self) -> None:
        # LiteRT frees an interpreter's buffers when the last reference to it goes.
        self.__dict__.pop("signature", None)
        self.interpreter = None


class TfliteProbe(Closable):
    """The file on an interpreter that keeps every tensor, loaded only when a failing export is probed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @functools.cached_property
    def _runner(self) -> TfliteRunner:
        return TfliteRunner(self.path, preserve_all_tensors=True)

    @property
    def batch(self) -> int | None:
        return self._runner.batch

    def tensors(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        return self._runner.tensors(inputs)

    def close(self) -> None:
        if "_runner" in self.__dict__:
            self._runner.close()


class TfliteStreamRunner(Closable):
    """The `step` and `initial_state` signatures of `m.step.tflite`, through LiteRT's signature
    runners. A file with a fixed batch runs a larger batch in groups of its batch, each with its
    own state."""

    name = "tflite"

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads() or None)
            self._step = self.interpreter.get_signature_runner("step")
            self._initial = self.interpreter.get_signature_runner("initial_state")
        except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError/ValueError with C++ text
            raise ExportError(f"{path}: the LiteRT interpreter cannot load its streaming signatures: "
                              f"{one_line(exc, typed=False)}") from None
        inputs, outputs = self._step.get_input_details(), self._step.get_output_details()
        fixed = int(next(iter(inputs.values()))["shape_signature"][0])
        self.batch = None if fixed == -1 else fixed
        self.inputs = {name: d["dtype"] for name, d in inputs.items()}
        self.states = state_names(inputs, outputs)
        self.device = "CPU (LiteRT, XNNPACK delegate)"

    def initial_state(self, batch: int) -> Arrays:
        state = self._initial(batch=np.asarray(batch, np.int32))
        return {name: np.array(value) for name, value in state.items()}

    def step(self, inputs: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
        given = {**inputs, **state}
        if self.batch is None:
            out = self._step(**{name: np.asarray(given[name], dtype) for name, dtype in self.inputs.items()})
            return split_state({name: np.array(value) for name, value in out.items()}, self.states)
        size = next(iter(given.values())).shape[0]
        groups = []
        for start in range(0, size, self.batch):
            rows = np.arange(start, start + self.batch).clip(max=size - 1)
            out = self._step(**{name: np.asarray(given[name][rows], dtype) for name, dtype in self.inputs.items()})
            groups.append({name: np.array(value[: size - start]) for name, value in out.items()})
        merged = {name: np.concatenate([g[name] for g in groups]) for name in groups[0]}
        return split_state(merged, self.states)

    def close(self) -> None:
        # LiteRT frees an interpreter's buffers when the last reference to it goes.
        self._step = self._initial = self.interpreter = None
