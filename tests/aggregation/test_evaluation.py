"""Scores against truth are undefined (NaN), never a perfect 1.0, when there is nothing to score."""

import math

import pandas as pd

from clumptool.aggregation.evaluation import match_to_truth


def _clumps(*xy):
    return pd.DataFrame({"subject_id": [1] * len(xy), "x": [p[0] for p in xy], "y": [p[1] for p in xy]})


def test_no_truth_and_nothing_found_is_undefined_not_perfect():
    s = match_to_truth(_clumps(), _clumps())
    assert math.isnan(s.completeness) and math.isnan(s.purity) and math.isnan(s.f1)


def test_nothing_found_scores_zero_f1_and_undefined_purity():
    s = match_to_truth(_clumps(), _clumps((10, 10)))
    assert s.completeness == 0 and math.isnan(s.purity) and s.f1 == 0


def test_found_without_truth_has_undefined_f1():
    # no truth: nothing to recover, so F1 is undefined like completeness (the rule of common.matching,
    # the same as the detector's metrics)
    s = match_to_truth(_clumps((10, 10)), _clumps())
    assert math.isnan(s.completeness) and s.purity == 0 and math.isnan(s.f1)


def test_perfect_match():
    s = match_to_truth(_clumps((10, 10)), _clumps((11, 10)))
    assert (s.completeness, s.purity, s.f1) == (1.0, 1.0, 1.0)
