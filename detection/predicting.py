"""Inference on Lightning: ``Trainer.predict`` over image shards, each finished shard written as Parquet.

One code path for one CPU, N CPU processes (DDP over gloo), one GPU, many GPUs and many nodes (torchrun or
SLURM launch the processes exactly as for ``train``). The pieces:

* :class:`ShardedImages` (a LightningDataModule): after the processes have joined, rank 0 prepares the shard
  folder (:class:`~clumptool.detection.shards.ShardStore`: finished shards of the same plan are kept, others
  removed) and broadcasts the pending shard numbers; each rank takes every ``world_size``-th pending shard.
  A loader item is one whole batch inside one shard, so batches (and thus padding and results) do not depend
  on the number of processes, and Lightning keeps no per-image index list (memory stays flat).
* :class:`DetectorPredictor` (a LightningModule): ``predict_step`` hands each batch to a *head*, a frozen
  dataclass that says what one call computes: :class:`PostProcessed` (predict's and evaluate's detections:
  score threshold, NMS, central cut, boxes in original image pixels), or a caller's own (select-next-batch's
  uncertainty over TTA or MC dropout passes). Thresholds, passes and MC dropout are the head's per-call
  settings (:func:`clumptool.detection.model.detect`); the shared model is never switched into a mode.
* A ``BasePredictionWriter``: :class:`ShardWriter` turns detections into catalogue rows and writes a shard as
  soon as its last batch is done (predict: flat memory, resumable); :class:`Collector` keeps each image's
  result in memory and, after the run, gathers them onto every rank (evaluate, select-next-batch).

:func:`run_detection` ties them to a Trainer: the one path by which predict, evaluate and select-next-batch
run the detector; :func:`detect_images` is its in-memory form.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import lightning as L
import pandas as pd
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch.utils.data import DataLoader, Dataset

from clumptool.common.errors import ClumptoolError
from clumptool.common.quiet import quiet_if
from clumptool.detection.catalogue import CATALOGUE_SCHEMA, catalogue_rows, to_arrow
from clumptool.detection.image_list import ImageList
from clumptool.detection.images import Geometry, load_image, to_model_input
from clumptool.detection.inference import Detections, to_detections
from clumptool.detection.model import cpu_setup, detect
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


def parse_devices(value: str | int | None = "auto", option: str = "--devices") -> Devices:
    """``auto`` (every GPU, else one CPU process), ``cpu``, ``cuda``/``gpu`` (every GPU), ``N`` (N GPUs, or N
    CPU processes without a GPU), GPU indices ``0,1`` / ``cuda:0,cuda:1``, or ``cpu,cpu`` (2 CPU processes)."""

    has_gpu = torch.cuda.is_available()
    text = "auto" if value is None else str(value).strip().lower()
    if text == "auto":
        return Devices("gpu", "auto", "every GPU") if has_gpu else Devices("cpu", 1, "cpu")
    if text == "cpu":
        return Devices("cpu", 1, "cpu")
    if text in ("cuda", "gpu"):
        if not has_gpu:
            raise ClumptoolError(f"{option} {value}: no CUDA device is available here; use cpu, a number of CPU "
                                 "processes (e.g. 2) or auto")
        return Devices("gpu", -1, "every GPU")
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise ClumptoolError(f"{option} {value}: give at least 1 (or auto)")
        return Devices("gpu", n, f"{n} GPU(s)") if has_gpu else Devices("cpu", n, f"{n} CPU process(es)")
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items and all(t == "cpu" for t in items):
        return Devices("cpu", len(items), f"{len(items)} CPU process(es)")
    gpus = []
    for t in items:
        if t.isdigit():
            t = f"cuda:{t}"
        if not t.startswith("cuda"):
            raise ClumptoolError(f"{option} {value}: not understood; use auto, cpu, cuda, a count such as 2, "
                                 "or GPU indices such as 0,1")
        check_device(t, option)
        gpus.append(int(t.split(":")[1]) if ":" in t else 0)
    if not gpus:
        raise ClumptoolError(f"{option}: no device given; use auto, cpu, cuda, a count such as 2 or 0,1")
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

    def __init__(self, images: ImageList, plan: ShardPlan, shards: list[int], batch_size: int, spec: ModelSpec,
                 hint: str = ""):
        self.images, self.spec, self.hint = images, spec, hint
        self.batches = [(k, s, min(s + batch_size, plan.bounds(k)[1]))
                        for k in shards for s in range(plan.bounds(k)[0], plan.bounds(k)[1], batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        k, start, stop = self.batches[i]
        tensors, geoms = [], []
        for j in range(start, stop):
            try:
                img = load_image(self.images.paths[j], self.spec.in_channels, self.spec.fits_bands)
                t, g = to_model_input(img, self.spec)
            except ClumptoolError as exc:
                if not self.hint:
                    raise
                raise ClumptoolError(f"{exc}; {self.hint}") from None
            tensors.append(t)
            geoms.append(g)
        return {"shard": k, "start": start, "tensors": tensors, "geoms": geoms}


def _whole(item):
    """The loader's collate: an item already is a batch."""
    return item


class AllShards:
    """A shard "store" in memory: every shard of the plan is pending (runs that are not resumed from disk)."""

    def __init__(self, plan: ShardPlan):
        self.plan = plan

    def prepare(self) -> list[int]:
        return list(range(self.plan.n_shards))


def batch_plan(n_images: int, batch_size: int) -> ShardPlan:
    """One shard per batch: the ranks take batches in turn; the batches are those of a single process."""
    return ShardPlan(fingerprint="in-memory", n_images=n_images, shard_size=max(1, int(batch_size)))


class ShardedImages(L.LightningDataModule):
    """The pending shards of a plan, split over the ranks after rank 0 prepared the shard folder.

    ``store``: a :class:`~clumptool.detection.shards.ShardStore` (finished shards on disk are skipped) or
    :class:`AllShards`. ``hint`` is added to an unreadable image's error (what the user can do about it).
    """

    def __init__(self, images: ImageList, store: ShardStore | AllShards, spec: ModelSpec, batch_size: int = 8,
                 num_workers: int = 0, hint: str = ""):
        super().__init__()
        self.images, self.store, self.spec, self.hint = images, store, spec, hint
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pending: list[int] = []
        self.mine: list[int] = []

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        pending = self.store.prepare() if trainer.is_global_zero else None
        self.pending = list(trainer.strategy.broadcast(pending, src=0))
        self.mine = self.pending[trainer.global_rank::trainer.world_size]

    def predict_dataloader(self) -> DataLoader:
        ds = ShardBatches(self.images, self.store.plan, self.mine, self.batch_size, self.spec, self.hint)
        return DataLoader(ds, batch_size=None, shuffle=False, num_workers=self.num_workers, collate_fn=_whole,
                          persistent_workers=False)


# ------------------------------------------------------------------------------------------------ model


class BatchHead(Protocol):
    """What ``predict_step`` computes for one batch: one result per image (picklable, frozen settings).

    ``first`` is the index of the batch's first image in the run (e.g. to seed random draws per batch, the
    same whatever the number of processes)."""

    def __call__(self, model: torch.nn.Module, images: list[torch.Tensor], geoms: list[Geometry], first: int
                 ) -> list[Any]:
        ...


def to_numpy_outputs(outs: list[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """torchvision's outputs on the CPU as numpy (float32 for the float tensors, also under mixed precision)."""
    return [{k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().numpy() for k, v in o.items()}
            for o in outs]


@dataclass(frozen=True)
class PostProcessed:
    """predict's and evaluate's head: one pass at ``score_threshold``, then :func:`postprocess` (NMS, central
    cut); boxes in original pixels. ``subject_id`` of each result is its position in the batch."""

    score_threshold: float
    nms_iou: float | None = None
    drop_central: float = 0.0

    def __call__(self, model: torch.nn.Module, images: list[torch.Tensor], geoms: list[Geometry], first: int = 0
                 ) -> list[Detections]:
        outs = detect(model, images, score_thresh=self.score_threshold)
        dets = []
        for j, (out, geom) in enumerate(zip(outs, geoms, strict=True)):
            raw = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in out.items()}
            dets.append(postprocess(to_detections(raw, geom, str(j)), min_score=self.score_threshold,
                                    nms_iou=self.nms_iou, drop_central=self.drop_central))
        return dets


class DetectorPredictor(L.LightningModule):
    """A trained detector for ``Trainer.predict``: each batch's images go through ``head`` (see :class:`BatchHead`).

    ``predict_step`` returns (shard, first image index, one result per image).
    """

    def __init__(self, model: torch.nn.Module, head: BatchHead):
        super().__init__()
        self.model, self.head = model, head
        self.allow_zero_length_dataloader_with_multiple_devices = True  # a rank may have no shard left

    def on_predict_start(self) -> None:
        if self.device.type == "cpu":
            cpu_setup()
            per_node = max(1, int(self.trainer.num_devices))
            if per_node > 1 and "OMP_NUM_THREADS" not in os.environ:  # N processes share the cores
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
        self.model.eval()

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        images = [t.to(self.device) for t in batch["tensors"]]
        return batch["shard"], batch["start"], self.head(self.model, images, batch["geoms"], batch["start"])


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

    def finish(self, trainer: L.Trainer) -> None:
        """Every shard complete; all ranks wait until all have written theirs."""
        if self.open:
            raise RuntimeError(f"shards {sorted(self.open)} were not completed")
        if trainer.world_size > 1:
            trainer.strategy.barrier("all shards written")


class Collector(BasePredictionWriter):
    """Each image's result in memory; after the run every rank holds all of them, in image order."""

    def __init__(self):
        super().__init__(write_interval="batch")
        self.parts: dict[int, list] = {}

    def on_predict_start(self, trainer, pl_module) -> None:
        self.parts = {}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        _, start, results = prediction
        self.parts[int(start)] = list(results)
        if trainer.received_sigterm:  # as ShardWriter: SIGTERM stops like Ctrl-C
            raise KeyboardInterrupt("SIGTERM")

    def finish(self, trainer: L.Trainer) -> None:
        """Gather the other ranks' results (a collective call: every rank, after its last batch)."""
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            everyone: list[dict[int, list] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, self.parts)
            self.parts = {k: v for part in everyone for k, v in (part or {}).items()}

    def results(self, n_images: int) -> list:
        """The results of images 0 .. n_images-1, in order (every one must be there)."""
        out = [r for start in sorted(self.parts) for r in self.parts[start]]
        if len(out) != n_images:
            raise RuntimeError(f"{len(out)} results for {n_images} images")
        return out


# ------------------------------------------------------------------------------------------------ run


@dataclass(frozen=True)
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


def run_detection(trainer: L.Trainer, module: DetectorPredictor, data: ShardedImages,
                  writer: ShardWriter | Collector) -> DetectionRun:
    """``trainer.predict`` with flat memory; every rank returns after all ranks are done (``writer.finish``).

    Lightning turns Ctrl-C into a graceful stop and ``sys.exit(1)``; it is turned back into KeyboardInterrupt
    so callers report an interrupt (and keep the finished shards), not a failure.
    """
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
    written = list(getattr(writer, "written", []))
    writer.finish(trainer)
    return DetectionRun(global_rank=trainer.global_rank, world_size=trainer.world_size,
                        is_global_zero=trainer.is_global_zero, pending=list(data.pending), written=written)


# ------------------------------------------------------------------------------------------------ in memory


def collecting_trainer(devices: str | int | Sequence[str] | None = "auto", *, num_nodes: int = 1,
                       strategy: str = "auto", precision: str = "32", progress: bool = False,
                       quiet: bool = True, option: str = "--devices") -> L.Trainer:
    """A Trainer for :func:`detect_images` (with its :class:`Collector`), every option checked now.

    ``devices``: as ``--devices`` (:func:`parse_devices`; ``2`` without a GPU = 2 CPU processes; a single
    torch device name such as ``cuda:1`` is checked as torch names it); ``option`` names it in errors. Strategies
    that start their processes from this one (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) cannot hand
    in-memory results back to the caller: refused here, before any work.
    """
    if not isinstance(devices, (str, int)) and devices is not None:
        devices = ",".join(map(str, devices))
    if num_nodes < 1:
        raise ClumptoolError(f"--num-nodes must be >= 1, got {num_nodes}")
    text = "auto" if devices is None else str(devices).strip().lower()
    if "," not in text and not text.isdigit() and text not in ("auto", "cpu", "cuda", "gpu"):

        check_device(str(devices).strip(), option)
    devs = parse_devices(devices, option)
    check_precision(precision, devs)
    with quiet_if(quiet):
        trainer = make_trainer(devs, num_nodes=num_nodes, strategy=strategy, precision=precision,
                               progress=progress, callbacks=[Collector()])
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        raise ClumptoolError(f"--strategy {strategy}: its processes are started from this one and cannot hand "
                             "the results back; use --strategy ddp (or auto)")
    return trainer


def detect_images(trainer: L.Trainer, model: torch.nn.Module, head: BatchHead, images: ImageList,
                  spec: ModelSpec, *, batch_size: int = 8, num_workers: int = 0, hint: str = "",
                  quiet: bool = True) -> list:
    """``head``'s result for every image of ``images``, in order, on every rank (:func:`run_detection` with a
    :class:`Collector`; ``trainer`` from :func:`collecting_trainer`)."""
    collector = next((cb for cb in trainer.callbacks if isinstance(cb, Collector)), None)
    if collector is None:
        raise ValueError("the trainer has no Collector: make it with collecting_trainer()")
    data = ShardedImages(images, AllShards(batch_plan(len(images), batch_size)), spec, batch_size=batch_size,
                         num_workers=num_workers, hint=hint)
    if not len(images):
        return []
    with quiet_if(quiet):
        run_detection(trainer, DetectorPredictor(model, head), data, collector)
    return collector.results(len(images))


def check_device(device: str, option: str = "--device") -> str:
    """A torch device name that exists here (e.g. cpu, cuda, cuda:1, mps), checked before any work."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ClumptoolError(f"{option} {device!r}: not a torch device ({exc}); use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ClumptoolError(f"{option} {device}: this CUDA device is not available here; use cpu, or leave "
                             f"{option} out to use a GPU when there is one")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ClumptoolError(f"{option} {device}: unsupported device type {dev.type!r}; use cpu or cuda")
    return device
