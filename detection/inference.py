"""Detections in original pixels, backbone embeddings, and a plain streaming loop for benchmarks.

The commands run the detector through Lightning (:mod:`clumptool.detection.predicting`); the per-call score
threshold and MC dropout live in :func:`clumptool.detection.model.detect`, never in the model's state.
``iter_detections`` streams images on one device without Lightning (the detection bench measures the bare
forward pass with it); boxes come back in ORIGINAL image pixels via each image's Geometry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clumptool.detection.images import Geometry, image_stem, load_image, to_model_input
from clumptool.detection.model import cpu_setup, detect
from clumptool.detection.spec import ModelSpec


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


class _PathDataset(Dataset):
    def __init__(self, paths: list[Path], spec: ModelSpec):
        self.paths, self.spec = paths, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        img = load_image(path, self.spec.in_channels, self.spec.fits_bands)
        tensor, geom = to_model_input(img, self.spec)
        return tensor, geom, image_stem(path) or path.stem


def _collate(batch):
    return tuple(zip(*batch, strict=True))


def _chunks(it: Iterable[Path], n: int) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    for p in it:
        chunk.append(Path(p))
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def iter_detections(model: nn.Module, spec: ModelSpec, image_paths: Iterable[Path], batch_size: int = 8,
                    score_thresh: float = 0.05, num_workers: int = 0, device: str | torch.device | None = None,
                    progress: bool = False) -> Iterator[Detections]:
    """Detections for each image, in input order, boxes in original pixels.

    Paths are consumed in chunks (bounded memory even for a generator over millions of files).
    """
    cpu_setup()
    if device is not None:
        model.to(device)
    model.eval()
    dev = _device_of(model)
    total = len(image_paths) if hasattr(image_paths, "__len__") else None
    bar = tqdm(total=total, desc="detecting", unit="img", disable=not progress, leave=False)
    chunk_size = max(batch_size * max(num_workers, 1) * 64, batch_size)
    try:
        for chunk in _chunks(image_paths, chunk_size):
            loader = DataLoader(_PathDataset(chunk, spec), batch_size=batch_size, num_workers=num_workers,
                                collate_fn=_collate)
            for tensors, geoms, ids in loader:
                outs = detect(model, [t.to(dev, dtype=torch.float32) for t in tensors], score_thresh=score_thresh)
                outs = [{k: v.detach().cpu() for k, v in o.items()} for o in outs]
                for out, geom, sid in zip(outs, geoms, ids, strict=True):
                    yield to_detections(out, geom, sid)
                bar.update(len(tensors))
    finally:
        bar.close()


def to_detections(out: dict, geom: Geometry, subject_id: str) -> Detections:
    """Raw torchvision output of one image (working pixels) -> Detections in original pixels, clipped."""
    boxes = geom.to_original(out["boxes"].numpy()) if len(out["boxes"]) else np.zeros((0, 4))
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, geom.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, geom.height)
    return Detections(subject_id=str(subject_id), boxes=boxes.astype(np.float64),
                      scores=out["scores"].numpy().astype(np.float64),
                      labels=out["labels"].numpy().astype(np.int64), width=geom.width, height=geom.height)
