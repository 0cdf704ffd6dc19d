"""Marks -> clumps: which marks belong to which clump, and which are false positives.

The objective is the facility-location problem of the Clump Scout aggregator: open a clump in an image at
the cost of every viewer having missed it (sum of -log p_fn), link each mark to an open clump at the cost of
its Gaussian click likelihood, or send it to the false-positive "dummy" at -log(p_fp / area); at most one
mark per volunteer per clump. It is solved in two stages that keep it linear in the number of images:

1. **Candidates** (geometry, once): marks of *different* volunteers closer than ``link_radius`` are joined,
   and connected components are candidate clumps. A component in which some volunteer has several marks
   must hold several clumps (one mark per volunteer per clump): it is split by :func:`solve_component`,
   which tries k = k_max .. 1 clumps (merging the closest centres in turn), assigns each volunteer's marks to
   distinct clumps or to the dummy by an exact small assignment (Hungarian), and keeps the k of lowest
   cost. Two clumps 6 px apart that most volunteers marked separately stay two clumps.
2. **Links and openings** (vectorised over all images, every EM iteration): given skills, each mark is
   linked if that beats calling it a false positive, and a clump opens if its links pay its opening cost;
   centres are the skill-weighted mean of linked marks. Both decisions are exact for fixed membership.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

BIG = 1e12


def candidate_components(
    group: np.ndarray, vol: np.ndarray, x: np.ndarray, y: np.ndarray, link_radius: float
) -> np.ndarray:
    """Connected components of marks within ``link_radius`` of a mark by another volunteer (same image)."""
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # place every image group in its own tile, far apart, so one KD-tree serves all of them
    span = float(max(np.nanmax(np.abs(x)), np.nanmax(np.abs(y)))) * 2 + 10 * link_radius + 1
    gx = (group % 1024).astype(np.float64)
    gy = (group // 1024).astype(np.float64)
    pts = np.column_stack([x + gx * span, y + gy * span])
    pairs = cKDTree(pts).query_pairs(link_radius, output_type="ndarray")
    if len(pairs):
        pairs = pairs[vol[pairs[:, 0]] != vol[pairs[:, 1]]]
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


@dataclass
class ComponentInputs:
    """Per-mark cost ingredients for one component (see :mod:`clumptool.aggregation.skill`)."""

    xy: np.ndarray  # (n, 2)
    vol: np.ndarray  # (n,)
    base: np.ndarray  # link cost at d = 0
    inv2s2: np.ndarray  # 1 / (2 s2)
    weight: np.ndarray  # 1 / s2, for centres
    fp_cost: np.ndarray  # cost of the dummy
    open_cost: float


def _assign(inp: ComponentInputs, centres: np.ndarray, pairs: np.ndarray,
            multi: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Best assignment of marks to the given centres (or -1, the dummy) and its cost above all-dummy.

    ``pairs``: (p, 2) marks of volunteers with exactly two marks (solved in closed form, all at once);
    ``multi``: mark indices of each volunteer with three or more (solved exactly by the Hungarian method).
    """
    d2 = ((inp.xy[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    cost = inp.base[:, None] + d2 * inp.inv2s2[:, None]  # (n, k)
    k = centres.shape[0]
    best = np.argmin(cost, axis=1)
    lab = np.where(cost[np.arange(len(best)), best] < inp.fp_cost, best, -1)
    if len(pairs):
        _separate_pairs(cost, inp.fp_cost, lab, pairs)
    for idx in multi:  # volunteers with three or more marks: distinct clumps, exact
        m = len(idx)
        mat = np.full((m, k + m), BIG)
        mat[:, :k] = cost[idx]
        mat[np.arange(m), k + np.arange(m)] = inp.fp_cost[idx]
        rows, cols = linear_sum_assignment(mat)
        lab[idx[rows]] = np.where(cols < k, cols, -1)
    # open a clump only if its links pay for it
    linked_cost = np.where(lab >= 0, cost[np.arange(len(lab)), np.maximum(lab, 0)], 0.0)
    gain = np.bincount(np.maximum(lab, 0), weights=np.where(lab >= 0, inp.fp_cost - linked_cost, 0.0),
                       minlength=k)
    is_open = gain > inp.open_cost
    lab = np.where((lab >= 0) & is_open[np.maximum(lab, 0)], lab, -1)
    total = float(np.sum(inp.open_cost - gain[is_open]))
    return lab, total


def _separate_pairs(cost: np.ndarray, fp_cost: np.ndarray, lab: np.ndarray, pairs: np.ndarray) -> None:
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


def _refit(inp: ComponentInputs, lab: np.ndarray, centres: np.ndarray) -> np.ndarray:
    k = centres.shape[0]
    ok = lab >= 0
    w = np.bincount(lab[ok], weights=inp.weight[ok], minlength=k)
    sx = np.bincount(lab[ok], weights=inp.weight[ok] * inp.xy[ok, 0], minlength=k)
    sy = np.bincount(lab[ok], weights=inp.weight[ok] * inp.xy[ok, 1], minlength=k)
    new = centres.copy()
    has = w > 0
    new[has, 0] = sx[has] / w[has]
    new[has, 1] = sy[has] / w[has]
    return new


def solve_component(inp: ComponentInputs, max_clumps: int = 12, iterations: int = 4) -> np.ndarray:
    """Split one candidate component into clumps; returns a clump index per mark (-1 = dummy)."""
    vols, inverse, counts = np.unique(inp.vol, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    two = np.flatnonzero(counts == 2)
    pairs = np.column_stack([order[starts[two]], order[starts[two] + 1]])
    multi = [order[starts[i]:starts[i] + counts[i]] for i in np.flatnonzero(counts > 2)]
    k_max = int(min(counts.max(), max_clumps))
    seed_owner = np.flatnonzero(inverse == int(np.argmax(counts)))[:k_max]
    centres = inp.xy[seed_owner].astype(np.float64)

    best_lab, best_cost = None, np.inf
    while True:
        converged = False
        for _ in range(iterations):
            lab, cost = _assign(inp, centres, pairs, multi)
            new = _refit(inp, lab, centres)
            if (np.abs(new - centres) <= 1e-8 + 1e-5 * np.abs(centres)).all():  # np.allclose, cheaper
                converged = True
                break
            centres = new
        if not converged:  # the last refit moved the centres: assign to where they are now
            lab, cost = _assign(inp, centres, pairs, multi)
        if cost < best_cost - 1e-9:
            best_cost, best_lab = cost, lab
        if centres.shape[0] == 1:
            break
        # merge the two closest centres and try one clump fewer
        d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        i, j = np.unravel_index(np.argmin(d2), d2.shape)
        merged = (centres[i] + centres[j]) / 2
        centres = np.vstack([np.delete(centres, [i, j], axis=0), merged[None, :]])
    return best_lab


@dataclass(frozen=True)
class Assignment:
    """The outcome of one link-and-open step over all images: which marks belong to which open clump."""

    cluster: np.ndarray  # per mark: candidate clump id (-1 = no candidate)
    cl: np.ndarray  # per mark: candidate clump id, 0 where there is none (safe for indexing)
    linked: np.ndarray  # per mark: linked to an open clump
    d2: np.ndarray  # per mark: squared distance to its candidate's centre
    e: np.ndarray  # per mark: cost of calling it a false positive
    is_open: np.ndarray  # per candidate clump
    cx: np.ndarray  # per candidate clump centre
    cy: np.ndarray
    group_of: np.ndarray  # per candidate clump: image group
    gain: np.ndarray  # per candidate clump: sum of link gains
    oc: np.ndarray  # per image group: cost of opening a clump there
    n_c: int  # number of candidate clumps
