"""How unsure the detector is about a galaxy: per-box uncertainty from several passes, aggregated per image.

Pure numpy, no model: the caller runs the detector (T passes: the 8 D4 symmetries of the image mapped back,
or T Monte Carlo dropout passes, or one plain pass) and hands over each pass's boxes and scores in the same
frame. These are the acquisition scores of Bayesian active learning for detection (BALD, Houlsby et al.
2011; test-time augmentation and MC dropout as the ensembles, Gal et al. 2017).

Per box (a *cluster*: the same clump seen in several passes, matched by IoU):

* ``bald``: mutual information between "is this a clump" and the pass, ``H(mean_t p_t) - mean_t H(p_t)``,
  an unmatched pass counting as background (p = 0);
* ``freq``: entropy of the detection frequency pi = (passes that found it) / T (1 bit-like maximum at 1/2);
* ``loc``: localisation disagreement ``1 - mean_t IoU(b_t, mean box)`` over the passes that found it,
  weighted by the mean score so that noise boxes near the 0.05 floor do not dominate;
* ``entropy``: binary entropy of the score (single pass: the first pass).

Per galaxy: ``sum`` (default, best in Brust et al. 2019 when cost is per image, as for Clump Scout), ``max``
or the mean of the top k, plus a *borderline-empty* term: when no box reaches the decision score (0.5), the
entropy of the best sub-threshold score, so that "nothing found, but almost" galaxies are not ranked 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clumptool.active_learning.options import AGGREGATES
from clumptool.detection.metrics import box_iou

EPS = 1e-12
#: Per-box uncertainty kinds that :func:`image_scores` returns (one image score each).
KINDS = ("bald", "freq", "loc", "entropy", "mean_score")


def binary_entropy(p: np.ndarray | float) -> np.ndarray:
    """``-p log p - (1-p) log(1-p)`` in nats (maximum log 2 at p = 0.5, 0 at p = 0 or 1)."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(np.maximum(p, EPS)), 0.0) + np.where(q > 0, q * np.log(np.maximum(q, EPS)), 0.0))
    return h


def bald(p: np.ndarray) -> np.ndarray:
    """BALD over the last axis: ``H(mean_t p_t) - mean_t H(p_t)`` (>= 0; 0 when every pass agrees)."""
    p = np.asarray(p, dtype=float)
    if p.shape[-1] == 0:
        return np.zeros(p.shape[:-1])
    return np.maximum(binary_entropy(p.mean(axis=-1)) - binary_entropy(p).mean(axis=-1), 0.0)


@dataclass(frozen=True)
class Pass:
    """One forward pass of the detector on one galaxy: boxes [x1, y1, x2, y2] in a common frame, scores."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:  # normalised once, at construction (a frozen value afterwards)
        object.__setattr__(self, "boxes", np.asarray(self.boxes, dtype=float).reshape(-1, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=float).reshape(-1))
        if self.labels is not None:
            object.__setattr__(self, "labels", np.asarray(self.labels).reshape(-1))
        if len(self.boxes) != len(self.scores):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")


def merge_classes(p: Pass, iou: float = 0.7) -> Pass:
    """Class-agnostic view of one pass: torchvision returns one box per class for the same proposal (clump
    0.6 + odd clump 0.3); overlapping boxes of *different* labels are merged, their scores added (<= 1),
    so that a box's score is the probability that there is a clump of any kind."""
    if p.labels is None or len(p.scores) < 2:
        return Pass(p.boxes, p.scores)
    order = np.argsort(-p.scores, kind="stable")
    boxes, scores, labels = p.boxes[order], p.scores[order], p.labels[order]
    ious = box_iou(boxes, boxes)
    kept: list[int] = []
    merged = scores.copy()
    for i in range(len(boxes)):
        host = next((j for j in kept if labels[j] != labels[i] and ious[i, j] >= iou), None)
        if host is None:
            kept.append(i)
        else:
            merged[host] = min(1.0, merged[host] + scores[i])
    return Pass(boxes[kept], merged[kept])


@dataclass(frozen=True)
class Clusters:
    """The same boxes followed across T passes: ``scores`` (B, T) with 0 where a pass missed the box,
    ``boxes`` (B, T, 4) with NaN there."""

    scores: np.ndarray
    boxes: np.ndarray

    @property
    def n_passes(self) -> int:
        return self.scores.shape[1]

    @property
    def found(self) -> np.ndarray:
        return np.isfinite(self.boxes[:, :, 0])


def match_passes(passes: Sequence[Pass], iou: float = 0.5) -> Clusters:
    """Group boxes of T passes into clusters holding at most one box per pass.

    Passes are taken in order; within a pass boxes go by decreasing score to the free cluster whose
    reference box (its highest-scoring member so far) overlaps most with IoU >= ``iou``, else open a new
    cluster. Unlike matching to the first pass only, a box that the first pass missed still gets a cluster.
    """
    t = len(passes)
    ref: list[np.ndarray] = []
    ref_score: list[float] = []
    rows_s: list[np.ndarray] = []
    rows_b: list[np.ndarray] = []
    for ti, p in enumerate(passes):
        order = np.argsort(-p.scores, kind="stable")
        taken: set[int] = set()
        n_ref = len(ref)  # clusters opened by this pass cannot take a second box from it
        ious = box_iou(p.boxes[order], np.asarray(ref)) if n_ref else np.zeros((len(order), 0))
        for oi, i in enumerate(order):
            best, best_iou = -1, iou
            if n_ref:
                for c in np.argsort(-ious[oi], kind="stable"):
                    if ious[oi, c] < best_iou:
                        break
                    if c not in taken:
                        best = int(c)
                        break
            if best < 0:
                ref.append(p.boxes[i].copy())
                ref_score.append(float(p.scores[i]))
                rows_s.append(np.zeros(t))
                rows_b.append(np.full((t, 4), np.nan))
                best = len(ref) - 1
            elif p.scores[i] > ref_score[best]:
                ref[best], ref_score[best] = p.boxes[i].copy(), float(p.scores[i])
            taken.add(best)
            rows_s[best][ti] = p.scores[i]
            rows_b[best][ti] = p.boxes[i]
    if not rows_s:
        return Clusters(np.zeros((0, t)), np.zeros((0, t, 4)))
    return Clusters(np.stack(rows_s), np.stack(rows_b))


def localisation_disagreement(clusters: Clusters) -> np.ndarray:
    """Per cluster ``1 - mean IoU`` of its boxes with their mean box (0 when found at most once)."""
    out = np.zeros(len(clusters.scores))
    for b in range(len(out)):
        bx = clusters.boxes[b][clusters.found[b]]
        if len(bx) < 2:
            continue
        mean_box = bx.mean(axis=0, keepdims=True)
        out[b] = 1.0 - float(box_iou(bx, mean_box).mean())
    return out


@dataclass(frozen=True)
class BoxUncertainties:
    """Per-cluster uncertainties (see the module docstring) and mean scores, one value per cluster each."""

    bald: np.ndarray
    freq: np.ndarray
    loc: np.ndarray
    entropy: np.ndarray
    mean_score: np.ndarray


def box_uncertainties(clusters: Clusters) -> BoxUncertainties:
    """Per-cluster uncertainties (see the module docstring) and the mean score."""
    s = clusters.scores
    mean = s.mean(axis=1) if s.size else np.zeros(len(s))
    freq = clusters.found.mean(axis=1) if s.size else np.zeros(len(s))
    return BoxUncertainties(bald=bald(s), freq=binary_entropy(freq), loc=localisation_disagreement(clusters) * mean,
                            entropy=binary_entropy(s[:, 0]) if s.size else np.zeros(0), mean_score=mean)


def aggregate(values: np.ndarray, how: str = "sum", k: int = 3) -> float:
    """One number per image from per-box values: ``sum``, ``max`` or ``topk`` (mean of the k largest)."""
    v = np.asarray(values, dtype=float).reshape(-1)
    if how not in AGGREGATES:
        raise ValueError(f"unknown aggregate {how!r} (use one of {', '.join(AGGREGATES)})")
    if v.size == 0:
        return 0.0
    if how == "sum":
        return float(v.sum())
    if how == "max":
        return float(v.max())
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    return float(np.sort(v)[::-1][:k].mean())


def borderline_empty(mean_scores: np.ndarray, decision: float = 0.5) -> float:
    """Entropy of the best score when no box reaches ``decision`` ("empty, but only just"), else 0."""
    m = np.asarray(mean_scores, dtype=float)
    if m.size == 0:
        return 0.0
    best = float(m.max())
    return float(binary_entropy(best)) if best < decision else 0.0


@dataclass(frozen=True)
class ImageScores:
    """One galaxy's uncertainties (fields in the order of select's score columns)."""

    bald: float
    freq: float
    loc: float
    entropy: float
    n_boxes: int          # clusters with mean score >= the decision score
    max_score: float
    borderline: float     # the borderline-empty term (unweighted)

    def get(self, kind: str) -> float:
        """The uncertainty named ``kind`` (a strategy's ranking score: bald, freq, loc or entropy)."""
        if kind not in ("bald", "freq", "loc", "entropy"):
            raise ValueError(f"unknown uncertainty {kind!r}")
        return float(getattr(self, kind))


def image_scores(passes: Sequence[Pass], how: str = "sum", k: int = 3, iou: float = 0.5,
                 decision: float = 0.5, borderline_weight: float = 1.0, merge: bool = True) -> ImageScores:
    """Every per-image uncertainty of one galaxy from T passes (T = 1 gives only the entropy meaningfully).

    ``bald``, ``freq``, ``loc``, ``entropy`` are each aggregated with ``how`` plus the borderline term,
    weighted by ``borderline_weight``; ``n_boxes`` (clusters with mean score >= decision), ``max_score`` and
    ``borderline`` are for the record.
    """
    if not passes:
        raise ValueError("need at least one pass")
    ps = [merge_classes(p) if merge else p for p in passes]
    clusters = match_passes(ps, iou)
    per_box = box_uncertainties(clusters)
    mean = per_box.mean_score
    border = borderline_empty(mean, decision)
    first = clusters.scores[:, 0] if len(clusters.scores) else np.zeros(0)
    extra = borderline_weight * border
    return ImageScores(
        bald=aggregate(per_box.bald, how, k) + extra, freq=aggregate(per_box.freq, how, k) + extra,
        loc=aggregate(per_box.loc, how, k) + extra,
        entropy=aggregate(per_box.entropy, how, k) + borderline_weight * borderline_empty(first, decision),
        n_boxes=int((mean >= decision).sum()), max_score=float(mean.max()) if mean.size else 0.0, borderline=border)
