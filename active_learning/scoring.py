"""Scoring a pool for select-next-batch: the detector's passes per galaxy, through Lightning's predict path.

:class:`ScoringHead` is what ``predict_step`` runs on each batch (see
:class:`clumptool.detection.predicting.BatchHead`): the strategy's passes (the 8 D4 symmetries mapped back,
``passes`` MC dropout passes, or one plain pass), each galaxy's uncertainties
(:func:`clumptool.active_learning.uncertainty.image_scores`) and its plain detections (for the selection
figure, so that nothing is run again to draw). The score threshold and MC dropout are per-call settings of
:func:`clumptool.detection.model.detect`: the model is shared and never switched into a mode. MC dropout
draws from torch's generator seeded by (seed, the batch's first galaxy) inside a forked RNG, so its scores
depend on the batch size but not on the number of processes (batches are the same for any number).

:func:`score_pool` and :func:`embed_galaxies` run their heads with
:func:`clumptool.detection.predicting.detect_images`, the one path (one CPU, N CPU processes, GPUs, nodes)
that predict and evaluate use too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn

from clumptool.active_learning.uncertainty import ImageScores, Pass, image_scores
from clumptool.common.errors import ClumptoolError
from clumptool.detection.image_list import ImageList
from clumptool.detection.images import Geometry
from clumptool.detection.inference import Detections, embed_tensors, to_detections
from clumptool.detection.model import detect, has_dropout
from clumptool.detection.postprocess import postprocess
from clumptool.detection.predicting import collecting_trainer, detect_images, to_numpy_outputs
from clumptool.detection.spec import ModelSpec
from clumptool.detection.symmetry import D4, apply_to_image, invert_boxes

if TYPE_CHECKING:
    from clumptool.active_learning.select import ScoringOptions

#: The lowest score the selection figure draws; lower detections are not kept for it.
DRAWN_MIN_SCORE = 0.2
SCORE_COLUMNS = ("bald", "freq", "loc", "entropy", "n_boxes", "max_score", "borderline")
IMAGE_HINT = "replace the image, or leave this galaxy out of --pool"


@dataclass(frozen=True)
class ScoredGalaxy:
    """One galaxy's uncertainties and its plain-pass detections (>= :data:`DRAWN_MIN_SCORE`, original pixels)."""

    scores: ImageScores
    detections: Detections


@dataclass(frozen=True)
class PoolScores:
    """:func:`score_pool`'s answer: the score table, galaxies scored per second, detections by galaxy id."""

    table: pd.DataFrame
    rate: float
    detections: dict[str, Detections]


def _passes(outs: list[dict], n_images: int) -> list[list[Pass]]:
    """Repeated passes over the same images (outputs of pass t are ``outs[t * n_images: (t + 1) * n_images]``)."""
    per_image: list[list[Pass]] = [[] for _ in range(n_images)]
    for j, out in enumerate(outs):
        per_image[j % n_images].append(Pass(out["boxes"], out["scores"], out["labels"]))
    return per_image


@dataclass(frozen=True)
class ScoringHead:
    """select-next-batch's ``predict_step``: ``mode`` tta | mc | single; ``passes`` MC dropout passes."""

    mode: str
    passes: int
    score_thresh: float
    aggregate: str = "sum"
    topk: int = 3
    match_iou: float = 0.5
    borderline_weight: float = 1.0
    seed: int = 0

    @classmethod
    def from_options(cls, options: ScoringOptions, seed: int = 0) -> ScoringHead:
        return cls(mode=options.mode or "single", passes=options.n_passes, score_thresh=options.score_thresh,
                   aggregate=options.aggregate, topk=options.topk, match_iou=options.match_iou,
                   borderline_weight=options.borderline_weight, seed=seed)

    def _tta(self, model: nn.Module, images: list[torch.Tensor]) -> tuple[list[list[Pass]], list[dict]]:
        outs = to_numpy_outputs(detect(model, [apply_to_image(t, k).contiguous() for k in D4 for t in images],
                                       score_thresh=self.score_thresh))
        per_image: list[list[Pass]] = [[] for _ in images]
        for j, out in enumerate(outs):
            k, i = divmod(j, len(images))
            h, w = images[i].shape[-2:]
            boxes = invert_boxes(out["boxes"], k, w, h) if len(out["boxes"]) else np.zeros((0, 4))
            per_image[i].append(Pass(boxes, out["scores"], out["labels"]))
        return per_image, outs[: len(images)]  # k = 0 is the identity: the plain pass

    def _mc(self, model: nn.Module, images: list[torch.Tensor], first: int) -> list[list[Pass]]:
        """``passes`` dropout passes over the batch, the masks drawn from (seed, index of its first galaxy)."""
        devices = [images[0].device] if images and images[0].device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, first]).generate_state(1)[0]))
            outs = [o for _ in range(self.passes)
                    for o in detect(model, images, score_thresh=self.score_thresh, mc_dropout=True)]
        return _passes(to_numpy_outputs(outs), len(images))

    def __call__(self, model: nn.Module, images: list[torch.Tensor], geoms: list[Geometry], first: int
                 ) -> list[ScoredGalaxy]:
        if self.mode == "tta":
            passes, plain = self._tta(model, images)
        else:
            plain = to_numpy_outputs(detect(model, images, score_thresh=self.score_thresh))
            passes = self._mc(model, images, first) if self.mode == "mc" else _passes(plain, len(images))
        out = []
        for ps, raw, geom in zip(passes, plain, geoms, strict=True):
            det = to_detections({k: torch.from_numpy(v) for k, v in raw.items()}, geom, "")
            out.append(ScoredGalaxy(
                scores=image_scores(ps, self.aggregate, self.topk, self.match_iou,
                                    borderline_weight=self.borderline_weight),
                detections=postprocess(det, min_score=DRAWN_MIN_SCORE, nms_iou=None)))
        return out


@dataclass(frozen=True)
class EmbeddingHead:
    """``predict_step`` for the diversity step: each galaxy's backbone embedding."""

    def __call__(self, model: nn.Module, images: list[torch.Tensor], geoms: list[Geometry], first: int
                 ) -> list[np.ndarray]:
        return list(embed_tensors(model, images))


def _image_list(table: pd.DataFrame) -> ImageList:
    return ImageList(ids=table["galaxy_id"].astype(str).tolist(), paths=table["image_path"].astype(str).tolist())


def score_pool(model: nn.Module | None, spec: ModelSpec, table: pd.DataFrame, options: ScoringOptions,
               seed: int = 0, progress: bool = True, *, trainer: L.Trainer | None = None) -> PoolScores:
    """Uncertainty of every galaxy of ``table`` (galaxy_id, image_path): a table with ``score`` (the
    strategy's) and every component (:data:`SCORE_COLUMNS`), the galaxies scored per second, and each
    galaxy's plain detections. ``trainer``: from :func:`~clumptool.detection.predicting.collecting_trainer`
    (default: one CPU process, or every GPU)."""
    n = len(table)
    t0 = time.perf_counter()
    if options.mode is None:  # random: no model
        rng = np.random.default_rng(seed)
        res = pd.DataFrame({"galaxy_id": table["galaxy_id"].to_numpy(), "score": rng.random(n)})
        return PoolScores(res, n / max(time.perf_counter() - t0, 1e-9), {})
    if options.mode == "mc" and not has_dropout(model):
        raise ClumptoolError(f"strategy 'mc-bald' needs a model with dropout, but this one has none "
                             f"(box_dropout = {spec.box_dropout} in model.json); train with --box-dropout 0.2 "
                             "or choose --strategy tta-bald")
    trainer = trainer if trainer is not None else collecting_trainer(progress=progress)
    images = _image_list(table)
    scored: list[ScoredGalaxy] = detect_images(trainer, model, ScoringHead.from_options(options, seed), images, spec,
                                               batch_size=options.batch_size, num_workers=options.workers,
                                               hint=IMAGE_HINT)
    rate = n / max(time.perf_counter() - t0, 1e-9)
    res = pd.DataFrame({c: [getattr(g.scores, c) for g in scored] for c in SCORE_COLUMNS},
                       columns=list(SCORE_COLUMNS))
    res = res.astype({c: "float64" for c in SCORE_COLUMNS if c != "n_boxes"} | {"n_boxes": "int64"})
    res.insert(0, "score", [g.scores.get(options.kind) for g in scored] if scored else np.zeros(0))
    res.insert(0, "galaxy_id", table["galaxy_id"].to_numpy())
    return PoolScores(res, rate, {sid: g.detections for sid, g in zip(images.ids, scored, strict=True)})


def embed_galaxies(model: nn.Module, spec: ModelSpec, table: pd.DataFrame, batch_size: int = 8, workers: int = 0,
                   *, trainer: L.Trainer | None = None) -> np.ndarray:
    """(n, d) backbone embeddings (global average of the last level) of the galaxies of ``table``."""
    trainer = trainer if trainer is not None else collecting_trainer()
    emb = detect_images(trainer, model, EmbeddingHead(), _image_list(table), spec, batch_size=batch_size,
                        num_workers=workers, hint=IMAGE_HINT)
    return np.stack(emb) if emb else np.zeros((0, 0), np.float32)
