"""Uncertainty maths on hand-made cases: entropy, BALD, matching across passes, aggregation, D4 TTA."""

from __future__ import annotations

import numpy as np
import pytest

from clumptool.active_learning.uncertainty import (
    Pass,
    aggregate,
    bald,
    binary_entropy,
    borderline_empty,
    image_scores,
    match_passes,
    merge_classes,
)
from clumptool.detection.symmetry import D4, apply_to_boxes, invert_boxes


def test_binary_entropy_is_largest_at_one_half_and_zero_at_the_ends():
    p = np.linspace(0, 1, 101)
    h = binary_entropy(p)
    assert np.argmax(h) == 50
    assert h[50] == pytest.approx(np.log(2))
    assert h[0] == 0 and h[-1] == 0
    assert binary_entropy(0.1) == pytest.approx(binary_entropy(0.9))


def test_bald_is_zero_when_passes_agree_and_positive_when_they_disagree():
    assert bald(np.full(8, 0.7)) == pytest.approx(0.0, abs=1e-12)
    assert bald(np.full(8, 0.5)) == pytest.approx(0.0, abs=1e-12)  # uncertain but consistent: no MI
    split = np.array([1.0, 0.0] * 4)  # confident, contradictory passes: maximal MI
    assert bald(split) == pytest.approx(np.log(2))
    mild = np.array([0.6, 0.4] * 4)
    assert 0 < bald(mild) < bald(split)
    # per row over the last axis
    np.testing.assert_allclose(bald(np.array([[0.7] * 4, [1, 0, 1, 0]])), [0.0, np.log(2)], atol=1e-12)


def _box(x, y, s=10.0):
    return [x, y, x + s, y + s]


def test_matching_follows_boxes_across_passes_and_counts_misses_as_background():
    passes = [
        Pass([_box(10, 10), _box(50, 50)], [0.9, 0.6]),
        Pass([_box(51, 50), _box(11, 10)], [0.5, 0.8]),      # same two, other order, slightly moved
        Pass([_box(10, 11), _box(80, 80)], [0.95, 0.3]),     # second one missed, a new one appears
    ]
    cl = match_passes(passes)
    assert cl.scores.shape == (3, 3)
    rows = {tuple(np.round(np.nanmean(cl.boxes[i], axis=0)[:2])): cl.scores[i] for i in range(3)}
    np.testing.assert_allclose(rows[(10.0, 10.0)], [0.9, 0.8, 0.95])
    np.testing.assert_allclose(rows[(50.0, 50.0)], [0.6, 0.5, 0.0])
    np.testing.assert_allclose(rows[(80.0, 80.0)], [0.0, 0.0, 0.3])
    assert cl.found.sum() == 6


def test_one_box_per_pass_per_cluster():
    # two overlapping boxes in one pass must not share a cluster
    cl = match_passes([Pass([_box(10, 10), _box(11, 10)], [0.9, 0.8])])
    assert cl.scores.shape == (2, 1)


def test_merge_classes_adds_the_scores_of_one_proposal_across_labels():
    p = Pass([_box(10, 10), _box(10, 10), _box(40, 40)], [0.6, 0.3, 0.2], labels=[1, 2, 1])
    m = merge_classes(p)
    assert len(m.scores) == 2
    np.testing.assert_allclose(sorted(m.scores), [0.2, 0.9])


def test_aggregation_sum_max_topk():
    v = np.array([0.1, 0.5, 0.2, 0.4])
    assert aggregate(v, "sum") == pytest.approx(1.2)
    assert aggregate(v, "max") == pytest.approx(0.5)
    assert aggregate(v, "topk", k=2) == pytest.approx(0.45)
    assert aggregate(v, "topk", k=10) == pytest.approx(0.3)
    assert aggregate([], "sum") == 0.0
    with pytest.raises(ValueError):
        aggregate(v, "median")


def test_borderline_empty_term():
    assert borderline_empty([0.9, 0.1]) == 0.0           # something confident: not "empty"
    assert borderline_empty([0.4, 0.1]) == pytest.approx(binary_entropy(0.4))
    assert borderline_empty([]) == 0.0


def test_image_scores_rank_disagreement_above_agreement():
    agree = [Pass([_box(10, 10)], [0.9]) for _ in range(8)]
    disagree = [Pass([_box(10, 10)], [0.9]) if t % 2 else Pass(np.zeros((0, 4)), []) for t in range(8)]
    a, d = image_scores(agree), image_scores(disagree)
    assert a.bald == pytest.approx(0.0, abs=1e-12)
    assert a.freq == pytest.approx(0.0, abs=1e-12)
    assert a.loc == pytest.approx(0.0, abs=1e-12)
    # found in half the passes: mean score 0.45 < 0.5, so the borderline-empty term adds H(0.45) too
    assert d.freq == pytest.approx(np.log(2) + binary_entropy(0.45))
    assert d.bald - d.borderline > 0.3 and d.borderline == pytest.approx(binary_entropy(0.45))
    assert a.n_boxes == 1 and a.max_score == pytest.approx(0.9)
    # a galaxy with nothing at all scores 0; one with only a 0.45 box scores its entropy (borderline)
    empty = image_scores([Pass(np.zeros((0, 4)), [])] * 8)
    assert empty.bald == 0.0 and empty.entropy == 0.0
    border = image_scores([Pass([_box(10, 10)], [0.45])] * 8)
    assert border.bald == pytest.approx(binary_entropy(0.45))


def test_localisation_disagreement_grows_with_box_scatter():
    tight = [Pass([_box(10, 10)], [0.9])] * 4
    loose = [Pass([_box(10 + dx, 10)], [0.9]) for dx in (0, 3, -3, 1)]
    assert image_scores(tight).loc == pytest.approx(0.0, abs=1e-12)
    assert image_scores(loose).loc > 0.1


def test_d4_tta_with_a_consistent_fake_detector_gives_no_disagreement():
    """A fake "detector" that always sees the same clumps on the sky: on the image transformed by k it
    returns the true boxes transformed by k. After invert_boxes every pass agrees exactly."""
    w, h = 64, 48
    truth = np.array([_box(5, 7, 6), [30, 20, 41, 29], [50, 35, 60, 46]], dtype=float)
    scores = np.array([0.95, 0.8, 0.7])

    def fake_detector(k):
        return apply_to_boxes(truth, k, w, h), scores

    passes = []
    for k in D4:
        boxes_k, s = fake_detector(k)
        back = invert_boxes(boxes_k, k, w, h)
        np.testing.assert_allclose(back, truth, atol=1e-9)
        passes.append(Pass(back, s))
    res = image_scores(passes)
    assert res.bald == pytest.approx(0.0, abs=1e-12)
    assert res.loc == pytest.approx(0.0, abs=1e-12)
    assert res.freq == pytest.approx(0.0, abs=1e-12)
    assert res.n_boxes == 3
    # without inverting, the passes disagree: the test can fail
    raw = [Pass(fake_detector(k)[0], scores) for k in D4]
    assert image_scores(raw).bald > 0.5
