"""The bare streaming loop the detection bench measures Lightning against: images on one device, no Trainer.

Not part of clumptool: the commands run the detector through Lightning (:mod:`clumptool.detection.predicting`).
``tests/detection/test_inference.py`` checks that this loop and the Lightning path give the same detections, so
the bench's overhead ratio compares like with like.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clumptool.detection.images import image_stem, load_image, to_model_input
from clumptool.detection.inference import Detections, to_detections
from clumptool.detection.model import cpu_setup, detect
from clumptool.detection.spec import ModelSpec


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
    dev = next(model.parameters()).device
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
