"""Split ambiguous candidate components into clumps: every component at once, in flat numpy arrays.

A component (marks joined by ``link_radius``, aggregation/assign.py) in which some volunteer has several marks
must hold several clumps (one mark per volunteer per clump). Each is split the same way: start with k_max
centres on the marks of the volunteer with most marks (k_max = their number, at most ``max_clumps``), then for
k = k_max .. 1 alternate assignment and centre refits (at most ``iterations`` rounds), keep the k of lowest cost,
and merge the two closest centres to try one clump fewer. An assignment sends each mark to its cheapest centre
or to the false-positive dummy, gives a volunteer's marks distinct clumps (two marks in closed form, three or
more by the Hungarian method) and opens a clump only if its links pay for it.

The components are independent and small (a few centres, tens of marks), so instead of looping over them (or
sending them to worker processes) every step runs on all of them together: the centres live in a padded
``(components, max_clumps, 2)`` array, each component at its own k and round, with columns past its k at an
infinite cost. The arithmetic per component is the same as one component solved alone (same operations in the
same order), so the result is too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

BIG = 1e12
TOTAL_SUM_SEQUENTIAL = 8  # numpy sums fewer elements one by one; more open clumps take np.sum itself


@dataclass(frozen=True)
class SplitInputs:
    """The marks of the components to split, concatenated (one component after another, marks in order)."""

    comp: np.ndarray  # (m,) component index 0..c-1, non-decreasing
    x: np.ndarray
    y: np.ndarray
    vol: np.ndarray
    base: np.ndarray  # link cost at d = 0
    inv2s2: np.ndarray  # 1 / (2 s2)
    weight: np.ndarray  # 1 / s2, for centres
    fp_cost: np.ndarray  # cost of the dummy
    open_cost: np.ndarray  # (c,) cost of opening a clump in the component's image


@dataclass(frozen=True)
class _Volunteers:
    """Each volunteer's marks within each component: pairs (closed form) and threes or more (Hungarian)."""

    pairs: np.ndarray  # (p, 2) global mark indices, earlier mark first
    multi: list[np.ndarray]  # mark indices of each volunteer with three or more marks in a component
    multi_comp: np.ndarray  # component of each entry of multi
    k_max: np.ndarray  # (c,) starting number of centres
    seeds: np.ndarray  # (sum k_max,) the first k_max marks of the component's busiest volunteer


def _volunteers(inp: SplitInputs, n_comp: int, max_clumps: int) -> _Volunteers:
    key = inp.comp * (int(inp.vol.max()) + 1) + inp.vol
    order = np.argsort(key, kind="stable")
    sk = key[order]
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    counts = np.diff(np.r_[starts, len(sk)])
    g_comp = inp.comp[order[starts]]
    pairs = np.column_stack([order[starts[counts == 2]], order[starts[counts == 2] + 1]])
    big = np.flatnonzero(counts > 2)
    multi = [order[starts[g]:starts[g] + counts[g]] for g in big]
    # the busiest volunteer of each component: the first (lowest id) with the most marks
    most = np.zeros(n_comp, dtype=np.int64)
    np.maximum.at(most, g_comp, counts)
    is_top = counts == most[g_comp]
    top_group = np.full(n_comp, len(counts), dtype=np.int64)
    np.minimum.at(top_group, g_comp[is_top], np.flatnonzero(is_top))
    k_max = np.minimum(most, max_clumps)
    seed_start = starts[top_group]
    seeds = order[np.repeat(seed_start, k_max) + ranks(k_max)]
    return _Volunteers(pairs, multi, g_comp[big], k_max, seeds)


def ranks(sizes: np.ndarray) -> np.ndarray:
    """0, 1, .., n-1 for each n in ``sizes``, concatenated."""
    total = int(sizes.sum())
    return np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def _assign(inp: SplitInputs, vols: _Volunteers, cen: np.ndarray, k: np.ndarray,
            run: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every component's best assignment to its current centres: a clump index per mark (-1: the dummy) and
    each component's cost above all-dummy. ``run``: components whose Hungarian problems need solving."""
    n_comp, width = cen.shape[:2]
    comp = inp.comp
    dx = inp.x[:, None] - cen[comp, :, 0]
    dy = inp.y[:, None] - cen[comp, :, 1]
    cost = inp.base[:, None] + (dx**2 + dy**2) * inp.inv2s2[:, None]  # (m, width)
    valid = np.arange(width)[None, :] < k[:, None]
    cost[~valid[comp]] = np.inf
    rows = np.arange(len(comp))
    best = np.argmin(cost, axis=1)
    lab = np.where(cost[rows, best] < inp.fp_cost, best, -1)
    if len(vols.pairs):
        separate_pairs(cost, inp.fp_cost, lab, vols.pairs)
    for idx, c in zip(vols.multi, vols.multi_comp, strict=True):  # three or more marks: distinct clumps, exact
        if not run[c]:
            continue
        m, kc = len(idx), int(k[c])
        mat = np.full((m, kc + m), BIG)
        mat[:, :kc] = cost[idx, :kc]
        mat[np.arange(m), kc + np.arange(m)] = inp.fp_cost[idx]
        r, col = linear_sum_assignment(mat)
        lab[idx[r]] = np.where(col < kc, col, -1)
    # open a clump only if its links pay for it
    on = np.maximum(lab, 0)
    linked_cost = np.where(lab >= 0, cost[rows, on], 0.0)
    gain = np.bincount(comp * width + on, weights=np.where(lab >= 0, inp.fp_cost - linked_cost, 0.0),
                       minlength=n_comp * width).reshape(n_comp, width)
    is_open = (gain > inp.open_cost[:, None]) & valid
    lab = np.where((lab >= 0) & is_open[comp, on], lab, -1)
    part = np.where(is_open, inp.open_cost[:, None] - gain, 0.0)
    total = np.zeros(n_comp)
    for j in range(width):  # in order, as np.sum adds a few numbers
        total = total + part[:, j]
    for c in np.flatnonzero(is_open.sum(axis=1) >= TOTAL_SUM_SEQUENTIAL):
        total[c] = np.sum(part[c][is_open[c]])
    return lab, total


def separate_pairs(cost: np.ndarray, fp_cost: np.ndarray, lab: np.ndarray, pairs: np.ndarray) -> None:
    """Exact assignment for volunteers with two marks, in place: they may not share a clump.

    When both marks' best choice is the same clump c, one of them keeps c and the other takes its best
    option without c (another clump or the dummy); the cheaper of the two ways is optimal, because any
    assignment with neither mark on c is beaten by moving one of them there.
    """
    a, b = pairs[:, 0], pairs[:, 1]
    clash = (lab[a] >= 0) & (lab[a] == lab[b])
    if not clash.any():
        return
    a, b = a[clash], b[clash]
    c = lab[a]
    rows = np.arange(len(c))
    without_c = np.stack([cost[a], cost[b]])  # (2, p, k)
    without_c[:, rows, c] = np.inf
    second = without_c.argmin(axis=2)
    second_cost = np.take_along_axis(without_c, second[..., None], axis=2)[..., 0]
    alt_a = np.minimum(second_cost[0], fp_cost[a])
    alt_b = np.minimum(second_cost[1], fp_cost[b])
    a_keeps = cost[a, c] + alt_b <= cost[b, c] + alt_a
    loser = np.where(a_keeps, b, a)
    loser_second = np.where(a_keeps, second[1], second[0])
    loser_cost = np.where(a_keeps, second_cost[1], second_cost[0])
    lab[loser] = np.where(loser_cost < fp_cost[loser], loser_second, -1)


def _refit(inp: SplitInputs, lab: np.ndarray, cen: np.ndarray) -> np.ndarray:
    """Centres moved to the weighted mean of their linked marks (a centre without marks stays)."""
    n_comp, width = cen.shape[:2]
    ok = lab >= 0
    bins = inp.comp[ok] * width + lab[ok]
    w = np.bincount(bins, weights=inp.weight[ok], minlength=n_comp * width).reshape(n_comp, width)
    sx = np.bincount(bins, weights=inp.weight[ok] * inp.x[ok], minlength=n_comp * width).reshape(n_comp, width)
    sy = np.bincount(bins, weights=inp.weight[ok] * inp.y[ok], minlength=n_comp * width).reshape(n_comp, width)
    new = cen.copy()
    has = w > 0
    new[has, 0] = sx[has] / w[has]
    new[has, 1] = sy[has] / w[has]
    return new


def _merge_closest(cen: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Each component's two closest centres replaced by their midpoint, appended after the others."""
    n_comp, width = cen.shape[:2]
    d2 = (cen[:, :, None, 0] - cen[:, None, :, 0]) ** 2 + (cen[:, :, None, 1] - cen[:, None, :, 1]) ** 2
    valid = np.arange(width) < k[:, None]
    d2[~(valid[:, :, None] & valid[:, None, :])] = np.inf
    d2[:, np.arange(width), np.arange(width)] = np.inf
    flat = d2.reshape(n_comp, -1).argmin(axis=1)
    i, j = flat // width, flat % width
    rows = np.arange(n_comp)
    merged = (cen[rows, i] + cen[rows, j]) / 2
    keep = valid.copy()
    keep[rows, i] = keep[rows, j] = False
    order = np.argsort(~keep, axis=1, kind="stable")  # kept centres first, in order
    new = np.take_along_axis(cen, order[:, :, None], axis=1)
    new[rows, k - 2] = merged
    return new


def split_components(inp: SplitInputs, max_clumps: int = 12, iterations: int = 4) -> np.ndarray:
    """Split every component into clumps; returns a clump index per mark (within its component; -1 = dummy)."""
    n_comp = len(inp.open_cost)
    best_lab = np.full(len(inp.comp), -1, dtype=np.int64)
    if n_comp == 0:
        return best_lab
    vols = _volunteers(inp, n_comp, max_clumps)
    k = vols.k_max.copy()
    cen = np.zeros((n_comp, int(k.max()), 2))
    owner, slot = np.repeat(np.arange(n_comp), k), ranks(k)
    cen[owner, slot, 0] = inp.x[vols.seeds]
    cen[owner, slot, 1] = inp.y[vols.seeds]
    rounds = np.zeros(n_comp, dtype=np.int64)  # refits done at this k
    active = np.ones(n_comp, dtype=bool)
    best_cost = np.full(n_comp, np.inf)
    marks = np.arange(len(inp.comp))  # where the marks of the components still being split are in best_lab
    while True:
        lab, total = _assign(inp, vols, cen, k, active)
        refit = active & (rounds < iterations)
        new = _refit(inp, lab, cen)
        unused = np.arange(cen.shape[1])[None, :, None] >= k[:, None, None]
        close = ((np.abs(new - cen) <= 1e-8 + 1e-5 * np.abs(cen)) | unused).all(axis=(1, 2))
        # a level ends when its centres stop moving, or with the assignment that follows the last refit
        done = active & ((refit & close) | ~refit)
        moving = refit & ~close
        cen[moving] = new[moving]
        rounds[moving] += 1
        better = done & (total < best_cost - 1e-9)
        best_cost[better] = total[better]
        take = better[inp.comp]
        best_lab[marks[take]] = lab[take]
        active &= ~(done & (k == 1))
        merge = done & (k > 1)
        if merge.any():
            cen[merge] = _merge_closest(cen[merge], k[merge])
            k[merge] -= 1
            rounds[merge] = 0
        if not active.any():
            return best_lab
        if active.sum() * 2 < len(active):  # most are split: carry on with the others only
            keep = active[inp.comp]
            marks = marks[keep]
            inp = _subset(inp, active)
            vols = _volunteers(inp, len(inp.open_cost), max_clumps)
            k, rounds, best_cost = k[active], rounds[active], best_cost[active]
            cen = cen[active][:, :int(k.max())]
            active = active[active]


def _subset(inp: SplitInputs, keep: np.ndarray) -> SplitInputs:
    """The components where ``keep``, renumbered 0.. in order."""
    m = keep[inp.comp]
    renumber = np.cumsum(keep) - 1
    return SplitInputs(comp=renumber[inp.comp[m]], x=inp.x[m], y=inp.y[m], vol=inp.vol[m], base=inp.base[m],
                       inv2s2=inp.inv2s2[m], weight=inp.weight[m], fp_cost=inp.fp_cost[m],
                       open_cost=inp.open_cost[keep])
