"""Judging a quantized export by what the model decides: per output, the error's signal-to-noise
ratio against the float source, and for class scores the top-1 agreement and the KL divergence,
each against a threshold of the export's quantization mode. Pure numpy.

Class scores are outputs whose reference values lie in [0, 1] in every case: rows summing to 1
are a softmax (the decision is the arg max), others are sigmoids (the decision is > 0.5 per
element). `--task classify` declares every output class scores; an output that is not
probabilities is then read as logits (softmax taken before the KL divergence).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rnnexport.thresholds import Thresholds

# Probabilities are clipped to this before logarithms, so that a zero does not make KL infinite.
EPSILON = 1e-7
# A decision the float source makes clearly: its top class leads the second by at least this much
# probability (a sigmoid: p and 1 - p apart by as much). Near a tie an int8 export's noise flips
# decisions it does not flip elsewhere: on the ML-KWS models every disagreement had a float margin
# under 0.26, and at 0.2 or more they agreed on 99.2-100% (README, "Quantized exports"). Reported
# beside the agreement, never judged: the gate's agreement counts every decision.
CLEAR_MARGIN = 0.2
SOFTMAX, SIGMOID, LOGITS = "softmax", "sigmoid", "logits"


def class_kinds(references: Iterable[Mapping[str, np.ndarray]], task: str | None) -> dict[str, str]:
    """Which outputs are class scores, and of which kind, from the reference's outputs of every case."""
    kinds: dict[str, str] = {}
    seen: dict[str, bool] = {}
    sums: dict[str, bool] = {}
    for outputs in references:
        for name, value in outputs.items():
            value = np.asarray(value, np.float64)
            if value.size == 0 or not np.issubdtype(value.dtype, np.floating):
                continue
            probabilities = bool(np.all(np.isfinite(value)) and value.min() >= 0.0 and value.max() <= 1.0)
            seen[name] = seen.get(name, True) and probabilities
            rows_sum_to_one = value.shape[-1] > 1 and bool(np.allclose(value.sum(axis=-1), 1.0, atol=1e-3))
            sums[name] = sums.get(name, True) and rows_sum_to_one
    for name, probabilities in seen.items():
        if probabilities:
            kinds[name] = SOFTMAX if sums[name] else SIGMOID
        elif task == "classify":
            kinds[name] = LOGITS
    return kinds


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Scores:
    """Sums over one or more cases of one output, so that cases pool."""

    elements: int = 0
    signal: float = 0.0
    noise: float = 0.0
    abs_error: float = 0.0
    max_abs: float = 0.0
    decisions: int = 0
    agreeing: int = 0
    kl: float = 0.0
    # The decisions the source makes clearly (`CLEAR_MARGIN`), and how many of them agree.
    clear: int = 0
    clear_agreeing: int = 0

    def __add__(self, other: Scores) -> Scores:
        return Scores(self.elements + other.elements, self.signal + other.signal, self.noise + other.noise,
                      self.abs_error + other.abs_error, max(self.max_abs, other.max_abs),
                      self.decisions + other.decisions, self.agreeing + other.agreeing, self.kl + other.kl,
                      self.clear + other.clear, self.clear_agreeing + other.clear_agreeing)

    @property
    def snr_db(self) -> float | None:
        """None where the export is exact (no noise) or nothing was compared."""
        if self.noise <= 0.0 or self.elements == 0:
            return None
        return float(10.0 * np.log10(max(self.signal, 1e-30) / self.noise))

    @property
    def mean_abs(self) -> float | None:
        return self.abs_error / self.elements if self.elements else None

    @property
    def agreement(self) -> float | None:
        return self.agreeing / self.decisions if self.decisions else None

    @property
    def mean_kl(self) -> float | None:
        return self.kl / self.decisions if self.decisions else None

    @property
    def clear_agreement(self) -> float | None:
        return self.clear_agreeing / self.clear if self.clear else None


def scores(reference: np.ndarray, exported: np.ndarray, kind: str | None) -> Scores:
    """The sums of one case of one output (both arrays finite and of one shape)."""
    ref = np.asarray(reference, np.float64)
    exp = np.asarray(exported, np.float64)
    diff = exp - ref
    found = Scores(int(ref.size), float(np.sum(ref * ref)), float(np.sum(diff * diff)), float(np.sum(np.abs(diff))),
                   float(np.max(np.abs(diff), initial=0.0)))
    if kind is None or ref.size == 0:
        return found
    if kind == SIGMOID:
        p, q = np.clip(ref, EPSILON, 1 - EPSILON), np.clip(exp, EPSILON, 1 - EPSILON)
        # Clipping leaves a tiny negative divergence where both sides agree: it is zero.
        kl = np.maximum(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)), 0.0)
        agree, clear = (ref > 0.5) == (exp > 0.5), np.abs(2 * ref - 1) >= CLEAR_MARGIN
        return replace(found, decisions=int(ref.size), agreeing=int(np.sum(agree)), kl=float(np.sum(kl)),
                       clear=int(np.sum(clear)), clear_agreeing=int(np.sum(agree & clear)))
    if kind == LOGITS:
        ref, exp = _softmax(ref), _softmax(exp)
    p, q = np.clip(ref, EPSILON, 1.0), np.clip(exp, EPSILON, 1.0)
    kl = np.maximum(np.sum(p * np.log(p / q), axis=-1), 0.0)
    agree = ref.argmax(-1) == exp.argmax(-1)
    top = np.sort(ref, axis=-1)
    clear = top[..., -1] - top[..., -2] >= CLEAR_MARGIN
    return replace(found, decisions=int(kl.size), agreeing=int(np.sum(agree)), kl=float(np.sum(kl)),
                   clear=int(np.sum(clear)), clear_agreeing=int(np.sum(agree & clear)))


@dataclass(frozen=True)
class OutputQuality:
    """One output of a quantized export over every case compared, against `thresholds`; its SNR
    per sequence length shows how the error accumulates along the recurrence."""

    name: str
    kind: str | None
    totals: Scores
    by_length: tuple[tuple[int, Scores], ...] = ()
    thresholds: Thresholds | None = None
    calibration: str = ""
    reasons: tuple[str, ...] = field(default=())

    @classmethod
    def judged(cls, name: str, kind: str | None, totals: Scores, by_length: tuple[tuple[int, Scores], ...],
               thresholds: Thresholds, calibration: str) -> OutputQuality:
        reasons = []
        snr = totals.snr_db
        if snr is not None and snr < thresholds.min_snr_db:
            reasons.append(f"SNR {snr:.1f} dB < {thresholds.min_snr_db:g} dB")
        if kind is not None and totals.agreement is not None:
            if totals.agreement < thresholds.min_agreement:
                clear = "" if totals.clear_agreement is None else (
                    f"; {totals.clear_agreement:.1%} of the {totals.clear} the source makes by a margin of "
                    f"{CLEAR_MARGIN:g} or more agree")
                reasons.append(f"top-1 agreement {totals.agreement:.1%} < {thresholds.min_agreement:.1%} "
                               f"({totals.decisions - totals.agreeing} of {totals.decisions} decisions differ{clear})")
            if totals.mean_kl > thresholds.max_kl:
                reasons.append(f"KL divergence {totals.mean_kl:.3g} > {thresholds.max_kl:g}")
        return cls(name, kind, totals, by_length, thresholds, calibration, tuple(reasons))

    @property
    def passed(self) -> bool:
        return not self.reasons

    def __bool__(self) -> bool:
        return self.passed

    def describe(self) -> str:
        text = f"output '{self.name}': {'; '.join(self.reasons)}"
        if self.calibration:
            text += f"; calibrated on {self.calibration}: check that the calibration data covers real inputs"
        return text

    def to_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "name": self.name,
            "passed": self.passed,
            "class_scores": self.kind,
            "max_abs": t.max_abs,
            "mean_abs": t.mean_abs,
            "snr_db": t.snr_db,
            "top1_agreement": t.agreement,
            "top1_agreement_clear": None if self.kind is None else {
                "margin": CLEAR_MARGIN, "decisions": t.clear, "agreement": t.clear_agreement},
            "kl_divergence": t.mean_kl,
            "decisions": t.decisions,
            "thresholds": self.thresholds.to_dict() if self.thresholds else None,
            "by_length": [{"length": length, "snr_db": s.snr_db, "max_abs": s.max_abs, "top1_agreement": s.agreement}
                          for length, s in self.by_length],
            "reasons": list(self.reasons),
        }


def judge(pairs: Iterable[tuple[int | None, Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
          thresholds: Thresholds, task: str | None, calibration: str = "") -> tuple[OutputQuality, ...]:
    """Each output pooled over `pairs` (length, reference outputs, export outputs) of the cases
    both sides computed; an output whose shapes differ or that is not finite is left to the
    case's own comparison, which fails it."""
    pairs = list(pairs)
    kinds = class_kinds((reference for _, reference, _ in pairs), task)
    totals: dict[str, Scores] = {}
    by_length: dict[str, dict[int, Scores]] = {}
    for length, reference, exported in pairs:
        for name, ref in reference.items():
            exp = exported.get(name)
            if exp is None or np.shape(exp) != np.shape(ref) or not (np.all(np.isfinite(ref)) and np.all(np.isfinite(exp))):
                continue
            found = scores(ref, exp, kinds.get(name))
            totals[name] = totals.get(name, Scores()) + found
            if length is not None:
                per_length = by_length.setdefault(name, {})
                per_length[length] = per_length.get(length, Scores()) + found
    return tuple(OutputQuality.judged(name, kinds.get(name), total, tuple(sorted(by_length.get(name, {}).items())),
                                      thresholds, calibration) for name, total in totals.items())
