"""Picking a spread-out batch among uncertain candidates, so that n near-identical galaxies are not all sent.

Two methods on backbone embeddings (one row per candidate):

* ``kcenter``: greedy k-centre / core-set (Sener & Savarese 2018): start from the most uncertain candidate,
  then repeatedly add the candidate farthest from everything chosen (optionally also from already labelled
  galaxies' embeddings). Deterministic.
* ``kmeans++``: k-means++ seeding (``sklearn.cluster.kmeans_plusplus``) with the uncertainty as sample
  weight: the next pick is drawn with probability proportional to weight x squared distance to the nearest
  pick, as in PPAL / BADGE. Reproducible through ``seed``.

Embeddings are standardised per feature first so that a few high-variance channels do not decide alone.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import kmeans_plusplus

from clumptool.active_learning.options import DIVERSITY_METHODS as METHODS
from clumptool.common.errors import ClumptoolError


def _standardise(x: np.ndarray, ref: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(x, dtype=np.float64)
    both = x if ref is None or len(ref) == 0 else np.vstack([x, ref])
    mu, sd = both.mean(axis=0), both.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    xs = (x - mu) / sd
    rs = None if ref is None or len(ref) == 0 else (np.asarray(ref, dtype=np.float64) - mu) / sd
    return xs, rs


def k_center_greedy(embeddings: np.ndarray, n: int, scores: np.ndarray | None = None,
                    labelled: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``n`` rows chosen by greedy k-centre (farthest-first traversal).

    The first pick is the highest ``scores`` row (row 0 without scores) unless ``labelled`` embeddings are
    given, in which case every pick is the row farthest from the labelled set and the picks so far.
    """
    x, lab = _standardise(embeddings, labelled)
    m = len(x)
    n = min(int(n), m)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    dist = np.full(m, np.inf)
    if lab is not None:
        for chunk in np.array_split(lab, max(1, len(lab) // 1024)):
            d = ((x[:, None, :] - chunk[None, :, :]) ** 2).sum(-1).min(axis=1)
            dist = np.minimum(dist, d)
    chosen: list[int] = []
    if lab is None:
        first = int(np.argmax(scores)) if scores is not None else 0
        chosen.append(first)
        dist = np.minimum(dist, ((x - x[first]) ** 2).sum(-1))
    while len(chosen) < n:
        d = dist.copy()
        d[chosen] = -1.0
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        dist = np.minimum(dist, ((x - x[nxt]) ** 2).sum(-1))
    return np.asarray(chosen, dtype=np.int64)


def kmeanspp_select(embeddings: np.ndarray, n: int, scores: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` rows by k-means++ seeding weighted by ``scores`` (sklearn), reproducible by seed."""
    x, _ = _standardise(embeddings)
    m = len(x)
    n = min(int(n), m)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    w = None
    if scores is not None:
        w = np.clip(np.asarray(scores, dtype=np.float64), 0, None)
        w = w + 1e-6 * (w.max() if w.max() > 0 else 1.0)  # zero-score rows stay possible, just unlikely
    _, idx = kmeans_plusplus(x, n_clusters=n, sample_weight=w, random_state=int(seed))
    idx = np.asarray(idx, dtype=np.int64)
    if len(np.unique(idx)) < n:  # duplicate points can repeat an index: top up with the best unused rows
        seen = list(dict.fromkeys(idx.tolist()))
        order = np.argsort(-(scores if scores is not None else np.zeros(m)), kind="stable")
        seen += [int(i) for i in order if int(i) not in set(seen)][: n - len(seen)]
        idx = np.asarray(seen, dtype=np.int64)
    return idx


def select_diverse(embeddings: np.ndarray | None, scores: np.ndarray, n: int, method: str = "kcenter",
                   seed: int = 0) -> np.ndarray:
    """``n`` indices among the candidates: by ``method`` on the embeddings, or the top scores for ``none``."""
    if method not in METHODS:
        raise ClumptoolError(f"unknown diversity method {method!r} (use one of {', '.join(METHODS)})")
    scores = np.asarray(scores, dtype=float)
    if method == "none" or n >= len(scores):
        return np.argsort(-scores, kind="stable")[:n].astype(np.int64)
    if embeddings is None or len(embeddings) != len(scores):
        raise ClumptoolError(f"diversity method {method!r} needs one embedding per candidate")
    if method == "kcenter":
        return k_center_greedy(embeddings, n, scores)
    return kmeanspp_select(embeddings, n, scores, seed)
