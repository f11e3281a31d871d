"""The parity engine on real arrays: what passes, what fails, and what the failure says."""

from __future__ import annotations

import numpy as np
import pytest

from rnnexport.errors import UserError
from rnnexport.model import TensorInfo
from rnnexport.options import SweepOptions
from rnnexport.tolerance import Tolerance
from rnnexport.parity import compare_output
from rnnexport.sweep import build_cases, default_lengths

TOL = Tolerance(atol=1e-5, rtol=1e-5)


def _ref(shape=(2, 6, 3)):
    return np.random.default_rng(0).standard_normal(shape).astype("float32")


def test_identical_outputs_pass():
    ref = _ref()
    result = compare_output("y", ref, ref.copy(), TOL, 1)
    assert result and result.max_abs == 0.0 and result.max_rel == 0.0


def test_drift_fails_with_first_bad_step_and_needed_tolerance():
    ref = _ref()
    out = ref.copy()
    out[1, 4, 2] += 0.01
    result = compare_output("y", ref, out, TOL, 1)
    assert not result
    assert result.first_bad_step == 4
    assert result.max_abs == pytest.approx(0.01, rel=1e-3)
    assert result.needed_atol == pytest.approx(0.01 - 1e-5 * abs(ref[1, 4, 2]), rel=1e-3)
    assert "from time step 4" in result.reason and "would pass with atol" in result.reason
    relaxed = compare_output("y", ref, out, Tolerance(result.needed_atol * 1.001, TOL.rtol), 1)
    assert relaxed


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_never_passes(bad):
    ref = _ref()
    out = ref.copy()
    out[0, 0, 0] = bad
    result = compare_output("y", ref, out, Tolerance(1e9, 1e9), 1)
    assert not result and result.nonfinite_export == 1 and "NaN/Inf" in result.reason
    both = compare_output("y", out, out.copy(), Tolerance(1e9, 1e9), 1)
    assert not both and both.nonfinite_reference == 1


def test_shape_mismatch_and_missing_output_fail():
    ref = _ref()
    assert "shape (2, 5, 3) != reference (2, 6, 3)" in compare_output("y", ref, ref[:, :5], TOL, 1).reason
    assert not compare_output("y", ref, None, TOL, 1)


def test_relative_tolerance_scales_with_the_reference():
    ref = np.full((1, 2, 1), 1000.0, dtype="float32")
    assert compare_output("y", ref, ref + 0.005, Tolerance(0.0, 1e-5), 1)
    assert not compare_output("y", ref, ref + 0.02, Tolerance(0.0, 1e-5), 1)


def test_default_lengths_go_well_beyond_the_source_length():
    assert default_lengths(50) == (1, 2, 12, 50, 200)
    assert default_lengths(None) == (1, 2, 7, 32, 128)


def test_sweep_is_seeded_and_respects_vocabulary_and_masks():
    tokens = TensorInfo("ids", "int32", (None, None), 1, vocab_size=9, mask_value=0.0)
    first = build_cases([tokens], 20, SweepOptions(seed=4))
    second = build_cases([tokens], 20, SweepOptions(seed=4))
    other = build_cases([tokens], 20, SweepOptions(seed=5))
    assert [c.name for c in first] == [c.name for c in second]
    assert all(np.array_equal(a.inputs["ids"], b.inputs["ids"]) for a, b in zip(first, second))
    assert not all(np.array_equal(a.inputs["ids"], b.inputs["ids"]) for a, b in zip(first, other))
    random = [c for c in first if c.kind == "random"]
    assert all(c.inputs["ids"].min() >= 1 and c.inputs["ids"].max() < 9 for c in random)
    (padded,) = [c for c in first if c.kind == "padded"]
    ids = padded.inputs["ids"]
    assert ids.shape == (3, 20) and (ids[1, 10:] == 0).all() and (ids[1, :10] > 0).all()


def test_unknown_feature_size_needs_data():
    spec = TensorInfo("x", "float32", (None, None, None), 1)
    with pytest.raises(UserError, match="input 'x' has an unknown size on axis 2; pass inputs with --data"):
        build_cases([spec], None, SweepOptions())


def test_report_writes_json_to_a_string_path(tmp_path):
    import json

    from rnnexport.reports import ParityReport

    ParityReport(device="CPU").write_json(str(tmp_path / "sub" / "r.json"))
    data = json.loads((tmp_path / "sub" / "r.json").read_text())
    assert data["schema_version"] == 3 and data["passed"] is False and data["exports"] == []
