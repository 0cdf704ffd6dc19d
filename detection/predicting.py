"""Inference on Lightning: ``Trainer.predict`` over image shards, each finished shard written as Parquet.

One code path for one CPU, N CPU processes (DDP over gloo), one GPU, many GPUs and many nodes (torchrun or
SLURM launch the processes exactly as for ``train``). The pieces:

* :class:`ShardedImages` (a LightningDataModule): after the processes have joined, rank 0 prepares the shard
  folder (:class:`~clumptool.detection.shards.ShardStore`: finished shards of the same plan are kept, others
  removed) and broadcasts the pending shard numbers; each rank takes every ``world_size``-th pending shard.
  A loader item is one whole batch inside one shard, so batches (and thus padding and results) do not depend
  on the number of processes, and Lightning keeps no per-image index list (memory stays flat).
* :class:`DetectorPredictor` (a LightningModule): ``predict_step`` runs the detector and post-processes
  (score threshold, NMS, central cut), boxes in original image pixels.
* :class:`ShardWriter` (a ``BasePredictionWriter``): turns detections into catalogue rows and writes a shard
  as soon as its last batch is done; with ``return_predictions=False`` nothing accumulates.

:func:`run_detection` ties them to a Trainer; the caller merges the shards (rank 0, after all ranks are done).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from clumptool.common.errors import ClumptoolError
from clumptool.detection.catalogue import CATALOGUE_SCHEMA, catalogue_rows, to_arrow
from clumptool.detection.image_list import ImageList
from clumptool.detection.images import load_image, to_model_input
from clumptool.detection.inference import to_detections
from clumptool.detection.options import PRECISIONS  # noqa: F401 (re-exported)
from clumptool.detection.postprocess import postprocess
from clumptool.detection.shards import ShardPlan, ShardStore
from clumptool.detection.spec import ModelSpec

# ------------------------------------------------------------------------------------------------ devices


@dataclass(frozen=True)
class Devices:
    """What ``--devices`` asks Lightning for: accelerator, devices (count or GPU indices), a label."""

    accelerator: str
    devices: int | list[int] | str
    label: str


def parse_devices(value: str | int | None = "auto") -> Devices:
    """``auto`` (every GPU, else one CPU process), ``cpu``, ``cuda``/``gpu`` (every GPU), ``N`` (N GPUs, or N
    CPU processes without a GPU), GPU indices ``0,1`` / ``cuda:0,cuda:1``, or ``cpu,cpu`` (2 CPU processes)."""
    from clumptool.detection.evaluate import check_device

    has_gpu = torch.cuda.is_available()
    text = "auto" if value is None else str(value).strip().lower()
    if text == "auto":
        return Devices("gpu", "auto", "every GPU") if has_gpu else Devices("cpu", 1, "cpu")
    if text == "cpu":
        return Devices("cpu", 1, "cpu")
    if text in ("cuda", "gpu"):
        if not has_gpu:
            raise ClumptoolError(f"--devices {value}: no CUDA device is available here; use cpu, a number of CPU "
                                 "processes (e.g. 2) or auto")
        return Devices("gpu", -1, "every GPU")
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise ClumptoolError(f"--devices {value}: give at least 1 (or auto)")
        return Devices("gpu", n, f"{n} GPU(s)") if has_gpu else Devices("cpu", n, f"{n} CPU process(es)")
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items and all(t == "cpu" for t in items):
        return Devices("cpu", len(items), f"{len(items)} CPU process(es)")
    gpus = []
    for t in items:
        if t.isdigit():
            t = f"cuda:{t}"
        if not t.startswith("cuda"):
            raise ClumptoolError(f"--devices {value}: not understood; use auto, cpu, cuda, a count such as 2, "
                                 "or GPU indices such as 0,1")
        check_device(t, "--devices")
        gpus.append(int(t.split(":")[1]) if ":" in t else 0)
    if not gpus:
        raise ClumptoolError("--devices: no device given; use auto, cpu, cuda, a count such as 2 or 0,1")
    return Devices("gpu", gpus, ", ".join(f"cuda:{g}" for g in gpus))


def check_precision(precision: str, devices: Devices) -> str:
    """Lightning's precision name; mixed precision needs a GPU."""
    precision = str(precision)  # one of PRECISIONS: checked by the options (detection/options.py)
    if precision != "32" and devices.accelerator == "cpu":
        raise ClumptoolError(f"--precision {precision} needs a GPU; on CPU use --precision 32")
    return "32-true" if precision == "32" else precision


# ------------------------------------------------------------------------------------------------ data


class ShardBatches(Dataset):
    """Item ``i`` = the ``i``-th batch of this rank's shards: (shard, first index, tensors, geometries)."""

    def __init__(self, images: ImageList, plan: ShardPlan, shards: list[int], batch_size: int, spec: ModelSpec):
        self.images, self.spec = images, spec
        self.batches = [(k, s, min(s + batch_size, plan.bounds(k)[1]))
                        for k in shards for s in range(plan.bounds(k)[0], plan.bounds(k)[1], batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        k, start, stop = self.batches[i]
        tensors, geoms = [], []
        for j in range(start, stop):
            img = load_image(self.images.paths[j], self.spec.in_channels, self.spec.fits_bands)
            t, g = to_model_input(img, self.spec)
            tensors.append(t)
            geoms.append(g)
        return {"shard": k, "start": start, "tensors": tensors, "geoms": geoms}


def _whole(item):
    """The loader's collate: an item already is a batch."""
    return item


class ShardedImages(L.LightningDataModule):
    """The pending shards of a plan, split over the ranks after rank 0 prepared the shard folder."""

    def __init__(self, images: ImageList, store: ShardStore, spec: ModelSpec, batch_size: int = 8,
                 num_workers: int = 0):
        super().__init__()
        self.images, self.store, self.spec = images, store, spec
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pending: list[int] = []
        self.mine: list[int] = []

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        pending = self.store.prepare() if trainer.is_global_zero else None
        self.pending = list(trainer.strategy.broadcast(pending, src=0))
        self.mine = self.pending[trainer.global_rank::trainer.world_size]

    def predict_dataloader(self) -> DataLoader:
        ds = ShardBatches(self.images, self.store.plan, self.mine, self.batch_size, self.spec)
        return DataLoader(ds, batch_size=None, shuffle=False, num_workers=self.num_workers, collate_fn=_whole,
                          persistent_workers=False)


# ------------------------------------------------------------------------------------------------ model


class DetectorPredictor(L.LightningModule):
    """A trained detector for ``Trainer.predict``: detections per image, post-processed, original pixels."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, score_threshold: float, nms_iou: float | None,
                 drop_central: float = 0.0):
        super().__init__()
        self.model, self.spec = model, spec
        self.score_threshold, self.nms_iou, self.drop_central = score_threshold, nms_iou, drop_central
        self.model.roi_heads.score_thresh = float(score_threshold)  # this module's own copy of the network
        self.allow_zero_length_dataloader_with_multiple_devices = True  # a rank may have no shard left

    def on_predict_start(self) -> None:
        from clumptool.detection.model import cpu_setup

        if self.device.type == "cpu":
            cpu_setup()
            per_node = max(1, int(self.trainer.num_devices))
            if per_node > 1 and "OMP_NUM_THREADS" not in os.environ:  # N processes share the cores
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
        self.model.eval()

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        images = [t.to(self.device) for t in batch["tensors"]]
        outs = self.model(images)
        dets = []
        for j, (out, geom) in enumerate(zip(outs, batch["geoms"], strict=True)):
            raw = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in out.items()}
            det = to_detections(raw, geom, str(batch["start"] + j))
            dets.append(postprocess(det, min_score=self.score_threshold, nms_iou=self.nms_iou,
                                    drop_central=self.drop_central))
        return batch["shard"], batch["start"], dets


# ------------------------------------------------------------------------------------------------ writer


class ShardWriter(BasePredictionWriter):
    """Catalogue rows per shard; a shard is written (atomically) when its last batch arrives."""

    def __init__(self, store: ShardStore, images: ImageList, classes: list[str], model_version: str,
                 rows: Callable[..., pd.DataFrame] = catalogue_rows):
        super().__init__(write_interval="batch")
        self.store, self.images, self.classes, self.model_version = store, images, classes, model_version
        self.rows = rows
        self.open: dict[int, tuple[list[pd.DataFrame], int]] = {}
        self.written: list[int] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        self._add(*prediction)
        if trainer.received_sigterm:  # Lightning's predict loop ignores SIGTERM (scancel, a time limit): stop
            raise KeyboardInterrupt("SIGTERM")  # like Ctrl-C: finished shards are kept for the rerun

    def _add(self, k: int, start: int, dets: list) -> None:
        frames, done = self.open.get(k, ([], 0))
        for j, det in enumerate(dets):
            i = start + j
            rows = self.rows(self.images.ids[i], det.boxes, det.scores, det.labels, det.width, det.height,
                             self.classes, self.images.sky_of(i), first_id=0, model_version=self.model_version)
            if len(rows):
                frames.append(rows)
        done += len(dets)
        first, stop = self.store.plan.bounds(k)
        if done < stop - first:
            self.open[k] = (frames, done)
            return
        self.open.pop(k, None)
        df = pd.concat(frames, ignore_index=True) if frames else None
        table = to_arrow(df) if df is not None else CATALOGUE_SCHEMA.empty_table()
        self.store.write(k, table)
        self.written.append(k)


# ------------------------------------------------------------------------------------------------ run


@dataclass
class DetectionRun:
    """What one process did: its rank, the world size, the shards it wrote, and all pending shards."""

    global_rank: int
    world_size: int
    is_global_zero: bool
    pending: list[int]
    written: list[int]


def make_trainer(devices: Devices, *, num_nodes: int = 1, strategy: str = "auto", precision: str = "32",
                 progress: bool = False, callbacks: list | None = None) -> L.Trainer:
    """A Trainer for inference only: no logger, no checkpoints, our own sampling (whole shards per rank)."""
    return L.Trainer(accelerator=devices.accelerator, devices=devices.devices, num_nodes=num_nodes,
                     strategy=strategy, precision=check_precision(precision, devices), logger=False,
                     enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                     use_distributed_sampler=False, callbacks=callbacks or [], inference_mode=True)


def run_detection(trainer: L.Trainer, module: DetectorPredictor, data: ShardedImages, writer: ShardWriter
                  ) -> DetectionRun:
    """``trainer.predict`` with flat memory; every rank returns after all ranks have written their shards.

    Lightning turns Ctrl-C into a graceful stop and ``sys.exit(1)``; it is turned back into KeyboardInterrupt
    so callers report an interrupt (and keep the finished shards), not a failure.
    """
    import signal

    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.predict(module, datamodule=data, return_predictions=False)
    except SystemExit as exc:
        if trainer.interrupted:
            raise KeyboardInterrupt from exc
        raise
    finally:
        if signal.getsignal(signal.SIGINT) is not handler and handler is not None:
            signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT while it shuts down
    if writer.open:
        raise RuntimeError(f"shards {sorted(writer.open)} were not completed")
    if trainer.world_size > 1:
        trainer.strategy.barrier("all shards written")
    return DetectionRun(global_rank=trainer.global_rank, world_size=trainer.world_size,
                        is_global_zero=trainer.is_global_zero, pending=data.pending, written=writer.written)
