"""The layers a TF1 front end is made of, as `frontends` reads them: each knows the Keras layer
that computes it, how many steps it makes of T input steps, and how `inspect` names it.

Dense layers and 1-D convolutions work on [batch, time, features]; 2-D convolutions and pooling
work on the image [batch, time, features, channels], which `apply` makes of the sequence before
the first of them (one channel) and turns back into one vector per step after the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _out(size: int, window: int, stride: int, padding: str) -> int:
    """What TensorFlow's VALID or SAME windows make of `size`."""
    return (size - window) // stride + 1 if padding == "VALID" else -(-size // stride)


@dataclass(frozen=True, eq=False)
class _Windowed:
    """A layer sliding a window of `window` steps by `stride` over time."""

    padding: str  # VALID or SAME

    image = False

    def _time(self) -> tuple[int, int]:
        """(window, stride) along time."""
        raise NotImplementedError

    @property
    def minimum(self) -> int:
        """The fewest steps it takes: a VALID window needs a whole window."""
        return self._time()[0] if self.padding == "VALID" else 1

    def steps(self, length: int) -> int:
        """The steps it makes of `length` steps."""
        return _out(length, *self._time(), self.padding)

    def arithmetic(self) -> str:
        window, stride = self._time()
        if self.padding == "VALID":
            return f"T' = floor((T - {window}) / {stride}) + 1"
        return f"T' = ceil(T / {stride}) (SAME padding: step t also reads up to {window // 2} later steps)"


@dataclass(frozen=True, eq=False)
class Dense:
    """A dense layer on every step's features."""

    kernel: np.ndarray
    bias: np.ndarray | None
    activation: str

    image = False
    minimum = 1

    def steps(self, length: int) -> int:
        return length

    def describe(self) -> str:
        return f"Dense({self.kernel.shape[1]}, activation={self.activation})"

    def keras(self, x: Any, name: str) -> Any:
        import keras

        layer = keras.layers.Dense(self.kernel.shape[1], activation=self.activation, use_bias=self.bias is not None,
                                   name=name)
        x = layer(x)
        layer.set_weights([self.kernel] + ([self.bias] if self.bias is not None else []))
        return x


@dataclass(frozen=True, eq=False)
class Conv1D(_Windowed):
    """A convolution over time with the features as channels (`tf.nn.conv1d`: a Conv2D of height
    1 between ExpandDims and Squeeze)."""

    kernel: np.ndarray  # [time, features, filters]
    bias: np.ndarray | None
    activation: str
    stride: int

    def _time(self) -> tuple[int, int]:
        return self.kernel.shape[0], self.stride

    def describe(self) -> str:
        return (f"Conv1D({self.kernel.shape[2]}, kernel={self.kernel.shape[0]}, strides={self.stride}, "
                f"padding={self.padding}, activation={self.activation})")

    def keras(self, x: Any, name: str) -> Any:
        import keras

        layer = keras.layers.Conv1D(self.kernel.shape[2], self.kernel.shape[0], strides=self.stride,
                                    padding=self.padding.lower(), activation=self.activation,
                                    use_bias=self.bias is not None, name=name)
        x = layer(x)
        layer.set_weights([self.kernel] + ([self.bias] if self.bias is not None else []))
        return x


@dataclass(frozen=True, eq=False)
class Conv2D(_Windowed):
    """A convolution over (time, features) of the image, NHWC."""

    kernel: np.ndarray  # [time, features, channels in, filters], as TensorFlow holds it
    bias: np.ndarray | None
    activation: str
    strides: tuple[int, int]
    features: int  # the image's width where it is applied

    image = True

    def _time(self) -> tuple[int, int]:
        return self.kernel.shape[0], self.strides[0]

    @property
    def width(self) -> int:
        """The image's width after it."""
        return _out(self.features, self.kernel.shape[1], self.strides[1], self.padding)

    @property
    def channels(self) -> int:
        return self.kernel.shape[3]

    def describe(self) -> str:
        return (f"Conv2D({self.kernel.shape[3]}, kernel={self.kernel.shape[0]}x{self.kernel.shape[1]}, "
                f"strides={self.strides[0]}x{self.strides[1]}, padding={self.padding}, activation={self.activation})")

    def keras(self, x: Any, name: str) -> Any:
        import keras

        height, width, _, filters = self.kernel.shape
        layer = keras.layers.Conv2D(filters, (height, width), strides=self.strides, padding=self.padding.lower(),
                                    activation=self.activation, use_bias=self.bias is not None, name=name)
        x = layer(x)
        layer.set_weights([self.kernel] + ([self.bias] if self.bias is not None else []))
        return x


@dataclass(frozen=True, eq=False)
class Pool2D(_Windowed):
    """Max or average pooling over (time, features) of the image, NHWC."""

    kind: str  # max or avg
    window: tuple[int, int]
    strides: tuple[int, int]
    features: int
    channels: int

    image = True

    def _time(self) -> tuple[int, int]:
        return self.window[0], self.strides[0]

    @property
    def width(self) -> int:
        return _out(self.features, self.window[1], self.strides[1], self.padding)

    def describe(self) -> str:
        return (f"{self.kind.capitalize()}Pool2D({self.window[0]}x{self.window[1]}, "
                f"strides={self.strides[0]}x{self.strides[1]}, padding={self.padding})")

    def keras(self, x: Any, name: str) -> Any:
        import keras

        layer = keras.layers.MaxPooling2D if self.kind == "max" else keras.layers.AveragePooling2D
        return layer(self.window, strides=self.strides, padding=self.padding.lower(), name=name)(x)


Stage = Dense | Conv1D | Conv2D | Pool2D


def same(a: Stage, b: Stage) -> bool:
    """True when two layers compute the same: same kind, settings and weight values."""
    if type(a) is not type(b):
        return False
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


def apply(frontend: tuple[Stage, ...], x: Any, prefix: str = "frontend") -> Any:
    """The front end as Keras layers `<prefix>_<i>` on `x` [batch, time, features]: the sequence
    becomes an image of one channel before a 2-D layer, and one vector per step again after the
    last one."""
    import keras

    image: Any = None  # the last 2-D layer while `x` is an image
    for index, stage in enumerate(frontend):
        if stage.image and image is None:
            x = keras.layers.Reshape((-1, stage.features, 1), name=f"{prefix}_{index}_image")(x)
        elif not stage.image and image is not None:
            x = keras.layers.Reshape((-1, image.width * image.channels), name=f"{prefix}_{index}_steps")(x)
        image = stage if stage.image else None
        x = stage.keras(x, f"{prefix}_{index}")
    if image is not None:
        x = keras.layers.Reshape((-1, image.width * image.channels), name=f"{prefix}_steps")(x)
    return x
