"""The closed-form split of two-mark volunteers equals the exact (Hungarian) assignment."""

import numpy as np
from scipy.optimize import linear_sum_assignment

from clumptool.aggregation.split import separate_pairs


def _hungarian_cost(cost: np.ndarray, fp: np.ndarray) -> float:
    m, k = cost.shape
    mat = np.full((m, k + m), 1e12)
    mat[:, :k] = cost
    mat[np.arange(m), k + np.arange(m)] = fp
    r, c = linear_sum_assignment(mat)
    return float(mat[r, c].sum())


def test_two_marks_of_one_volunteer_get_the_cheapest_distinct_clumps():
    rng = np.random.default_rng(1)
    clashes = 0
    for _ in range(2000):
        k = int(rng.integers(1, 5))
        cost = rng.normal(0, 2, (2, k))
        fp = rng.normal(0, 2, 2)
        best = cost.argmin(axis=1)
        lab = np.where(cost[[0, 1], best] < fp, best, -1)
        clashes += int(lab[0] >= 0 and lab[0] == lab[1])
        separate_pairs(cost, fp, lab, np.array([[0, 1]]))
        assert lab[0] < 0 or lab[0] != lab[1]
        got = sum(cost[i, lab[i]] if lab[i] >= 0 else fp[i] for i in range(2))
        assert np.isclose(got, _hungarian_cost(cost, fp))
    assert clashes > 200  # the hard case was exercised
