"""``clumptool evaluate`` as a plain function: a trained detector against true clumps.

Which galaxies: every image in the folder (``<subject_id>.png``, also .jpg/.fits), restricted to the
``subjects`` table when one is given. A galaxy without truth rows counts as having no clumps (every
detection there is a false positive). Only the region the model sees is scored: when the model works on a
central crop, true clumps whose centre lies outside it are left out and the rest are clipped to it (the
model's own boxes are clipped to its input the same way).

Truth: a boxes table (``subject_id, x1, y1, x2, y2[, label]``, e.g. aggregate's boxes) or a point table
(``subject_id, x, y[, label][, fwhm_px]``, e.g. simulate's truth.csv), whose points become squares of side
2.5 x fwhm_px by :mod:`clumptool.aggregation.boxes` (16.6 px where no FWHM is given). No label column means
every true clump is class 1.

Detections go through the same post-processing as ``predict`` (class-agnostic NMS at IoU 0.2 by default, the
paper's) so that the numbers describe the catalogue a user would get; ``nms_iou=None`` scores the raw model.

Outputs in ``out_dir``: ``metrics.json`` (settings, completeness/purity/F1 per scope at the common threshold
and at each scope's best-F1 threshold, curves sampled every 0.01 in score, COCO mAP) and ``pr_curve.png``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.boxes import DEFAULT_BOX_SCALE, DEFAULT_BOX_SIZE, box_sides, square_boxes
from clumptool.common.atomic import write_text_atomic
from clumptool.common.errors import ClumptoolError, where
from clumptool.common.tables import read_table
from clumptool.detection.metrics import (
    Evaluation,
    ImageResult,
    MatchSettings,
    evaluate_images,
    mean_average_precision,
)
from clumptool.detection.postprocess import PAPER_NMS_IOU, postprocess

BOX_FIELDS = ("x1", "y1", "x2", "y2")
POINT_FIELDS = ("x", "y")
FWHM_FIELDS = ("fwhm_px", "fwhmImagePix", "FWHM_r_px")
CURVE_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)


# ------------------------------------------------------------------------------------------------ inputs


def list_images(images_dir: str | os.PathLike, subject_ids: Iterable[str] | None = None) -> list[Path]:
    """Image files in ``images_dir`` sorted by subject id, only those of ``subject_ids`` when given."""
    from clumptool.detection.images import IMAGE_SUFFIXES, index_images

    images_dir = Path(images_dir)
    found = index_images(images_dir)
    if not found:
        raise ClumptoolError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    if subject_ids is not None:
        wanted = {str(s) for s in subject_ids}
        found = {k: v for k, v in found.items() if k in wanted}
        if not found:
            raise ClumptoolError(f"{images_dir}: none of the {len(wanted)} listed subjects has an image here "
                                 "(image files must be named <subject_id>.png)")
    return [found[k] for k in sorted(found)]


def read_subject_ids(path: str | os.PathLike) -> list[str]:
    """Subject ids (as text) of a subjects table: a Zooniverse export or any table with subject_id."""
    df = read_table(path, required=("subject_id",))
    return [str(s).strip() for s in df["subject_id"].dropna().astype(str)]


def _numeric(df: pd.DataFrame, cols: Iterable[str], path: Path) -> None:
    for c in cols:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ClumptoolError(f"{where(path, f'row {i + 2}', c)}: not a finite number ({df[c].iloc[i]!r})")
        df[c] = values.astype(float)


@dataclass
class Truth:
    """True boxes and labels by subject id, plus how they were obtained."""

    boxes: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    kind: str  # "boxes" | "points"
    note: str = ""

    def get(self, sid: str) -> tuple[np.ndarray, np.ndarray]:
        return self.boxes.get(sid, np.zeros((0, 4))), self.labels.get(sid, np.zeros(0, dtype=np.int64))


def truth_from_frame(df: pd.DataFrame, path: str | os.PathLike = "truth", box_scale: float = DEFAULT_BOX_SCALE,
                     box_size: float = DEFAULT_BOX_SIZE) -> Truth:
    """A boxes table or a point table (see the module docstring) -> :class:`Truth`."""
    path = Path(path)
    df = df.copy()
    if "subject_id" not in df.columns:
        raise ClumptoolError(f"{path}: missing column subject_id; found {', '.join(map(str, df.columns))}")
    if all(c in df.columns for c in BOX_FIELDS):
        kind = "boxes"
        _numeric(df, BOX_FIELDS, path)
        xyxy = df[list(BOX_FIELDS)].to_numpy(dtype=float)
        bad = (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ClumptoolError(f"{where(path, f'row {i + 2}', 'x2/y2')}: box has x2 <= x1 or y2 <= y1")
        note = "truth boxes as given"
    elif all(c in df.columns for c in POINT_FIELDS):
        kind = "points"
        _numeric(df, POINT_FIELDS, path)
        fcol = next((c for c in FWHM_FIELDS if c in df.columns), None)
        fwhm = pd.to_numeric(df[fcol], errors="coerce").to_numpy(dtype=float) if fcol else None
        sides = box_sides(fwhm, len(df), box_scale, box_size)
        xyxy = square_boxes(df["x"].to_numpy(dtype=float), df["y"].to_numpy(dtype=float), sides)
        note = (f"truth points -> squares of side {box_scale:g} x {fcol}" if fcol
                else f"truth points -> squares of side {box_size:g} px (no FWHM column)")
    else:
        raise ClumptoolError(
            f"{path}: truth needs subject_id with either box columns {', '.join(BOX_FIELDS)} or point columns "
            f"x, y; found {', '.join(map(str, df.columns))}")
    if "label" in df.columns:
        labels = pd.to_numeric(df["label"], errors="coerce")
        bad = labels.isna().to_numpy() | (labels.fillna(0) < 1).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ClumptoolError(f"{where(path, f'row {i + 2}', 'label')}: expected a class id >= 1 "
                                 f"(1 = clump, 2 = odd clump), got {df['label'].iloc[i]!r}")
        labels = labels.to_numpy(dtype=np.int64)
    else:
        labels = np.ones(len(df), dtype=np.int64)
        note += "; no label column: every true clump is class 1"
    sids = df["subject_id"].astype(str).str.strip().to_numpy()
    boxes: dict[str, np.ndarray] = {}
    labs: dict[str, np.ndarray] = {}
    if len(df):
        order = np.argsort(sids, kind="stable")
        uniq, start = np.unique(sids[order], return_index=True)
        for sid, chunk in zip(uniq, np.split(order, start[1:]), strict=True):
            boxes[str(sid)] = xyxy[chunk]
            labs[str(sid)] = labels[chunk]
    return Truth(boxes=boxes, labels=labs, kind=kind, note=note)


def read_truth(path: str | os.PathLike, box_scale: float = DEFAULT_BOX_SCALE,
               box_size: float = DEFAULT_BOX_SIZE) -> Truth:
    """Read a truth table (parquet or csv)."""
    return truth_from_frame(read_table(path), path, box_scale, box_size)


def restrict_to_region(boxes: np.ndarray, labels: np.ndarray, region: tuple[float, float, float, float]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True boxes whose centre lies inside ``region`` (x1, y1, x2, y2), clipped to it as the model's boxes are.

    Returns the clipped boxes, their labels and their sides BEFORE clipping (the FWHM, hence the default
    matching radius, does not shrink at the edge).
    """
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    x1, y1, x2, y2 = region
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
    kept = boxes[inside].copy()
    sides = np.maximum(kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1])
    kept[:, [0, 2]] = np.clip(kept[:, [0, 2]], x1, x2)
    kept[:, [1, 3]] = np.clip(kept[:, [1, 3]], y1, y2)
    return kept, np.asarray(labels)[inside], sides


# ------------------------------------------------------------------------------------------------ model side


def model_region(spec, width: int, height: int) -> tuple[float, float, float, float]:
    """The part of an original ``width`` x ``height`` image the model sees (x1, y1, x2, y2), original pixels.

    The working image's corners mapped back through the detection layer's own geometry, so it always
    agrees with how images are cropped for the model.
    """
    from clumptool.detection.images import working_geometry

    geometry, ww, wh = working_geometry(int(width), int(height), spec.crop, spec.image_size)
    corners = np.array([[0.0, 0.0, float(ww), float(wh)]])
    x1, y1, x2, y2 = np.asarray(geometry.to_original(corners), dtype=float).reshape(4)
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


@dataclass
class EvaluationReport:
    """What :func:`evaluate_model` computed and wrote."""

    metrics: dict
    evaluation: Evaluation
    out_dir: Path
    metrics_path: Path
    plot_path: Path

    def format_table(self) -> str:
        return format_metrics(self.metrics)


def evaluate_model(model_path: str | os.PathLike, truth_path: str | os.PathLike, images_dir: str | os.PathLike,
                   out_dir: str | os.PathLike, *, subjects: str | os.PathLike | None = None,
                   settings: MatchSettings | None = None, score_threshold: float | None = None,
                   nms_iou: float | None = PAPER_NMS_IOU, min_score: float = 0.05, batch_size: int = 8,
                   device: str | None = None, box_scale: float = DEFAULT_BOX_SCALE,
                   box_size: float = DEFAULT_BOX_SIZE, progress: bool = True) -> EvaluationReport:
    """Run the detector on the images and score it against the truth (see the module docstring).

    ``score_threshold``: the common threshold every scope is reported at (None: the overall best-F1 one);
    ``min_score``: detections below it are not kept at all (the curves start there); ``nms_iou``: the
    paper's class-agnostic NMS before scoring (None = off).
    """
    from clumptool.detection.inference import iter_detections
    from clumptool.detection.io import load_model

    settings = settings or MatchSettings()
    for name, value in (("score threshold", score_threshold), ("min score", min_score), ("NMS IoU", nms_iou)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ClumptoolError(f"{name} must be in [0, 1], got {value}")
    if batch_size < 1:
        raise ClumptoolError(f"batch size must be >= 1, got {batch_size}")
    out_dir = Path(out_dir)
    truth = read_truth(truth_path, box_scale, box_size)
    wanted = read_subject_ids(subjects) if subjects is not None else None
    paths = list_images(images_dir, wanted)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, spec = load_model(model_path, device=device)
    classes = {k: name for k, name in enumerate(spec.classes) if k > 0}

    results: list[ImageResult] = []
    n_true_outside = 0
    regions: dict[tuple[int, int], tuple[float, float, float, float]] = {}
    for det in iter_detections(model, spec, paths, batch_size=batch_size, score_thresh=min_score, device=device,
                               progress=progress):
        det = postprocess(det, min_score=min_score, nms_iou=nms_iou)
        key = (int(det.width), int(det.height))
        if key not in regions:
            regions[key] = model_region(spec, det.width, det.height)
        tb, tl = truth.get(str(det.subject_id))
        kept_b, kept_l, sides = restrict_to_region(tb, tl, regions[key])
        n_true_outside += len(tb) - len(kept_b)
        radius = sides / settings.box_scale if settings.max_dist is None else None
        results.append(ImageResult(str(det.subject_id), det.boxes, det.scores, det.labels, kept_b, kept_l,
                                   max_dist=radius))

    evaluation = evaluate_images(results, classes, settings, threshold=score_threshold)
    maps = {"per_class": mean_average_precision(results),
            "class_agnostic": mean_average_precision(results, class_agnostic=True)}
    if "map_per_class" in maps["per_class"]:
        maps["per_class"]["map_per_class"] = {classes.get(k, str(k)): v
                                             for k, v in maps["per_class"]["map_per_class"].items()}
    seen = {r.subject_id for r in results}
    metrics = {
        "model": {"path": str(model_path), "version": spec.version, "backbone": spec.backbone,
                  "image_size": spec.image_size, "crop": spec.crop},
        "truth": {"path": str(truth_path), "kind": truth.kind, "note": truth.note,
                  "n_true_in_region": int(sum(len(r.true_boxes) for r in results)),
                  "n_true_outside_region": int(n_true_outside),
                  "n_truth_subjects_not_evaluated": int(len(set(truth.boxes) - seen))},
        "images": {"folder": str(images_dir), "n_images": len(results),
                   "n_images_with_truth": int(sum(len(r.true_boxes) > 0 for r in results)),
                   "subjects_filter": None if subjects is None else str(subjects)},
        "settings": {**settings.as_dict(), "nms_iou": nms_iou, "min_score": min_score,
                     "score_threshold": score_threshold,
                     "region": "model's central crop" if spec.crop else "whole image"},
        "threshold": evaluation.threshold,
        "scopes": evaluation.summary,
        "map": maps,
        "curves": {name: c.sampled(CURVE_GRID[CURVE_GRID >= min_score - 1e-9])
                   for name, c in evaluation.curves.items()},
    }
    metrics_path = write_text_atomic(out_dir / "metrics.json", json.dumps(_jsonable(metrics), indent=2) + "\n")
    plot_path = out_dir / "pr_curve.png"
    from clumptool.detection.plots import plot_score_curves

    plot_score_curves(evaluation.curves, plot_path,
                      title=f"{Path(model_path).name}: {settings.describe()}, {len(results)} galaxies")
    return EvaluationReport(metrics=metrics, evaluation=evaluation, out_dir=out_dir, metrics_path=metrics_path,
                            plot_path=plot_path)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def format_metrics(metrics: dict) -> str:
    """A readable table of metrics.json."""
    s = metrics["settings"]
    thr = metrics["threshold"]
    lines = [f"Matching: {s['rule']}; {metrics['images']['n_images']} galaxies, "
             f"{metrics['truth']['n_true_in_region']} true clumps in the region the model sees "
             f"({metrics['truth']['n_true_outside_region']} outside it left out).",
             f"At score threshold {_fmt(thr)}"
             + (" (the overall best-F1 threshold)" if s["score_threshold"] is None else "") + ":",
             f"{'scope':<12}{'n_true':>8}{'n_det':>8}{'matched':>9}{'complete':>10}{'purity':>9}{'F1':>7}"
             f"   | best F1 {'thr':>6}{'compl':>7}{'purity':>8}{'F1':>7}"]
    for name, sc in metrics["scopes"].items():
        a, b = sc["at_threshold"], sc["best_f1"]
        lines.append(f"{name:<12}{a['n_true']:>8}{a['n_det']:>8}{a['n_matched']:>9}{_fmt(a['completeness']):>10}"
                     f"{_fmt(a['purity']):>9}{_fmt(a['f1']):>7}   |         {_fmt(b['threshold']):>6}"
                     f"{_fmt(b['completeness']):>7}{_fmt(b['purity']):>8}{_fmt(b['f1']):>7}")
    m = metrics["map"]
    lines.append(f"COCO mAP@0.5 = {_fmt(m['per_class'].get('map_50'))}, mAP@[.5:.95] = {_fmt(m['per_class'].get('map'))}"
                 f" (class-agnostic: {_fmt(m['class_agnostic'].get('map_50'))}, "
                 f"{_fmt(m['class_agnostic'].get('map'))})")
    return "\n".join(lines)
