"""Detections in original pixels and backbone embeddings.

The commands run the detector through Lightning (:mod:`clumptool.detection.predicting`); the per-call score
threshold and MC dropout live in :func:`clumptool.detection.model.detect`, never in the model's state.
Boxes come back in ORIGINAL image pixels via each image's Geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clumptool.detection.images import Geometry


@dataclass(frozen=True)
class Detections:
    """Detections of one image, boxes [x1, y1, x2, y2] in original pixels."""

    subject_id: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    width: int
    height: int


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_tensors(model: nn.Module, images: list[torch.Tensor]) -> np.ndarray:
    """(n, d) features: global average of the last backbone level (before the FPN), for diversity sampling.

    The model must be in eval mode (it is not switched: it may be shared)."""
    if model.training:
        raise ValueError("embed_tensors() needs the model in eval mode (call model.eval() once)")
    dev = _device_of(model)
    batch = model.transform([im.to(dev, dtype=torch.float32) for im in images])[0].tensors  # normalised
    feats = model.backbone.features(batch)[-1]
    return feats.mean(dim=(2, 3)).cpu().numpy().astype(np.float32)


def to_detections(out: dict, geom: Geometry, subject_id: str) -> Detections:
    """Raw torchvision output of one image (working pixels) -> Detections in original pixels, clipped."""
    boxes = geom.to_original(out["boxes"].numpy()) if len(out["boxes"]) else np.zeros((0, 4))
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, geom.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, geom.height)
    return Detections(subject_id=str(subject_id), boxes=boxes.astype(np.float64),
                      scores=out["scores"].numpy().astype(np.float64),
                      labels=out["labels"].numpy().astype(np.int64), width=geom.width, height=geom.height)
