"""The comparison: the one pass rule (|a-b| <= atol + rtol * max|a|), statistics that agree with
numpy, NaN/Inf, reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bnconvert.check.compare import compare_arrays, compare_outputs, diff_stats, histogram, pair_names


def _numpy_stats(values: np.ndarray) -> dict[str, float]:
    v = values.astype(np.float64).ravel()
    return {
        "max": float(np.max(v)), "mean": float(np.mean(v)), "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)), "p95": float(np.percentile(v, 95)), "p99": float(np.percentile(v, 99)),
    }


def test_statistics_agree_with_numpy() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(0, 3, (4, 5, 6)).astype(np.float32)
    b = (a + rng.normal(0, 1e-3, a.shape)).astype(np.float32)
    r = compare_arrays(a, b, atol=1e-5, rtol=1e-5, name="y")
    absdiff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    reldiff = absdiff / np.abs(a.astype(np.float64))
    for stats, direct in ((r.abs, _numpy_stats(absdiff)), (r.rel, _numpy_stats(reldiff))):
        for key, value in direct.items():
            assert getattr(stats, key) == pytest.approx(value, rel=1e-12, abs=0), key
    worst = np.unravel_index(np.argmax(absdiff), a.shape)
    assert r.worst_index == tuple(int(i) for i in worst)
    assert r.worst_a == pytest.approx(float(a[worst])) and r.worst_b == pytest.approx(float(b[worst]))
    assert r.worst_rel_index == tuple(int(i) for i in np.unravel_index(np.argmax(reldiff), a.shape))
    assert r.max_abs_ref == pytest.approx(float(np.abs(a).max()))
    assert r.normalized_error == pytest.approx(absdiff.max() / np.abs(a).max())
    expected_fail = int(np.count_nonzero(absdiff > 1e-5 + 1e-5 * np.abs(a.astype(np.float64)).max()))
    assert r.mismatches == expected_fail > 0 and not r.passed and r.total == a.size


def test_the_rule_is_atol_plus_rtol_times_the_outputs_scale() -> None:
    # large values: |diff| 1e-3 > atol but within rtol * max|a| = 1e-2 -> passes
    assert compare_arrays(np.array([1000.0]), np.array([1000.001]), atol=1e-5, rtol=1e-5)
    # tiny values: relative 1.0 but |diff| 1e-7 < atol -> passes
    assert compare_arrays(np.array([1e-7]), np.array([2e-7]), atol=1e-5, rtol=1e-5)
    # beyond atol + rtol * max|a| = 1e-5 + 2e-5 -> fails
    r = compare_arrays(np.array([1.0, 2.0]), np.array([1.001, 2.0]), atol=1e-5, rtol=1e-5)
    assert not r and r.mismatches == 1 and r.bound == pytest.approx(3e-5)
    # the same pair passes with a looser atol, or a looser rtol
    assert compare_arrays(np.array([1.0]), np.array([1.001]), atol=1e-2, rtol=1e-5)
    assert compare_arrays(np.array([1.0]), np.array([1.001]), atol=0, rtol=1e-3)
    # exactly at the bound passes, just past it fails (the rule is <=)
    assert compare_arrays(np.array([4.0]), np.array([4.5]), atol=0.25, rtol=1 / 16)
    assert not compare_arrays(np.array([4.0]), np.array([4.5]), atol=0.24, rtol=1 / 16)


def test_an_element_near_zero_is_judged_by_the_outputs_scale() -> None:
    """A logit of 0.003 among logits up to 20, off by 2e-6 (float32 rounding of the sums that made
    it): 7e-4 relative to itself, 1e-7 relative to the output. The element rule with |a| per
    element (Polygraphy, numpy's allclose) fails it at rtol 1e-4 once atol is small; this rule
    does not, while a real difference of 1e-2 fails at any element."""
    a = np.array([20.0, -13.0, 0.003])
    assert compare_arrays(a, a + np.array([0.0, 0.0, 2e-6]), atol=1e-7, rtol=1e-4)
    assert not np.allclose(a + np.array([0.0, 0.0, 2e-6]), a, atol=1e-7, rtol=1e-4)
    r = compare_arrays(a, a + np.array([0.0, 0.0, 1e-2]), atol=1e-7, rtol=1e-4)
    assert not r and r.mismatches == 1


def test_sigmoid_outputs_near_zero_pass_by_atol() -> None:
    """onnxruntime's Sigmoid of -10 (4.54e-5) is ~1e-2 off relative, ~1e-7 absolute: within the
    default atol, whatever rtol says about an output that small."""
    from bnconvert.check.compare import DEFAULT_ATOL, DEFAULT_RTOL

    a = 1 / (1 + np.exp(np.array([10.0, 11.0])))
    b = a * (1 + 1.7e-2)
    r = compare_arrays(a, b)
    assert r and (r.atol, r.rtol) == (DEFAULT_ATOL, DEFAULT_RTOL) and r.rel.max > DEFAULT_RTOL


def test_zero_reference_gives_infinite_relative_difference() -> None:
    r = compare_arrays(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1e-3, 1.0]))
    assert r.rel.max == math.inf and r.mismatches == 1
    assert compare_arrays(np.zeros(3), np.zeros(3)).rel.max == 0.0


def test_nan_and_inf_detection() -> None:
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    r = compare_arrays(a, np.array([1.0, np.nan, 3.0], dtype=np.float32))
    assert not r and r.nonfinite_b == {"nan": 1, "inf": 0} and r.nonfinite_mismatches == 1
    assert r.normalized_error == math.inf and "NaN" in r.summary()
    r = compare_arrays(np.array([np.nan]), np.array([np.nan]))
    assert not r, "NaN never equals NaN"
    r = compare_arrays(np.array([np.inf, 1.0]), np.array([np.inf, 1.0]))
    assert r and r.nonfinite_a["inf"] == 1 and "same infinity" in r.message
    r = compare_arrays(np.array([np.inf, 1.0]), np.array([-np.inf, 1.0]))
    assert not r and r.mismatches == 1


def test_shape_mismatch_fails_with_a_message() -> None:
    r = compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)))
    assert not r and "shapes differ" in r.message and r.abs is None
    assert r.normalized_error == math.inf


def test_histogram_bins_by_decade() -> None:
    values = np.array([0.0, 0.0, 3e-7, 5e-7, 2e-5, 0.5])
    bins = histogram(values)
    assert bins[0] == (0.0, 0.0, 2)
    assert sum(n for _, _, n in bins) == values.size
    by_low = {round(math.log10(lo)): n for lo, _, n in bins[1:]}
    assert by_low == {-7: 2, -6: 0, -5: 1, -4: 0, -3: 0, -2: 0, -1: 1}


def test_diff_stats_of_empty_array() -> None:
    assert diff_stats(np.array([])).max == 0.0


def test_compare_outputs_pairs_by_name_then_position() -> None:
    a = {"y": np.ones(3), "z": np.zeros(2)}
    r = compare_outputs(a, {"z": np.zeros(2), "y": np.ones(3)})
    assert r and [o.name for o in r.outputs] == ["y", "z"]
    pairs, notes = pair_names(a, {"out0": 1, "out1": 2})
    assert pairs == [("y", "out0"), ("z", "out1")] and "by position" in notes[0]
    r = compare_outputs(a, {"only": np.ones(3)})
    assert not r and not r.outputs and "counts differ" in r.messages[0]


def test_result_is_truthy_and_serialises() -> None:
    r = compare_outputs({"y": np.array([1.0, 0.0])}, {"y": np.array([1.0, 1.0])})
    assert not r and r.normalized_error == pytest.approx(1.0)
    data = json.loads(json.dumps(r.to_dict()))
    assert data["passed"] is False
    assert data["outputs"][0]["rel"]["max"] == "inf"  # JSON has no infinity: written as a string
    assert data["outputs"][0]["abs"]["max"] == 1.0
    text = r.summary()
    assert "FAILED" in text and "worst abs at [1]" in text and "histogram" in text
