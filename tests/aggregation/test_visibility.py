"""Clump visibility: faint real clumps that a minority of the crowd marked are kept, hot spots are not."""

import numpy as np

from clumptool.aggregation.skill import Skills
from clumptool.aggregation.visibility import candidate_log_likelihoods, fit_visibility

N_VIEWERS = 20


def _crowd(marks_per_candidate: list[int]):
    """One image group per candidate, 20 viewers each; candidate c is marked by its first k viewers."""
    n = len(marks_per_candidate)
    skills = Skills(p_fp=np.full(N_VIEWERS, 0.1), p_fn=np.full(N_VIEWERS, 0.1), s2=np.full(N_VIEWERS, 4.0))
    view_group = np.repeat(np.arange(n), N_VIEWERS)
    view_vol = np.tile(np.arange(N_VIEWERS), n)
    marker_cand = np.concatenate([np.full(k, c) for c, k in enumerate(marks_per_candidate)])
    marker_vol = np.concatenate([np.arange(k) for k in marks_per_candidate])
    return skills, view_group, view_vol, n, np.arange(n), marker_cand, marker_vol


def _p_false(marks_per_candidate: list[int], grid: tuple[float, ...]):
    fp_ll, real_ll = candidate_log_likelihoods(*_crowd(marks_per_candidate), grid=grid)
    fit = fit_visibility(fp_ll, real_ll, grid)
    return 1 / (1 + np.exp(-fit.log_odds_false_pos)), fit.weights


def test_one_level_grid_is_the_equal_visibility_model():
    marks = [18, 7, 2]
    p_false, weights = _p_false(marks, (1.0,))
    f, q = 0.1 * 0.9, 0.9  # false click here: p_fp (1 - p_fn); real: 1 - p_fn
    for k, p in zip(marks, p_false, strict=True):
        lo = k * (np.log(f) - np.log(q)) + (N_VIEWERS - k) * (np.log(1 - f) - np.log(1 - q))
        assert np.isclose(p, 1 / (1 + np.exp(-lo)), rtol=1e-9)
    assert weights.tolist() == [1.0]


def test_faint_clumps_are_kept_when_the_crowd_shows_they_exist():
    marks = [18] * 150 + [7] * 40 + [2] * 10  # bright clumps, faint clumps (seen ~40%), hot spots
    equal, _ = _p_false(marks, (1.0,))
    learned, weights = _p_false(marks, (1.0, 0.7, 0.5, 0.35, 0.25))
    assert (equal[150:190] > 0.5).all()  # the equal-visibility model throws every faint clump away
    assert (learned[150:190] < 0.5).all()  # the learned one keeps them
    assert (learned[190:] > 0.5).all()  # two coincident clicks are still a false positive
    assert (learned[:150] < 1e-6).all()
    faint_weight = weights[2:].sum()  # visibility <= 0.5 ~ the 40 of 190 real clumps that are faint
    assert 0.12 < faint_weight < 0.3


def test_without_faint_clumps_the_weights_stay_at_full_visibility():
    _, weights = _p_false([18] * 100 + [17] * 50 + [2] * 10, (1.0, 0.7, 0.5, 0.35, 0.25))
    assert weights[0] > 0.95


def test_learned_prior_odds_follow_the_share_of_real_candidates():
    grid = (1.0, 0.7, 0.5, 0.35, 0.25)
    marks = [18] * 60 + [2] * 140  # few real clumps among many two-click coincidences
    fp_ll, real_ll = candidate_log_likelihoods(*_crowd(marks), grid=grid)
    fit = fit_visibility(fp_ll, real_ll, grid, learn_prior_real=True)
    assert 0.25 < fit.prior_real < 0.35
    even = fit_visibility(fp_ll, real_ll, grid)
    assert even.prior_real == 0.5
    # the odds of a two-click candidate move towards "false" with the learned prior, real clumps stay certain
    assert (fit.log_odds_false_pos[60:] > even.log_odds_false_pos[60:]).all()
    assert (fit.log_odds_false_pos[:60] < -10).all()


def test_the_anchor_keeps_the_faint_levels_from_taking_over():
    grid = (1.0, 0.7, 0.5, 0.35, 0.25)
    marks = [18] * 20 + [4] * 400  # many minority-marked points: faint clumps or hot spots?
    fp_ll, real_ll = candidate_log_likelihoods(*_crowd(marks), grid=grid)
    free = fit_visibility(fp_ll, real_ll, grid)
    anchored = fit_visibility(fp_ll, real_ll, grid, anchor=1.0)
    assert free.weights[0] < 0.5 < anchored.weights[0]
