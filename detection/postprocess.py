"""The paper's post-processing of raw detections: class-agnostic NMS and removal of central (bulge) boxes.

torchvision's Faster R-CNN already suppresses overlaps within a class (IoU 0.5); Popp et al. (2024) then ran
a class-agnostic NMS at IoU 0.2, so that a clump is not reported once as "clump" and once as "odd clump",
and dropped detections at the galaxy centre (the bulge is not a clump).
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import numpy as np
import torch
from torchvision.ops import nms

from clumptool.detection.options import PAPER_NMS_IOU  # noqa: F401 (re-exported)

T = TypeVar("T")


def keep_indices(boxes: np.ndarray, scores: np.ndarray, width: float, height: float, *,
                 min_score: float = 0.0, nms_iou: float | None = PAPER_NMS_IOU,
                 drop_central: float = 0.0) -> np.ndarray:
    """Indices of the detections to keep, highest score first.

    ``min_score``: drop detections below it; ``nms_iou``: class-agnostic NMS at this IoU (None or 0 = off);
    ``drop_central``: drop detections whose box centre is within this many pixels of the image centre.
    """
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    idx = np.flatnonzero(scores >= min_score)
    if drop_central > 0 and len(idx):
        cx = (boxes[idx, 0] + boxes[idx, 2]) / 2.0 - width / 2.0
        cy = (boxes[idx, 1] + boxes[idx, 3]) / 2.0 - height / 2.0
        idx = idx[np.hypot(cx, cy) > drop_central]
    if nms_iou and len(idx) > 1:
        kept = nms(torch.as_tensor(boxes[idx], dtype=torch.float64), torch.as_tensor(scores[idx], dtype=torch.float64),
                   float(nms_iou)).numpy()
        idx = idx[kept]
    return idx[np.argsort(-scores[idx], kind="stable")]


def postprocess(det: T, *, min_score: float = 0.0, nms_iou: float | None = PAPER_NMS_IOU,
                drop_central: float = 0.0) -> T:
    """A copy of a :class:`~clumptool.detection.inference.Detections` with only the kept detections."""
    keep = keep_indices(det.boxes, det.scores, det.width, det.height, min_score=min_score, nms_iou=nms_iou,
                        drop_central=drop_central)
    return dataclasses.replace(det, boxes=np.asarray(det.boxes).reshape(-1, 4)[keep],
                               scores=np.asarray(det.scores)[keep], labels=np.asarray(det.labels)[keep])
