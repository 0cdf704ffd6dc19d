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

The detector runs through the same Lightning path as ``predict`` (:func:`clumptool.detection.predicting.
detect_images`: one CPU, N CPU processes, GPUs, nodes; ``device`` as predict's ``--devices``), and the
detections go through the same post-processing (class-agnostic NMS at IoU 0.2 by default, the
paper's) so that the numbers describe the catalogue a user would get; ``nms_iou=None`` scores the raw model.

Threshold: completeness/purity are reported at the model's OPERATING threshold (chosen by ``train`` on its
validation galaxies and recorded in model.json; ``--score-threshold`` overrides; 0.5 for models that record
none, said so), never at the threshold best on the evaluated galaxies themselves: that figure is reported
beside it as ``best_on_this_set``, labelled optimistic. Undefined ratios (no true clump, no detection) are
null, never 1.0.

Nothing is quietly smaller than asked: listed subjects without an image, truth outside its image, NaN
coordinates or FWHM, unknown labels and empty truth are errors (``allow_missing_images`` /
``allow_no_truth`` go on and say so). Outputs in ``out_dir`` (``metrics.json``: settings, completeness/
purity/F1 per scope at the operating threshold and each scope's best-F1 threshold, curves sampled every 0.01
in score, COCO mAP; ``pr_curve.png``; ``manifest.json``) are published together or not at all
(:func:`clumptool.common.outputs.output_set`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clumptool.aggregation.boxes import DEFAULT_BOX_SCALE, DEFAULT_BOX_SIZE, box_sides, square_boxes
from clumptool.common.errors import ClumptoolError, where
from clumptool.common.ids import normalise_subject_ids, read_subject_ids  # noqa: F401 (read_subject_ids: predict's)
from clumptool.common.jsonable import jsonable
from clumptool.common.options import options_from
from clumptool.common.outputs import check_output_location, output_set, read_manifest
from clumptool.common.tables import read_table
from clumptool.detection.image_list import ImageList
from clumptool.detection.images import (  # noqa: F401 (re-exported: predict and tests use them from here)
    IMAGE_SUFFIXES,
    SHOWN_IDS,
    find_images,
    image_size,
    image_stem,
    index_images,
    looked_for,
    missing_images_error,
    working_geometry,
)
from clumptool.detection.io import load_model
from clumptool.detection.metrics import (
    Evaluation,
    ImageResult,
    evaluate_images,
    mean_average_precision,
)
from clumptool.detection.options import EvaluateOptions
from clumptool.detection.plots import plot_score_curves
from clumptool.detection.predicting import PostProcessed, check_device, collecting_trainer, detect_images  # noqa: F401

BOX_FIELDS = ("x1", "y1", "x2", "y2")
POINT_FIELDS = ("x", "y")
FWHM_FIELDS = ("fwhm_px", "fwhmImagePix", "FWHM_r_px")
CURVE_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)
LEGACY_THRESHOLD = 0.5
OPTIMISTIC_NOTE = "tuned on the evaluated galaxies: optimistic (a figure for a paper uses the operating threshold)"


# ------------------------------------------------------------------------------------------------ inputs


def list_images(images_dir: str | os.PathLike, subject_ids: Iterable[str] | None = None) -> list[Path]:
    """Image files of ``subject_ids`` (or all) in ``images_dir``; a listed subject without an image is an error."""
    paths, missing = find_images(images_dir, subject_ids)
    if missing:
        raise missing_images_error(missing, len(paths) + len(missing), images_dir, "the subject list")
    return paths


def _numeric(df: pd.DataFrame, cols: Iterable[str], path: Path) -> None:
    for c in cols:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ClumptoolError(f"{where(path, f'row {i + 2}', c)}: not a finite number ({df[c].iloc[i]!r}); "
                                 "fix the value or delete the row")
        df[c] = values.astype(float)


@dataclass
class Truth:
    """True boxes and labels by subject id, plus how they were obtained (and each box's row in the file)."""

    boxes: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    kind: str  # "boxes" | "points"
    note: str = ""
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # file row numbers (header = row 1)
    path: str = "truth"

    def get(self, sid: str) -> tuple[np.ndarray, np.ndarray]:
        return self.boxes.get(sid, np.zeros((0, 4))), self.labels.get(sid, np.zeros(0, dtype=np.int64))

    @property
    def n_boxes(self) -> int:
        return int(sum(len(b) for b in self.boxes.values()))


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(bad[0]) if len(bad) else None


def truth_from_frame(df: pd.DataFrame, path: str | os.PathLike = "truth", box_scale: float = DEFAULT_BOX_SCALE,
                     box_size: float = DEFAULT_BOX_SIZE, num_classes: int = 3) -> Truth:
    """A boxes table or a point table (see the module docstring) -> :class:`Truth`, every value checked.

    Rejected with file, row and field: an empty subject id, non-finite or negative coordinates, a box with
    x2 <= x1 or y2 <= y1, a NaN or non-positive FWHM, a label outside 1..num_classes-1.
    """
    path = Path(path)
    df = df.copy().reset_index(drop=True)
    if "subject_id" not in df.columns:
        raise ClumptoolError(f"{path}: missing column subject_id; found {', '.join(map(str, df.columns))}")
    sids = normalise_subject_ids(df["subject_id"], where=path, field="subject_id").to_numpy()
    if all(c in df.columns for c in BOX_FIELDS):
        kind = "boxes"
        _numeric(df, BOX_FIELDS, path)
        xyxy = df[list(BOX_FIELDS)].to_numpy(dtype=float)
        i = _first_bad((xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1]))
        if i is not None:
            raise ClumptoolError(f"{where(path, f'row {i + 2}', 'x2/y2')}: box has x2 <= x1 or y2 <= y1; "
                                 "fix the corners (x1, y1 top-left, x2, y2 bottom-right) or delete the row")
        centres = (xyxy[:, :2] + xyxy[:, 2:]) / 2
        note = "truth boxes as given"
    elif all(c in df.columns for c in POINT_FIELDS):
        kind = "points"
        _numeric(df, POINT_FIELDS, path)
        fcol = next((c for c in FWHM_FIELDS if c in df.columns), None)
        fwhm = None
        if fcol:
            fwhm = pd.to_numeric(df[fcol], errors="coerce").to_numpy(dtype=float)
            i = _first_bad(~np.isfinite(fwhm) | (fwhm <= 0))
            if i is not None:
                raise ClumptoolError(f"{where(path, f'row {i + 2}', fcol)}: the PSF FWHM must be a positive number "
                                     f"of pixels, got {df[fcol].iloc[i]!r}; fix it, or drop the {fcol} column to "
                                     f"use boxes of {box_size:g} px")
        sides = box_sides(fwhm, len(df), box_scale, box_size)
        centres = df[list(POINT_FIELDS)].to_numpy(dtype=float)
        xyxy = square_boxes(centres[:, 0], centres[:, 1], sides)
        note = (f"truth points -> squares of side {box_scale:g} x {fcol}" if fcol
                else f"truth points -> squares of side {box_size:g} px (no FWHM column)")
    else:
        raise ClumptoolError(
            f"{path}: truth needs subject_id with either box columns {', '.join(BOX_FIELDS)} or point columns "
            f"x, y; found {', '.join(map(str, df.columns))}")
    for axis, name in ((0, "x" if kind == "points" else "x1/x2"), (1, "y" if kind == "points" else "y1/y2")):
        i = _first_bad(centres[:, axis] < 0)
        if i is not None:
            raise ClumptoolError(f"{where(path, f'row {i + 2}', name)}: clump centre at {centres[i, axis]:g} px, "
                                 "outside the image (pixels run from 0 at the left/top edge); fix or delete the row")
    if "label" in df.columns:
        labels = pd.to_numeric(df["label"], errors="coerce")
        lab = labels.to_numpy(dtype=float)
        i = _first_bad(~np.isfinite(lab) | (lab != np.round(np.nan_to_num(lab))) | (lab < 1) | (lab >= num_classes))
        if i is not None:
            raise ClumptoolError(f"{where(path, f'row {i + 2}', 'label')}: expected a class id 1 .. "
                                 f"{num_classes - 1} (1 = clump, 2 = odd clump), got {df['label'].iloc[i]!r}; "
                                 "fix the label or delete the row")
        labels = lab.astype(np.int64)
    else:
        labels = np.ones(len(df), dtype=np.int64)
        note += "; no label column: every true clump is class 1"
    boxes: dict[str, np.ndarray] = {}
    labs: dict[str, np.ndarray] = {}
    rows: dict[str, np.ndarray] = {}
    if len(df):
        order = np.argsort(sids, kind="stable")
        uniq, start = np.unique(sids[order], return_index=True)
        for sid, chunk in zip(uniq, np.split(order, start[1:]), strict=True):
            boxes[str(sid)] = xyxy[chunk]
            labs[str(sid)] = labels[chunk]
            rows[str(sid)] = chunk + 2
    return Truth(boxes=boxes, labels=labs, kind=kind, note=note, rows=rows, path=str(path))


def read_truth(path: str | os.PathLike, box_scale: float = DEFAULT_BOX_SCALE,
               box_size: float = DEFAULT_BOX_SIZE, num_classes: int = 3) -> Truth:
    """Read a truth table (parquet or csv)."""
    return truth_from_frame(read_table(path), path, box_scale, box_size, num_classes)


def check_truth_inside(truth: Truth, sizes: dict[str, tuple[int, int]]) -> None:
    """Every true clump centre lies in its image (``sizes``: subject id -> (width, height))."""
    for sid, (w, h) in sizes.items():
        b = truth.boxes.get(sid)
        if b is None or not len(b):
            continue
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        i = _first_bad((cx > w) | (cy > h))
        if i is not None:
            row = int(truth.rows[sid][i])
            name = ("x" if cx[i] > w else "y") if truth.kind == "points" else ("x1/x2" if cx[i] > w else "y1/y2")
            raise ClumptoolError(
                f"{where(truth.path, f'row {row}', name)}: clump centre ({cx[i]:g}, {cy[i]:g}) px is outside the "
                f"{w} x {h} px image of subject {sid}; truth must be in that image's pixels (x right, y down from "
                "the top-left corner): fix or delete the row")


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


# ------------------------------------------------------------------------------------------------ options


def operating_threshold(spec, score_threshold: float | None) -> tuple[float, str]:
    """The score threshold to report/keep detections at, and where it came from.

    ``score_threshold`` (an explicit option) wins; else the threshold ``train`` chose on its validation
    galaxies (``spec.score_threshold``); a model trained before that was recorded gets the legacy 0.5.
    """
    if score_threshold is not None:
        return float(score_threshold), "--score-threshold"
    recorded = getattr(spec, "score_threshold", None)
    if recorded is not None:
        return float(recorded), "the model's operating threshold (chosen by train on its validation galaxies)"
    return LEGACY_THRESHOLD, (f"legacy default {LEGACY_THRESHOLD:g}: the model records no operating threshold "
                              "(trained before clumptool recorded one); pass --score-threshold or retrain")


def check_output_folder(out_dir: str | os.PathLike, command: str, what: str = "--out") -> Path:
    """``check_output_location`` plus: an existing set written by another command (a model, an evaluation ...)
    is never replaced by this one."""
    out = check_output_location(out_dir, what)
    manifest = read_manifest(out) if out.is_dir() else None
    if manifest is not None and manifest.get("command") != command:
        raise ClumptoolError(f"{what} {out}: holds the outputs of 'clumptool {manifest.get('command')}', which "
                             f"'{command}' would replace; choose another folder")
    return out


# ------------------------------------------------------------------------------------------------ model side


def model_region(spec, width: int, height: int) -> tuple[float, float, float, float]:
    """The part of an original ``width`` x ``height`` image the model sees (x1, y1, x2, y2), original pixels.

    The working image's corners mapped back through the detection layer's own geometry, so it always
    agrees with how images are cropped for the model.
    """
    geometry, ww, wh = working_geometry(int(width), int(height), spec.crop, spec.image_size)
    corners = np.array([[0.0, 0.0, float(ww), float(wh)]])
    x1, y1, x2, y2 = np.asarray(geometry.to_original(corners), dtype=float).reshape(4)
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


@dataclass(frozen=True)
class EvaluationReport:
    """What :func:`evaluate_model` computed and wrote (``is_global_zero`` False: another process of a
    multi-process run, which wrote nothing)."""

    metrics: dict
    evaluation: Evaluation
    out_dir: Path
    metrics_path: Path
    plot_path: Path
    is_global_zero: bool = True

    def format_table(self) -> str:
        return format_metrics(self.metrics)


def evaluate_model(model_path: str | os.PathLike, truth_path: str | os.PathLike, images_dir: str | os.PathLike,
                   out_dir: str | os.PathLike, options: EvaluateOptions | None = None, *,
                   subjects: str | os.PathLike | None = None, progress: bool = True,
                   **fields: Any) -> EvaluationReport:
    """Run the detector on the images and score it against the truth (see the module docstring).

    ``score_threshold``: the operating threshold every scope is reported at (None: the one train chose on
    its validation galaxies and recorded in the model; 0.5 for older models). The threshold best on these very
    galaxies is reported too, labelled optimistic. ``min_score``: detections below it are not kept at all (the
    curves start there); ``nms_iou``: the paper's class-agnostic NMS before scoring (None = off).
    ``allow_missing_images``: go on when galaxies listed in ``subjects`` have no image (counted);
    ``allow_no_truth``: go on when no evaluated galaxy has a true clump (completeness is then undefined).
    ``device``, ``num_nodes``, ``strategy``, ``precision``: as predict's ``--devices`` ... (None: every GPU,
    else one CPU process); in a multi-process run every process scores its share and the first one writes.
    Every input is checked before the detector runs; outputs are published as one set (``manifest.json``).
    ``options`` (an :class:`~clumptool.detection.options.EvaluateOptions`, checked when made) or keyword
    ``fields`` of it (``batch_size=4``, ...) say how.
    """
    o = options_from(EvaluateOptions, options, fields)
    settings, score_threshold, nms_iou, min_score = o.settings, o.score_threshold, o.nms_iou or None, o.min_score
    batch_size, device, box_scale, box_size = o.batch_size, o.device, o.box_scale, o.box_size
    allow_missing_images, allow_no_truth = o.allow_missing_images, o.allow_no_truth
    num_nodes, strategy, precision, num_workers = o.num_nodes, o.strategy, o.precision, o.num_workers
    out_dir = check_output_folder(out_dir, "evaluate")
    trainer = collecting_trainer("auto" if device is None else device, num_nodes=num_nodes, strategy=strategy,
                                 precision=precision, progress=progress, option="--device")
    model, spec = load_model(model_path, device="cpu")
    threshold, threshold_source = operating_threshold(spec, score_threshold)
    floor = min(min_score, threshold)
    truth = read_truth(truth_path, box_scale, box_size, num_classes=spec.num_classes)
    if truth.n_boxes == 0 and not allow_no_truth:
        raise ClumptoolError(
            f"{truth_path}: no true clumps in this table, so completeness cannot be measured; give the truth table "
            "of these galaxies (aggregate's boxes or simulate's truth.csv), or pass --allow-no-truth to measure "
            "only the detections (purity) on clump-free galaxies")
    wanted = read_subject_ids(subjects) if subjects is not None else None
    if wanted is not None and not wanted:
        raise ClumptoolError(f"--subjects {subjects}: lists no subjects; give the table of galaxies to evaluate")
    paths, missing = find_images(images_dir, wanted)
    if missing and not allow_missing_images:
        raise missing_images_error(missing, len(wanted or []), images_dir, subjects)
    sizes = {sid: image_size(p) for p in paths if (sid := image_stem(p) or p.stem) in truth.boxes}
    check_truth_inside(truth, sizes)
    if not sizes and truth.n_boxes and not allow_no_truth:
        t_ids, i_ids = sorted(truth.boxes)[:3], [image_stem(p) for p in paths[:3]]
        raise ClumptoolError(
            f"{truth_path}: none of its {len(truth.boxes)} subjects is among the {len(paths)} galaxies evaluated "
            f"(truth ids e.g. {', '.join(t_ids)}; images e.g. {', '.join(map(str, i_ids))}): check that --images "
            "and --subjects belong to this truth table, or pass --allow-no-truth to score clump-free galaxies")
    classes = {k: name for k, name in enumerate(spec.classes) if k > 0}

    results: list[ImageResult] = []
    n_true_outside = 0
    regions: dict[tuple[int, int], tuple[float, float, float, float]] = {}
    images = ImageList(ids=[image_stem(p) or p.stem for p in paths], paths=[str(p) for p in paths])
    detections = detect_images(trainer, model, PostProcessed(floor, nms_iou), images, spec, batch_size=batch_size,
                               num_workers=num_workers)
    for sid, det in zip(images.ids, detections, strict=True):
        key = (int(det.width), int(det.height))
        if key not in regions:
            regions[key] = model_region(spec, det.width, det.height)
        tb, tl = truth.get(sid)
        kept_b, kept_l, sides = restrict_to_region(tb, tl, regions[key])
        n_true_outside += len(tb) - len(kept_b)
        radius = sides / settings.box_scale if settings.max_dist is None else None
        results.append(ImageResult(sid, det.boxes, det.scores, det.labels, kept_b, kept_l, max_dist=radius))

    evaluation = evaluate_images(results, classes, settings, threshold=threshold)
    maps = {"per_class": mean_average_precision(results),
            "class_agnostic": mean_average_precision(results, class_agnostic=True)}
    if "map_per_class" in maps["per_class"]:
        maps["per_class"]["map_per_class"] = {classes.get(k, str(k)): v
                                             for k, v in maps["per_class"]["map_per_class"].items()}
    seen = {r.subject_id for r in results}
    n_true = int(sum(len(r.true_boxes) for r in results))
    notes: list[str] = []
    if missing:
        notes.append(f"{len(missing)} of the {len(wanted or [])} subjects in {subjects} have no image in "
                     f"{images_dir} and were NOT evaluated (--allow-missing-images): {', '.join(missing[:SHOWN_IDS])}"
                     + (", ..." if len(missing) > SHOWN_IDS else ""))
    not_seen = len(set(truth.boxes) - seen)
    if not_seen and subjects is None:
        notes.append(f"{not_seen} subjects of {truth_path} have no image in {images_dir} and were not evaluated")
    if n_true == 0:
        notes.append("no true clump in the region the model sees: completeness and F1 are undefined")
    if not any(len(r.pred_scores) for r in results):
        notes.append(f"the model made no detection scoring >= {floor:g} on any of the {len(results)} galaxies: "
                     "purity is undefined; check the model (training may have found nothing) or lower --min-score")
    for sc in evaluation.summary.values():
        sc["best_f1"]["note"] = OPTIMISTIC_NOTE
    best = dict(evaluation.summary["overall"]["best_f1"])
    metrics = {
        "model": {"path": str(model_path), "version": spec.version, "backbone": spec.backbone,
                  "image_size": spec.image_size, "crop": spec.crop},
        "truth": {"path": str(truth_path), "kind": truth.kind, "note": truth.note,
                  "n_true_in_region": n_true, "n_true_outside_region": int(n_true_outside),
                  "n_truth_subjects_not_evaluated": int(not_seen)},
        "images": {"folder": str(images_dir), "n_images": len(results),
                   "n_images_with_truth": int(sum(len(r.true_boxes) > 0 for r in results)),
                   "subjects_filter": None if subjects is None else str(subjects),
                   "n_listed": None if wanted is None else len(wanted),
                   "n_missing_images": len(missing), "missing_images": missing},
        "settings": {**settings.as_dict(), "nms_iou": nms_iou, "min_score": floor,
                     "score_threshold": threshold, "score_threshold_source": threshold_source,
                     "region": "model's central crop" if spec.crop else "whole image"},
        "threshold": threshold,
        "threshold_source": threshold_source,
        "scopes": evaluation.summary,
        "best_on_this_set": best,
        "map": maps,
        "curves": {name: c.sampled(CURVE_GRID[CURVE_GRID >= floor - 1e-9])
                   for name, c in evaluation.curves.items()},
        "notes": notes,
    }
    if not trainer.is_global_zero:  # another process of a multi-process run: the first one writes
        return EvaluationReport(metrics=metrics, evaluation=evaluation, out_dir=out_dir,
                                metrics_path=out_dir / "metrics.json", plot_path=out_dir / "pr_curve.png",
                                is_global_zero=False)
    with output_set(out_dir, "evaluate") as staged:
        staged.info = {"model": str(model_path), "model_version": spec.version, "truth": str(truth_path),
                       "images": str(images_dir), "score_threshold": threshold, "n_images": len(results),
                       "n_missing_images": len(missing)}
        (staged.path / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2) + "\n",
                                                  encoding="utf-8")
        plot_score_curves(evaluation.curves, staged.path / "pr_curve.png", operating=threshold,
                          title=f"{Path(model_path).name}: {settings.describe()}, {len(results)} galaxies")
    return EvaluationReport(metrics=metrics, evaluation=evaluation, out_dir=out_dir,
                            metrics_path=out_dir / "metrics.json", plot_path=out_dir / "pr_curve.png")


def _undefined(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def _fmt(v) -> str:
    if _undefined(v):
        return "undef."
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def format_metrics(metrics: dict) -> str:
    """A readable table of metrics.json (undefined ratios say why, never print as numbers)."""
    s = metrics["settings"]
    thr = metrics["threshold"]
    lines = [f"Matching: {s['rule']}; {metrics['images']['n_images']} galaxies, "
             f"{metrics['truth']['n_true_in_region']} true clumps in the region the model sees "
             f"({metrics['truth']['n_true_outside_region']} outside it left out).",
             f"At score threshold {_fmt(thr)} ({metrics.get('threshold_source', '')}):",
             f"{'scope':<12}{'n_true':>8}{'n_det':>8}{'matched':>9}{'complete':>10}{'purity':>9}{'F1':>8}"
             f"   | best on this set (optimistic) {'thr':>6}{'compl':>8}{'purity':>8}{'F1':>8}"]
    why: list[str] = []
    for name, sc in metrics["scopes"].items():
        a, b = sc["at_threshold"], sc["best_f1"]
        lines.append(f"{name:<12}{a['n_true']:>8}{a['n_det']:>8}{a['n_matched']:>9}{_fmt(a['completeness']):>10}"
                     f"{_fmt(a['purity']):>9}{_fmt(a['f1']):>8}   | {'':>30}{_fmt(b['threshold']):>6}"
                     f"{_fmt(b['completeness']):>8}{_fmt(b['purity']):>8}{_fmt(b['f1']):>8}")
        if _undefined(a["completeness"]):
            why.append(f"{name}: completeness undefined (no true clumps)")
        if _undefined(a["purity"]):
            why.append(f"{name}: purity undefined (no detections at the threshold)")
    lines += why
    m = metrics["map"]

    def mp(d: dict, key: str) -> str:
        v = d.get(key)
        return "undefined (no data)" if _undefined(v) else f"{v:.3f}"

    lines.append(f"COCO mAP@0.5 = {mp(m['per_class'], 'map_50')}, mAP@[.5:.95] = {mp(m['per_class'], 'map')}"
                 f" (class-agnostic: {mp(m['class_agnostic'], 'map_50')}, {mp(m['class_agnostic'], 'map')})")
    lines += [f"note: {n}" for n in metrics.get("notes", [])]
    return "\n".join(lines)
