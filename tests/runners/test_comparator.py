"""The one output comparator: thresholds, shapes, and running several sources."""

from __future__ import annotations

import numpy as np
import pytest

from reidctl.errors import FormatError, ShapeMismatchError, ValidationError
from reidctl.runners.comparator import compare, diff_arrays, run_all


def test_rtol_bounds_max_abs_diff_relative_to_the_reference():
    a = np.array([[4.0, 0.0], [0.0, -2.0]])
    b = a + np.array([[0.0, 0.2], [0.0, 0.0]])
    d = diff_arrays(a, b)
    assert d.max_abs_diff == pytest.approx(0.2) and d.rel_diff == pytest.approx(0.05)
    assert compare({"ref": {"f": a}, "got": {"f": b}}, rtol=0.05).passed
    c = compare({"ref": {"f": a}, "got": {"f": b}}, rtol=0.04)
    assert not c.passed and "0.05 of the output's max abs value" in c.failed["f"][0]
    with pytest.raises(ValidationError, match="f: max abs diff"):
        c.check()


def test_nan_fails_every_threshold_and_shapes_must_match():
    a = np.ones((2, 3))
    b = a.copy()
    b[1, 1] = np.nan
    c = compare({"a": {"f": a}, "b": {"f": b}}, rtol=1.0, atol=1.0, min_cos=-1.0)
    assert len(c.failed["f"]) == 4  # the three thresholds and the NaN itself
    with pytest.raises(ShapeMismatchError, match="'f'"):
        compare({"a": {"f": a}, "b": {"f": a[:1]}})
    with pytest.raises(FormatError, match="no output in common"):
        compare({"a": {"f": a}, "b": {"g": a}})


def test_run_all_feeds_every_source_and_worst_rows_come_first():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = run_all(
        {"id": lambda f: {"y": f["x"]}, "neg1": lambda f: {"y": f["x"] * [1, -1]}}, {"x": x}
    )
    c = compare(out, worst=1)
    assert c.outputs["y"].rows == 3 and c.outputs["y"].worst_rows[0][0] == 0
    assert c.outputs["y"].worst_rows[0][1] == pytest.approx(-1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["reference", "compared", "both"])
def test_nonfinite_values_always_fail_and_read_nan(bad, where):
    a = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    b = a.copy()
    for side in {"reference": [a], "compared": [b], "both": [a, b]}[where]:
        side[1, 0] = bad
    d = diff_arrays(a, b)
    assert np.isnan(d.min_cosine) and np.isnan(d.mean_cosine) and np.isnan(d.max_abs_diff)
    assert d.worst_rows[0][0] == 1 and np.isnan(d.worst_rows[0][1])
    c = compare({"ref": {"f": a}, "got": {"f": b}})  # no thresholds at all
    assert not c.passed
    assert "NaN or inf in 1 of 3 rows (min row cosine nan)" in c.failures[0]
    with pytest.raises(ValidationError, match="nan"):
        c.check()
    # the rows that are finite keep their cosine; two zero rows still count as 1.0
    assert diff_arrays(a[[0, 2]], b[[0, 2]]).min_cosine == pytest.approx(1.0)
