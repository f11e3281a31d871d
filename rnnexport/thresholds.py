"""Thresholds a quantized export is judged by (see `rnnexport.parity.decisions`): declared per
quantization mode, overridable per run, resolved here. No heavy import."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Thresholds:
    """What a quantized export must reach on every output: SNR in dB, and on class scores the
    share of decisions that agree with the source and the mean KL divergence (nats)."""

    min_snr_db: float
    min_agreement: float
    max_kl: float

    def to_dict(self) -> dict[str, float]:
        return {"min_snr_db": self.min_snr_db, "min_agreement": self.min_agreement, "max_kl": self.max_kl}

    def __str__(self) -> str:
        return f"SNR >= {self.min_snr_db:g} dB, top-1 >= {self.min_agreement:.1%}, KL <= {self.max_kl:g}"


# Per quantization mode judged by decisions (TFLite int8 and int16x8, ONNX int8 and dynamic-range,
# whose activations onnxruntime quantizes at run time). int16 activations keep about 48 dB more
# range than int8. KL: an int8 softmax output rounds probabilities under 1/512 to zero, which alone
# gives the ML-KWS models 0.018-0.025 at 96-100% agreement. Measured: README.md, "Quantized exports".
DEFAULT_THRESHOLDS = {
    "int8": Thresholds(min_snr_db=20.0, min_agreement=0.99, max_kl=0.05),
    "int16x8": Thresholds(min_snr_db=30.0, min_agreement=0.99, max_kl=0.01),
    "dynamic-range": Thresholds(min_snr_db=20.0, min_agreement=0.99, max_kl=0.05),
}


@dataclass(frozen=True)
class ThresholdOverrides:
    """The user's thresholds over the mode's defaults (None: the default)."""

    min_snr_db: float | None = None
    min_agreement: float | None = None
    max_kl: float | None = None

    def apply(self, default: Thresholds) -> Thresholds:
        given = {k: v for k, v in vars(self).items() if v is not None}
        return replace(default, **given)
