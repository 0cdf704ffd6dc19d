"""Lightning wrappers: the detector as a LightningModule (losses, validation F1) and the data as a DataModule.

Validation F1 (the checkpoint/early-stopping criterion) is completeness/purity of the detections with
score >= 0.5 against the validation boxes, class-agnostic, matched one-to-one by centre distance within one
PSF FWHM (box side / 2.5) with :func:`clumptool.detection.metrics.match_detections`. The counts are a
torchmetrics :class:`MatchCounts` metric, summed over batches and over DDP processes before the ratios are
taken. Without validation truth they are undefined (NaN), never 1.

Exact resume: an epoch's randomness depends only on (seed, epoch), never on what ran before, so a run resumed
from the checkpoint written at the end of epoch k repeats epochs k+1... of the uninterrupted run exactly.
:class:`EpochSampler` shuffles from (seed, epoch) and hands the epoch to the dataset with each index (the
augmentations draw from (seed, epoch, index), also in worker processes), and :class:`StepSeed` re-seeds
torch / numpy / random before every training step from (seed, epoch, step) (Faster R-CNN samples anchors and
RoIs from torch's global RNG, and Lightning draws from it at points that differ between a fresh and a
resumed run).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from torchmetrics import Metric

from clumptool.common.matching import scores_from_counts
from clumptool.detection.data import Augment, DetectionDataset, Item, collate
from clumptool.detection.metrics import match_detections
from clumptool.detection.model import build_model
from clumptool.detection.spec import ModelSpec, weights_name

VAL_SCORE = 0.5


def match_counts(pred_boxes: np.ndarray, pred_scores: np.ndarray, true_boxes: np.ndarray,
                 score: float = VAL_SCORE) -> tuple[int, int, int]:
    """(n_true, n_det, n_matched) for one image at a score threshold."""
    keep = pred_scores >= score
    pb, ps = pred_boxes[keep], pred_scores[keep]
    matched = match_detections(pb, ps, true_boxes) if len(pb) and len(true_boxes) else np.zeros(0)
    return len(true_boxes), len(pb), int((np.asarray(matched) >= 0).sum())


class MatchCounts(Metric):
    """Validation counts (true clumps, detections, matched) at a score threshold, class-agnostic.

    Summed over batches, and over DDP processes when computed (``dist_reduce_fx="sum"``); :meth:`compute`
    gives completeness, purity and F1 (:func:`~clumptool.common.matching.scores_from_counts`).
    """

    full_state_update = False

    def __init__(self, score: float = VAL_SCORE):
        super().__init__()
        self.score = score
        for name in ("n_true", "n_det", "n_matched"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, outputs: list[dict], targets: list[dict]) -> None:
        for out, tgt in zip(outputs, targets, strict=True):
            n_true, n_det, n_matched = match_counts(out["boxes"].float().cpu().numpy(),
                                                    out["scores"].float().cpu().numpy(),
                                                    tgt["boxes"].cpu().numpy(), score=self.score)
            self.n_true += n_true
            self.n_det += n_det
            self.n_matched += n_matched

    def compute(self) -> tuple[float, float, float]:
        return scores_from_counts(int(self.n_true), int(self.n_det), int(self.n_matched))


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """A 32-bit seed for one training step of a run (the same whatever ran before)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(step), int(rank)]).generate_state(1)[0])


class StepSeed(L.Callback):
    """Re-seed torch, numpy and random before each training step from (seed, epoch, step, rank)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        s = step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)  # also seeds every CUDA device


class EpochHistory(L.Callback):
    """One row per epoch (mean training losses, validation metrics), kept in every checkpoint.

    The CSV log of an interrupted run may lack its last epochs (it is flushed now and then); this record
    travels with the checkpoint, so a resumed run's history is the uninterrupted run's.
    """

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        row = {"epoch": int(trainer.current_epoch)}
        for k, v in trainer.callback_metrics.items():
            if (k.startswith("train_") and not k.endswith("_step") and k != "train_loss") or k.startswith("val_"):
                row[k] = float(v)
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))


class EpochSampler(DistributedSampler):
    """DistributedSampler (shuffled from seed + epoch) that yields (epoch, index) so the dataset knows the epoch.

    A subclass of DistributedSampler, so Lightning keeps it under DDP and calls ``set_epoch`` every epoch.
    """

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, int(i)) for i in super().__iter__())


class DetectorModule(L.LightningModule):
    """Faster R-CNN training: summed torchvision losses, AdamW, warm-up then cosine learning rate."""

    def __init__(self, spec: dict, weights: str | None = None, lr: float = 3e-4, weight_decay: float = 5e-5,
                 warmup_steps: int = 100, run: dict | None = None):
        """``spec`` must record ``weights`` (``ModelSpec.with_init_weights``): the checkpoint's hyper-parameters
        then rebuild the same layers. ``run`` records the data settings of the run (seed, batch size,
        validation fraction) in checkpoints, so that a resume repeats them."""
        super().__init__()
        self.spec = ModelSpec.from_dict(dict(spec))
        if weights_name(weights) is not None and self.spec.init_weights != weights_name(weights):
            raise ValueError(f"spec.init_weights is {self.spec.init_weights!r} but the weights are {weights!r}: "
                             "pass spec.with_init_weights(weights)")
        self.save_hyperparameters()
        self.model = build_model(self.spec, weights=weights)
        self.val_counts = MatchCounts()

    def forward(self, images):
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, targets, _ = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        n = len(images)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        for k, v in losses.items():
            self.log(f"train_{k}", v, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, targets, _ = batch
        self.val_counts.update(self.model(images), targets)

    def on_validation_epoch_end(self) -> None:
        c, p, f1 = self.val_counts.compute()  # summed over the DDP processes
        self.val_counts.reset()
        self.log_dict({"val_f1": f1, "val_completeness": c, "val_purity": p}, prog_bar=True, sync_dist=False,
                      rank_zero_only=False)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warm = min(self.hparams.warmup_steps, max(total // 10, 1))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(total - warm, 1)))) * 0.99 + 0.01

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ClumpDataModule(L.LightningDataModule):
    """Train/validation datasets of labelled galaxies; DDP samplers are added by Lightning."""

    def __init__(self, train_items: list[Item], val_items: list[Item], spec: ModelSpec, batch_size: int = 4,
                 workers: int = 0, cache: bool = False, seed: int = 0, augment: Augment | None = None,
                 progress: bool = False):
        super().__init__()
        self.train_items, self.val_items, self.spec = train_items, val_items, spec
        self.batch_size, self.workers, self.cache, self.seed = batch_size, workers, cache, seed
        self.augment = augment if augment is not None else Augment()
        self.progress = progress
        self.train_set: DetectionDataset | None = None
        self.val_set: DetectionDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = DetectionDataset(self.train_items, self.spec, self.augment, self.cache, self.seed,
                                              self.progress)
            self.val_set = DetectionDataset(self.val_items, self.spec, None, self.cache, self.seed, self.progress)

    def _loader(self, ds: DetectionDataset, sampler=None) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.workers,
                          collate_fn=collate, persistent_workers=self.workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = EpochSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)
