"""Diversity sampling: k-centre spreads over clusters; k-means++ is reproducible and follows the weights."""

from __future__ import annotations

import numpy as np
import pytest

from clumptool.active_learning.diversity import k_center_greedy, kmeanspp_select, select_diverse
from clumptool.common.errors import ClumptoolError


def _clusters(n_clusters=5, per=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(n_clusters, dim))
    x = np.vstack([c + rng.normal(0, 0.3, size=(per, dim)) for c in centres])
    which = np.repeat(np.arange(n_clusters), per)
    return x, which


def test_k_center_picks_one_galaxy_per_cluster():
    x, which = _clusters()
    scores = np.zeros(len(x))
    scores[3] = 1.0  # the first pick is the most uncertain one
    idx = k_center_greedy(x, 5, scores)
    assert idx[0] == 3
    assert sorted(which[idx]) == [0, 1, 2, 3, 4]
    # top-score selection on the same data would take near-duplicates from one cluster
    top = select_diverse(x, np.linspace(1, 0, len(x)), 5, method="none")
    assert len(set(which[top])) == 1


def test_k_center_with_labelled_set_avoids_covered_clusters():
    x, which = _clusters()
    labelled = x[which < 3][:10]  # clusters 0-2 already labelled
    idx = k_center_greedy(x, 2, labelled=x[which < 3])
    assert set(which[idx]) == {3, 4}
    assert len(labelled) == 10


def test_kmeanspp_is_deterministic_by_seed_and_spreads():
    x, which = _clusters()
    scores = np.ones(len(x))
    a = kmeanspp_select(x, 5, scores, seed=7)
    b = kmeanspp_select(x, 5, scores, seed=7)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 5
    assert len(set(which[a])) >= 4  # D^2 seeding almost always hits every well-separated cluster
    c = kmeanspp_select(x, 5, scores, seed=8)
    assert not np.array_equal(a, c)


def test_kmeanspp_weights_steer_the_picks():
    x, which = _clusters()
    w = np.where(which == 2, 1.0, 0.0)  # only cluster 2 is uncertain
    idx = kmeanspp_select(x, 3, w, seed=0)
    assert (which[idx] == 2).sum() >= 2


def test_select_diverse_checks_inputs():
    x, _ = _clusters()
    with pytest.raises(ClumptoolError, match="unknown diversity"):
        select_diverse(x, np.ones(len(x)), 3, method="dpp")
    with pytest.raises(ClumptoolError, match="one embedding per candidate"):
        select_diverse(x[:5], np.ones(len(x)), 3, method="kcenter")
    assert len(select_diverse(x, np.ones(len(x)), 500, method="kcenter")) == len(x)
