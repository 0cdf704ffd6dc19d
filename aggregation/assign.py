"""Marks -> clumps: which marks belong to which clump, and which are false positives.

The objective is the facility-location problem of the Clump Scout aggregator: open a clump in an image at
the cost of every viewer having missed it (sum of -log p_fn), link each mark to an open clump at the cost of
its Gaussian click likelihood, or send it to the false-positive "dummy" at -log(p_fp / area); at most one
mark per volunteer per clump. It is solved in two stages that keep it linear in the number of images:

1. **Candidates** (geometry, once): marks of *different* volunteers closer than ``link_radius`` are joined,
   and connected components are candidate clumps. A component in which some volunteer has several marks
   must hold several clumps (one mark per volunteer per clump): aggregation/split.py splits them all at once,
   trying k = k_max .. 1 clumps (merging the closest centres in turn), giving each volunteer's marks
   distinct clumps or the dummy by an exact small assignment, and keeping the k of lowest cost. Two clumps
   6 px apart that most volunteers marked separately stay two clumps.
2. **Links and openings** (vectorised over all images, every EM iteration): given skills, each mark is
   linked if that beats calling it a false positive, and a clump opens if its links pay its opening cost;
   centres are the skill-weighted mean of linked marks. Both decisions are exact for fixed membership.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


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
