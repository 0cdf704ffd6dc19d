"""All components split at once give exactly what splitting each alone gives (a plain loop, the definition)."""

import numpy as np
from scipy.optimize import linear_sum_assignment

from clumptool.aggregation.split import SplitInputs, split_components


def _assign_one(xy, vol, base, inv2s2, fp, open_cost, centres):
    """One component's assignment: cheapest centre or dummy, distinct clumps per volunteer, paid openings."""
    k = len(centres)
    cost = base[:, None] + ((xy[:, None, :] - centres[None]) ** 2).sum(-1) * inv2s2[:, None]
    lab = np.where(cost.min(axis=1) < fp, cost.argmin(axis=1), -1)
    for v in np.unique(vol):  # a volunteer's marks on distinct clumps (exact; BIG forbids the other dummies)
        idx = np.flatnonzero(vol == v)
        if len(idx) > 1:
            m = len(idx)
            mat = np.full((m, k + m), 1e12)
            mat[:, :k] = cost[idx]
            mat[np.arange(m), k + np.arange(m)] = fp[idx]
            r, c = linear_sum_assignment(mat)
            lab[idx[r]] = np.where(c < k, c, -1)
    gain = np.array([np.sum(fp[lab == j] - cost[lab == j, j]) for j in range(k)])
    is_open = gain > open_cost
    lab = np.where((lab >= 0) & is_open[np.maximum(lab, 0)], lab, -1)
    return lab, float(np.sum(open_cost - gain[is_open]))


def _split_one(xy, vol, base, inv2s2, weight, fp, open_cost, max_clumps=12, iterations=4):
    vols, counts = np.unique(vol, return_counts=True)
    k_max = min(counts.max(), max_clumps)
    centres = xy[vol == vols[np.argmax(counts)]][:k_max].astype(float)
    best_lab, best_cost = None, np.inf
    while True:
        for _ in range(iterations + 1):
            lab, cost = _assign_one(xy, vol, base, inv2s2, fp, open_cost, centres)
            if _ == iterations:
                break
            new = centres.copy()
            for j in range(len(centres)):
                on = lab == j
                if weight[on].sum() > 0:
                    new[j] = (weight[on, None] * xy[on]).sum(0) / weight[on].sum()
            if np.allclose(new, centres, rtol=1e-5, atol=1e-8):
                break
            centres = new
        if cost < best_cost - 1e-9:
            best_cost, best_lab = cost, lab
        if len(centres) == 1:
            return best_lab
        d2 = ((centres[:, None] - centres[None]) ** 2).sum(-1) + np.diag(np.full(len(centres), np.inf))
        i, j = np.unravel_index(np.argmin(d2), d2.shape)
        centres = np.vstack([np.delete(centres, [i, j], axis=0), (centres[i] + centres[j]) / 2])


def _random_components(rng, n):
    comps = []
    for _ in range(n):
        n_vol, n_clumps = int(rng.integers(2, 20)), int(rng.integers(1, 5))
        centres = rng.uniform(0, 30, (n_clumps, 2))
        per_vol = rng.choice([1, 2, 2, 3, 5], n_vol) if rng.random() < 0.1 else rng.choice([1, 2], n_vol)
        per_vol[0] = max(per_vol[0], 2)  # ambiguous: someone marked twice
        vol = np.repeat(np.arange(n_vol) * 3 + 7, per_vol)
        rng.shuffle(vol)
        xy = centres[rng.integers(n_clumps, size=len(vol))] + rng.normal(0, 2, (len(vol), 2))
        s2 = rng.uniform(1, 9, len(vol))
        comps.append((xy, vol, rng.normal(2, 1, len(vol)), 1 / (2 * s2), 1 / s2, rng.normal(9, 2, len(vol)),
                      float(rng.uniform(0, 20))))
    return comps


def test_all_at_once_equals_one_by_one():
    comps = _random_components(np.random.default_rng(7), 300)
    sizes = [len(c[1]) for c in comps]
    cat = [np.concatenate([c[i] for c in comps]) for i in range(6)]
    got = split_components(SplitInputs(
        comp=np.repeat(np.arange(len(comps)), sizes), x=cat[0][:, 0], y=cat[0][:, 1], vol=cat[1], base=cat[2],
        inv2s2=cat[3], weight=cat[4], fp_cost=cat[5], open_cost=np.array([c[6] for c in comps])))
    want = np.concatenate([_split_one(*c) for c in comps])
    assert np.mean(want >= 0) > 0.5 and len(np.unique(want)) >= 4  # real splits, several clumps
    np.testing.assert_array_equal(got, want)
    for c, lab in zip(comps, np.split(got, np.cumsum(sizes)[:-1]), strict=True):
        for v in np.unique(c[1]):  # one mark per volunteer per clump
            mine = lab[(c[1] == v) & (lab >= 0)]
            assert len(mine) == len(set(mine))
