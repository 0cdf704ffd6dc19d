"""Completeness and purity of detected clumps against true clumps, as in Popp et al. (2024).

completeness = matched true clumps / true clumps; purity = matched detections / detections. A detection
matches at most one true clump and a true clump at most one detection.

Matching (``method``):

- ``"centre"`` (default): the detection's box centre lies within ``max_dist`` pixels of the true centre.
  Clump Scout boxes are squares of one size per galaxy (2.5 x PSF FWHM), so only the centre carries
  information; by default ``max_dist`` is one PSF FWHM of that galaxy, recovered from the true box side
  (side / 2.5, the rule of :mod:`clumptool.aggregation.boxes`).
- ``"iou"``: box IoU >= ``iou_thresh``. IoU >= 0.5 is strict for 10-20 px boxes: one FWHM of offset
  between two equal squares of side 2.5 FWHM already gives IoU = 0.43.

Assignment (``assignment``): ``"greedy"`` (default, as COCO) takes detections by decreasing score and gives
each the best still-free true clump (nearest centre / highest IoU); ``"hungarian"`` maximises the number
of matches (then minimises total distance / 1 - IoU) with scipy's ``linear_sum_assignment``. Greedy matching
of the detections above a threshold is the greedy matching of all detections restricted to them, so one
pass gives the whole curve over score thresholds; Hungarian curves re-match each image at its own scores.

Per class, detections of class c are matched to true clumps of class c; "overall" ignores labels.
The assignment and the ratios are :mod:`clumptool.common.matching`'s (shared with the consensus evaluation
and training's validation F1). Empty denominators are undefined, never made up: with no true clump
completeness and F1 are NaN (JSON null), with no detection purity is NaN and F1 is 0 (nothing of the truth
was found); the counts are always reported beside the ratios. COCO
mAP is NaN where torchmetrics answers -1 ("no data"). Numpy, with torchvision's box IoU and torchmetrics'
COCO mAP (:func:`mean_average_precision`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import box_iou as tv_box_iou

from clumptool.common.matching import (
    assign_one_to_one,
    completeness,
    f1_score,
    purity,
    scores_from_counts,
)

# MatchSettings (how to match) lives with the other options, checked once on construction; this module trusts it.
from clumptool.detection.options import MATCH_METHODS, MatchSettings  # noqa: F401 (re-exported)


def _boxes(a: np.ndarray | Sequence) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a.reshape(0, 4) if a.size == 0 else a.reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of ``[x1, y1, x2, y2]`` boxes (torchvision.ops.box_iou; 0 where both boxes are empty)."""
    iou = tv_box_iou(torch.as_tensor(_boxes(a)), torch.as_tensor(_boxes(b))).numpy()
    return np.nan_to_num(iou, nan=0.0)


def box_centres(boxes: np.ndarray) -> np.ndarray:
    b = _boxes(boxes)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0], axis=-1)


def centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) Euclidean distance between box centres."""
    ca, cb = box_centres(a), box_centres(b)
    return np.hypot(ca[:, None, 0] - cb[None, :, 0], ca[:, None, 1] - cb[None, :, 1])


def _quality(pred_boxes: np.ndarray, true_boxes: np.ndarray, settings: MatchSettings,
             max_dist: float | np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(valid, cost) matrices of shape (n_pred, n_true); lower cost is a better match."""
    if settings.method == "iou":
        iou = box_iou(pred_boxes, true_boxes)
        return iou >= settings.iou_thresh - 1e-12, 1.0 - iou
    d = centre_distance(pred_boxes, true_boxes)
    if max_dist is None:
        max_dist = settings.max_dist
    if max_dist is None:
        t = _boxes(true_boxes)
        side = np.maximum(t[:, 2] - t[:, 0], t[:, 3] - t[:, 1])
        max_dist = side / settings.box_scale
    radius = np.broadcast_to(np.asarray(max_dist, dtype=float), (d.shape[1],))
    return d <= radius[None, :] + 1e-9, d


def match_detections(pred_boxes: np.ndarray, pred_scores: np.ndarray, true_boxes: np.ndarray, *,
                     settings: MatchSettings | None = None, max_dist: float | np.ndarray | None = None,
                     **kwargs) -> np.ndarray:
    """Match detections to true clumps one-to-one in one image.

    Returns an int array (n_pred,): the index of the matched true box, or -1 for a false positive.
    ``max_dist`` (scalar or one per true box) overrides the settings' radius; other keyword arguments build
    a :class:`MatchSettings` (``method``, ``iou_thresh``, ``max_dist``, ``assignment``).
    """
    if settings is None:
        settings = MatchSettings(**({"max_dist": max_dist} if np.isscalar(max_dist) else {}), **kwargs)
    pred_boxes, true_boxes = _boxes(pred_boxes), _boxes(true_boxes)
    scores = np.asarray(pred_scores, dtype=float).reshape(-1)
    if len(scores) != len(pred_boxes):
        raise ValueError(f"{len(pred_boxes)} boxes but {len(scores)} scores")
    out = np.full(len(pred_boxes), -1, dtype=np.int64)
    if len(pred_boxes) == 0 or len(true_boxes) == 0:
        return out
    valid, cost = _quality(pred_boxes, true_boxes, settings, max_dist)
    return assign_one_to_one(valid, cost, scores=scores, assignment=settings.assignment)


@dataclass
class ImageResult:
    """Detections and truth of one image, in the same (original) pixels."""

    subject_id: str
    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    pred_labels: np.ndarray
    true_boxes: np.ndarray
    true_labels: np.ndarray
    max_dist: np.ndarray | None = None  # per true box; None = the settings' rule

    def __post_init__(self) -> None:
        self.pred_boxes = _boxes(self.pred_boxes)
        self.true_boxes = _boxes(self.true_boxes)
        self.pred_scores = np.asarray(self.pred_scores, dtype=float).reshape(-1)
        self.pred_labels = np.asarray(self.pred_labels, dtype=np.int64).reshape(-1)
        self.true_labels = np.asarray(self.true_labels, dtype=np.int64).reshape(-1)
        if not len(self.pred_boxes) == len(self.pred_scores) == len(self.pred_labels):
            raise ValueError(f"{self.subject_id}: detections have unequal lengths of boxes, scores, labels")
        if len(self.true_boxes) != len(self.true_labels):
            raise ValueError(f"{self.subject_id}: true boxes and labels have unequal lengths")

    def select(self, label: int | None) -> ImageResult:
        """The detections and true clumps of one class (None: all, labels ignored)."""
        if label is None:
            return self
        p, t = self.pred_labels == label, self.true_labels == label
        md = None if self.max_dist is None else np.asarray(self.max_dist)[t]
        return ImageResult(self.subject_id, self.pred_boxes[p], self.pred_scores[p], self.pred_labels[p],
                           self.true_boxes[t], self.true_labels[t], md)


@dataclass
class ScoreCurve:
    """Counts as a function of the score threshold (a detection counts when score >= threshold).

    ``thresholds`` decrease; entry k holds ``n_det[k]`` detections of which ``n_matched[k]`` match a true
    clump, out of ``n_true`` true clumps.
    """

    thresholds: np.ndarray
    n_det: np.ndarray
    n_matched: np.ndarray
    n_true: int

    @property
    def completeness(self) -> np.ndarray:
        return np.asarray(completeness(self.n_matched, self.n_true), dtype=float).reshape(-1)

    @property
    def purity(self) -> np.ndarray:
        return np.asarray(purity(self.n_matched, self.n_det), dtype=float).reshape(-1)

    @property
    def f1(self) -> np.ndarray:
        return np.asarray(f1_score(self.n_matched, self.n_true, self.n_det), dtype=float).reshape(-1)

    def at(self, threshold: float) -> dict:
        """Counts and ratios at one threshold."""
        k = np.flatnonzero(self.thresholds >= threshold)
        n_det = int(self.n_det[k[-1]]) if len(k) else 0
        n_matched = int(self.n_matched[k[-1]]) if len(k) else 0
        c, p, f1 = scores_from_counts(self.n_true, n_det, n_matched)
        return {"threshold": float(threshold), "n_true": self.n_true, "n_det": n_det, "n_matched": n_matched,
                "completeness": c, "purity": p, "f1": f1}

    def best_f1(self) -> dict:
        """The threshold with the highest F1 (the highest such threshold on ties).

        ``threshold`` is None when there is no best: no detection, or no true clump (F1 undefined everywhere).
        """
        f1 = self.f1
        if len(self.thresholds) == 0 or not np.isfinite(f1).any():
            out = self.at(np.inf)
            out["threshold"] = None
            return out
        k = int(np.flatnonzero(f1 >= np.nanmax(f1) - 1e-12)[0])  # thresholds decrease: first = highest
        return self.at(float(self.thresholds[k]))

    def sampled(self, grid: np.ndarray) -> dict:
        """Completeness/purity/F1 on a threshold grid, JSON-ready (bounded size for metrics.json)."""
        rows = [self.at(float(t)) for t in grid]
        return {k: [r[k] for r in rows] for k in ("threshold", "n_det", "n_matched", "completeness", "purity",
                                                   "f1")}


def _curve_from_flags(scores: np.ndarray, matched: np.ndarray, n_true: int) -> ScoreCurve:
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], matched[order].astype(np.int64)
    cum_det = np.arange(1, len(s) + 1)
    cum_match = np.cumsum(m)
    # keep the last index of each run of equal scores: a threshold includes all ties
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)
    return ScoreCurve(thresholds=s[last], n_det=cum_det[last], n_matched=cum_match[last], n_true=int(n_true))


def score_curve(images: Sequence[ImageResult], settings: MatchSettings, label: int | None = None) -> ScoreCurve:
    """Completeness/purity counts over every score threshold, for one class (or all with ``label=None``)."""
    sel = [im.select(label) for im in images]
    n_true = sum(len(im.true_boxes) for im in sel)
    scores = np.concatenate([im.pred_scores for im in sel]) if sel else np.zeros(0)
    if settings.assignment == "greedy":
        flags = [match_detections(im.pred_boxes, im.pred_scores, im.true_boxes, settings=settings,
                                  max_dist=im.max_dist) >= 0 for im in sel]
        matched = np.concatenate(flags) if flags else np.zeros(0, dtype=bool)
        return _curve_from_flags(scores, matched, n_true)
    # Hungarian: the number of matches in an image only changes at that image's own scores, so re-match each
    # image at its own distinct scores and add the changes up over every threshold (exact, no grid).
    thresholds = np.unique(scores)[::-1]
    n_det = np.searchsorted(-np.sort(scores)[::-1], -thresholds, side="right")
    ev_scores: list[float] = []
    ev_delta: list[int] = []
    for im in sel:
        if len(im.pred_boxes) == 0 or len(im.true_boxes) == 0:
            continue
        prev = 0
        for t in np.unique(im.pred_scores)[::-1]:
            keep = im.pred_scores >= t
            m = int((match_detections(im.pred_boxes[keep], im.pred_scores[keep], im.true_boxes, settings=settings,
                                      max_dist=im.max_dist) >= 0).sum())
            if m != prev:
                ev_scores.append(float(t))
                ev_delta.append(m - prev)
                prev = m
    order = np.argsort(-np.asarray(ev_scores), kind="stable")
    ev_s = np.asarray(ev_scores)[order]
    cum = np.cumsum(np.asarray(ev_delta, dtype=np.int64)[order])
    k = np.searchsorted(-ev_s, -thresholds, side="right")  # events with score >= threshold
    n_matched = np.where(k > 0, cum[np.maximum(k - 1, 0)] if len(cum) else 0, 0)
    return ScoreCurve(thresholds=thresholds, n_det=n_det.astype(np.int64), n_matched=np.asarray(n_matched, np.int64),
                      n_true=int(n_true))


@dataclass
class Evaluation:
    """Curves per scope ("overall" and one per class name) and the summary numbers."""

    settings: MatchSettings
    curves: dict[str, ScoreCurve]
    threshold: float | None
    summary: dict = field(default_factory=dict)


def evaluate_images(images: Sequence[ImageResult], classes: Mapping[int, str], settings: MatchSettings,
                    threshold: float | None = None) -> Evaluation:
    """Completeness, purity, F1 overall (class-agnostic) and per class.

    ``threshold`` is the common score threshold every scope is reported at (``at_threshold``); None uses the
    overall best-F1 threshold. Each scope also reports its own ``best_f1``.
    """
    curves = {"overall": score_curve(images, settings, None)}
    for label, name in classes.items():
        curves[name] = score_curve(images, settings, int(label))
    best = curves["overall"].best_f1()
    common = threshold if threshold is not None else best["threshold"]
    summary: dict = {}
    for name, curve in curves.items():
        at = curve.at(np.inf if common is None else common)
        if common is None:
            at["threshold"] = None
        summary[name] = {"at_threshold": at, "best_f1": curve.best_f1()}
    return Evaluation(settings=settings, curves=curves, threshold=common, summary=summary)


def mean_average_precision(images: Sequence[ImageResult], class_agnostic: bool = False) -> dict:
    """COCO mAP@0.5 and mAP@[.5:.95] with torchmetrics (pycocotools backend), per class too.

    ``class_agnostic`` relabels everything as one class (a detection of the wrong class still counts).
    """
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=not class_agnostic,
                                  backend="pycocotools")
    preds, target = [], []
    for im in images:
        pl = np.ones_like(im.pred_labels) if class_agnostic else im.pred_labels
        tl = np.ones_like(im.true_labels) if class_agnostic else im.true_labels
        preds.append({"boxes": torch.as_tensor(im.pred_boxes, dtype=torch.float32),
                      "scores": torch.as_tensor(im.pred_scores, dtype=torch.float32),
                      "labels": torch.as_tensor(pl, dtype=torch.int64)})
        target.append({"boxes": torch.as_tensor(im.true_boxes, dtype=torch.float32),
                       "labels": torch.as_tensor(tl, dtype=torch.int64)})
    if not preds:
        return {"map": float("nan"), "map_50": float("nan")}
    metric.update(preds, target)
    with warnings.catch_warnings():  # "no ground truth" style warnings: the NaN below says it
        warnings.simplefilter("ignore")
        res = metric.compute()
    out = {"map": _defined(res["map"]), "map_50": _defined(res["map_50"]), "map_75": _defined(res["map_75"]),
           "mar_100": _defined(res["mar_100"])}
    if not class_agnostic and "classes" in res:
        cls = np.atleast_1d(res["classes"].numpy())
        per = np.atleast_1d(res["map_per_class"].numpy())
        out["map_per_class"] = {int(c): _defined(v) for c, v in zip(cls, per, strict=False)}
    return out


def _defined(value) -> float:
    """torchmetrics' -1 means "no data to compute this from": undefined (NaN), never a score."""
    v = float(value)
    return float("nan") if v < 0 else v
