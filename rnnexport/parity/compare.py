"""Comparing arrays: one output against its reference, and a source's layers against an export's
intermediate tensors. Pure numpy; knows nothing of runners or formats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rnnexport.parity.results import LayerDrift, OutputComparison, OutputStats
from rnnexport.tolerance import Tolerance

# Relative error divides by max(|reference|, REL_FLOOR) so that near-zero outputs do not explode.
REL_FLOOR = 1e-3


def _where(index: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in index)


def compare_output(
    name: str, reference: np.ndarray, exported: np.ndarray | None, tolerance: Tolerance, time_axis: int | None
) -> OutputComparison:
    """One output against its reference with the criterion |export - reference| <= atol + rtol * |reference|,
    element by element; says what that measured: the worst ratio of error to allowed error and
    where, and the mean, median and 99th percentile of the absolute error."""
    ref_shape = tuple(reference.shape)
    if exported is None:
        return OutputComparison(name, False, ref_shape, None, reason=f"the export has no output '{name}'")
    exp_shape = tuple(exported.shape)
    if exp_shape != ref_shape:
        return OutputComparison(name, False, ref_shape, exp_shape, reason=f"shape {exp_shape} != reference {ref_shape}")
    ref = reference.astype(np.float64)
    exp = exported.astype(np.float64)
    bad_ref = int(np.size(ref) - np.count_nonzero(np.isfinite(ref)))
    bad_exp = int(np.size(exp) - np.count_nonzero(np.isfinite(exp)))
    if ref.size == 0:
        return OutputComparison(name, True, ref_shape, exp_shape, 0.0, 0.0, worst_ratio=0.0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(exp - ref)
        excess = diff - tolerance.rtol * np.abs(ref)
        rel = diff / np.maximum(np.abs(ref), REL_FLOOR)
        allowed = tolerance.atol + tolerance.rtol * np.abs(ref)
        # An exact match scores 0 even where nothing is allowed; any other error there is infinite.
        ratios = np.where(diff == 0, 0.0, diff / allowed)
    finite = np.isfinite(diff)
    # None where no element compares (every one NaN or Inf): JSON has no NaN.
    max_abs = max_rel = needed = worst_ratio = worst_index = mean_abs = median_abs = p99_abs = None
    if finite.any():
        errors = diff[finite]
        max_abs, max_rel = float(np.max(errors)), float(np.max(rel[finite]))
        needed = float(max(0.0, np.max(excess[finite])))
        mean_abs, median_abs = float(np.mean(errors)), float(np.median(errors))
        p99_abs = float(np.percentile(errors, 99))
        scored = np.where(finite, ratios, -1.0)
        worst_index = _where(np.unravel_index(int(np.argmax(scored)), scored.shape))
        worst_ratio = float(scored[worst_index])
    within = np.where(np.isfinite(excess), excess <= tolerance.atol, False)
    first_bad = None
    if not within.all() and time_axis is not None and ref.ndim > time_axis:
        per_step = np.moveaxis(~within, time_axis, 0).reshape(ref.shape[time_axis], -1).any(axis=1)
        first_bad = int(np.argmax(per_step))
    reasons = []
    if bad_ref or bad_exp:
        reasons.append(f"NaN/Inf: {bad_exp} in export, {bad_ref} in reference")
    if not within.all() and not (bad_ref or bad_exp):
        where = f" from time step {first_bad}" if first_bad is not None else ""
        reasons.append(
            f"max abs err {max_abs:.3g} exceeds atol {tolerance.atol:g} + rtol {tolerance.rtol:g}{where}; "
            f"{worst_ratio:.3g}x the allowed error at {name}{list(worst_index)} (would pass with atol {needed:.3g})"
        )
    passed = not reasons
    return OutputComparison(
        name, passed, ref_shape, exp_shape, max_abs, max_rel, bad_ref, bad_exp, first_bad, needed, "; ".join(reasons),
        worst_ratio, worst_index, mean_abs, median_abs, p99_abs,
    )


def output_stats(name: str, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> OutputStats:
    """The absolute error of one output over every case it was compared in, (reference,
    export) pairs of the same shape: mean, median, 99th percentile and max over all elements."""
    errors = [np.abs(exp.astype(np.float64) - ref.astype(np.float64)).ravel() for ref, exp in pairs]
    joined = np.concatenate(errors) if errors else np.zeros(0)
    joined = joined[np.isfinite(joined)]
    if not joined.size:
        return OutputStats(name, 0)
    return OutputStats(name, int(joined.size), float(np.mean(joined)), float(np.median(joined)),
                       float(np.percentile(joined, 99)), float(np.max(joined)))


def _aligned(value: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """`value` laid out as `reference` (both without size-1 axes), allowing time-major layouts."""
    if value.shape == reference.shape:
        return value
    if value.ndim >= 2 and (value.shape[1], value.shape[0], *value.shape[2:]) == reference.shape:
        return np.swapaxes(value, 0, 1)
    return None


def _same_nonfinite_cleared(reference: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays with the elements that are NaN in both, or the same infinity, set to 0: a layer
    that reproduces its source's NaN matches there; the first layer whose NaN or Inf the other
    side lacks is where the drift starts."""
    with np.errstate(invalid="ignore"):
        same = (np.isnan(reference) & np.isnan(value)) | (np.isinf(reference) & (reference == value))
    if not same.any():
        return reference, value
    return np.where(same, 0, reference), np.where(same, 0, value)


def compare_layers(layers: Sequence[tuple[str, str, np.ndarray]], tensors: Mapping[str, np.ndarray],
                   tolerance: Tolerance) -> tuple[LayerDrift, ...]:
    """Each layer's output against the export's intermediate tensor closest to it. A layer matches
    when some tensor of the export reproduces it within `tolerance`."""
    candidates = {name: np.squeeze(value) for name, value in tensors.items()
                  if np.issubdtype(value.dtype, np.floating) and value.size > 1}
    found = []
    for name, kind, output in layers:
        reference = np.squeeze(output)
        time_axis = None
        if output.ndim >= 3 and output.shape[1] > 1:
            time_axis = 1 if output.shape[0] > 1 else 0
        best: tuple[tuple[bool, float], OutputComparison, str] | None = None
        for tensor, value in candidates.items():
            aligned = _aligned(value, reference)
            if aligned is None:
                continue
            comparison = compare_output(name, *_same_nonfinite_cleared(reference, aligned), tolerance, time_axis)
            nonfinite = comparison.nonfinite_reference + comparison.nonfinite_export
            error = comparison.max_abs if comparison.max_abs is not None and not nonfinite else np.inf
            rank = (not comparison.passed, error)
            if best is None or rank < best[0]:
                best = (rank, comparison, tensor)
        if best is None:
            found.append(LayerDrift(name, kind, None))
        else:
            _, comparison, tensor = best
            # Where NaN or Inf is on one side only, the finite elements' error says nothing.
            nonfinite = comparison.nonfinite_reference + comparison.nonfinite_export
            found.append(LayerDrift(name, kind, comparison.passed, None if nonfinite else comparison.max_abs,
                                    comparison.first_bad_step, tensor))
    return tuple(found)


def layers_by_snr(layers: Sequence[tuple[str, str, np.ndarray]], tensors: Mapping[str, np.ndarray]
                  ) -> tuple[LayerDrift, ...]:
    """Each layer's output against the export's tensor of its shape that reproduces it best (the
    highest SNR), lowest SNR first: where a quantized export departs most from its source. A layer
    with no tensor of its shape, or reproduced exactly, comes last."""
    candidates = {name: np.squeeze(value).astype(np.float64) for name, value in tensors.items()
                  if np.issubdtype(value.dtype, np.floating) and value.size > 1}
    found = []
    for name, kind, output in layers:
        reference = np.squeeze(output).astype(np.float64)
        best: tuple[float, str, float] | None = None
        for tensor, value in candidates.items():
            aligned = _aligned(value, reference)
            if aligned is None or not np.all(np.isfinite(aligned)):
                continue
            noise = float(np.mean((aligned - reference) ** 2))
            snr = np.inf if noise == 0 else 10 * np.log10(max(float(np.mean(reference ** 2)), 1e-30) / noise)
            if best is None or snr > best[0]:
                best = (snr, tensor, float(np.max(np.abs(aligned - reference))))
        if best is None:
            found.append(LayerDrift(name, kind, None))
        else:
            snr, tensor, max_abs = best
            found.append(LayerDrift(name, kind, None, max_abs, None, tensor, None if np.isinf(snr) else float(snr)))
    return tuple(sorted(found, key=lambda layer: (layer.snr_db is None, layer.snr_db or 0.0)))
