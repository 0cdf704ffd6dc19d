"""One matcher and one set of ratio rules: undefined (NaN) with nothing to divide by, never 1.0."""

import math

import numpy as np
import pytest

from clumptool.common.matching import (
    assign_one_to_one,
    completeness,
    f1_score,
    match_points,
    purity,
    ratio,
    scores_from_counts,
)


def test_ratios_are_undefined_without_a_denominator():
    assert math.isnan(completeness(0, 0)) and math.isnan(purity(0, 0)) and math.isnan(f1_score(0, 0, 0))
    c, p, f = scores_from_counts(0, 0, 0)
    assert math.isnan(c) and math.isnan(p) and math.isnan(f)


def test_truth_but_nothing_found_is_zero_f1():
    assert scores_from_counts(5, 0, 0)[0] == 0.0 and math.isnan(scores_from_counts(5, 0, 0)[1])
    assert scores_from_counts(5, 0, 0)[2] == 0.0


def test_found_without_truth_has_undefined_f1_and_zero_purity():
    c, p, f = scores_from_counts(0, 3, 0)
    assert math.isnan(c) and p == 0.0 and math.isnan(f)


def test_f1_is_the_harmonic_mean():
    c, p, f = scores_from_counts(4, 6, 3)
    assert f == pytest.approx(2 * c * p / (c + p)) and f == pytest.approx(0.6)


def test_arrays_broadcast():
    out = ratio(np.array([1, 2, 0]), np.array([2, 0, 4]))
    assert out[0] == 0.5 and math.isnan(out[1]) and out[2] == 0
    assert np.isnan(completeness(np.array([0, 1]), 0)).all()
    np.testing.assert_allclose(f1_score(np.array([1, 2]), 4, np.array([1, 4])), [0.4, 0.5])


def test_greedy_takes_highest_score_first():
    valid = np.array([[True], [True]])
    cost = np.array([[0.5], [0.1]])
    assert assign_one_to_one(valid, cost, scores=[0.9, 0.4]).tolist() == [0, -1]
    assert assign_one_to_one(valid, cost, scores=[0.4, 0.9]).tolist() == [-1, 0]


def test_hungarian_maximises_matches_where_greedy_does_not():
    # found 0 is close to both truths, found 1 only to truth 0: greedy (0 first) takes truth 0 and leaves
    # found 1 unmatched; Hungarian matches both
    found, truth = [(0, 0), (-3, 0)], [(-1, 0), (2, 0)]
    greedy, _ = match_points(found, truth, 2.5, scores=[0.9, 0.8], assignment="greedy")
    hung, d = match_points(found, truth, 2.5, assignment="hungarian")
    assert greedy.tolist() == [0, -1] and hung.tolist() == [1, 0]
    assert d.shape == (2, 2)


def test_one_to_one_and_radius_per_truth():
    col, _ = match_points([(0, 0), (0.5, 0)], [(0, 0)], 1.0)
    assert sorted(col.tolist()) == [-1, 0]
    col, _ = match_points([(3, 0), (3, 10)], [(0, 0), (0, 10)], [4.0, 1.0])
    assert col.tolist() == [0, -1]


def test_empty_inputs():
    assert assign_one_to_one(np.zeros((0, 3), bool), np.zeros((0, 3))).tolist() == []
    assert assign_one_to_one(np.zeros((2, 0), bool), np.zeros((2, 0))).tolist() == [-1, -1]
    with pytest.raises(ValueError, match="assignment"):
        assign_one_to_one(np.ones((1, 1), bool), np.zeros((1, 1)), assignment="best")
