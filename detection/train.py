"""``clumptool train`` as a plain function: labelled galaxies -> a trained detector folder.

Lightning runs the loop on CPU, one GPU, or several GPUs/nodes with DDP (launched by torchrun or SLURM as
Lightning documents; ``devices=2, strategy="ddp"`` also works on CPU with gloo: Lightning re-runs the
command in one subprocess per extra device). Writes into ``out``, as one output set
(:mod:`clumptool.common.outputs`: built in the hidden sibling ``.OUT.partial``, ``manifest.json`` written
last, then swapped in; a failed, killed or interrupted run leaves a previous model folder byte-identical):

* ``model.safetensors`` + ``model.json``: the best model by validation F1 (see :mod:`clumptool.detection.lit`),
  all that evaluate / predict / select-next-batch need. model.json records the operating score threshold
  (best F1 on the validation galaxies) and the digests that tie it to the weights (see
  :mod:`clumptool.detection.io`);
* ``checkpoints/last.ckpt`` (written after every epoch) and ``checkpoints/best-*.ckpt``;
* ``logs/metrics.csv`` (CSVLogger), ``training.png`` (losses and validation F1 per epoch),
  ``split.csv`` (which galaxy trained / validated) and ``training.json`` (a summary, with the per-epoch history).

What goes wrong, and what happens:

* every option, ``--out`` and the data (empty boxes table, bad rows, missing images) are checked before any
  training; failures are ClumptoolError (exit 2) naming the option or file/row/field;
* Ctrl-C stops at the next step (exit 130) and prints the command that resumes: the staging folder (with
  ``checkpoints/last.ckpt`` of the last finished epoch) is kept, and ``--resume .OUT.partial/checkpoints/last.ckpt``
  continues exactly: the resumed run's per-epoch losses equal the uninterrupted run's (see
  :mod:`clumptool.detection.lit` for how). A new run without ``--resume`` starts the staging folder afresh;
* a model that detects nothing on its validation galaxies at any score is not published (exit 2, with what
  to change and the checkpoint to continue from) unless ``accept_empty``; without validation truth F1 is
  undefined (reported as such, never 1.0) and the threshold is the default 0.5, with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from clumptool.common.atomic import write_text_atomic
from clumptool.common.errors import ClumptoolError
from clumptool.common.matching import scores_from_counts
from clumptool.common.options import options_from
from clumptool.common.outputs import OutputSet, check_output_location, output_set, staging_path
from clumptool.common.quiet import quiet_libraries
from clumptool.common.tables import write_table
from clumptool.detection.backbones import resolve_backbone
from clumptool.detection.data import (
    collate,
    count_trained_boxes,
    labelled_galaxies,
    split_items,
)
from clumptool.detection.io import write_model
from clumptool.detection.lit import (
    ClumpDataModule,
    DetectorModule,
    EpochHistory,
    StepSeed,
    match_counts,
)
from clumptool.detection.model import cpu_setup
from clumptool.detection.options import PRECISIONS, TrainOptions  # noqa: F401 (PRECISIONS: re-exported)
from clumptool.detection.plots import plot_history
from clumptool.detection.spec import ModelSpec, make_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced (on DDP ranks other than 0 only the counters are filled)."""

    out_dir: Path
    spec: ModelSpec
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    best_val_f1: float | None
    epochs: int
    global_step: int
    n_train: int
    n_val: int
    world_size: int
    is_global_zero: bool
    seconds: float
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    score_threshold: float | None = None
    val_f1_at_threshold: float = float("nan")
    n_val_boxes: int = 0
    boxes_in_table: int = 0
    boxes_trained_on: int = 0
    n_unclassified_skipped: int = 0
    n_in_progress_skipped: int = 0
    n_repeated_skipped: int = 0


class TrainingInterrupted(ClumptoolError):
    """Ctrl-C during training: the previous model folder is untouched; ``checkpoint`` resumes the run."""

    def __init__(self, message: str, checkpoint: Path | None):
        super().__init__(message)
        self.checkpoint = checkpoint


def _read_checkpoint_hparams(path: Path) -> dict:
    fix = "pass --resume OUT/checkpoints/last.ckpt (or .OUT.partial/checkpoints/last.ckpt) written by 'clumptool train'"
    if not path.is_file():
        raise ClumptoolError(f"--resume {path}: checkpoint not found; {fix}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ClumptoolError(f"--resume {path}: not a readable checkpoint ({type(exc).__name__}); {fix}") from exc
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or "spec" not in hp or "loops" not in ckpt:
        raise ClumptoolError(f"--resume {path}: not a checkpoint written by 'clumptool train'; {fix}")
    return hp


RESUME_SPEC_OPTIONS = ("backbone", "image_size", "crop", "in_channels", "anchor_sizes", "box_dropout",
                       "trainable_stages", "fits_bands")
RESUME_RUN_OPTIONS = ("seed", "batch_size", "val_fraction", "lr", "weight_decay")


def check_resume(resume: str | os.PathLike, given: dict) -> dict:
    """The checkpoint's hyper-parameters, after checking that options given explicitly agree with it.

    A resumed run takes its model and data settings from the checkpoint; an explicit option that differs
    (another --image-size, --backbone, --seed ...) would silently not apply, so it is an error.
    """
    path = Path(resume)
    hp = _read_checkpoint_hparams(path)
    spec, run = hp["spec"], {**{"lr": hp.get("lr"), "weight_decay": hp.get("weight_decay")}, **(hp.get("run") or {})}
    for name, value in given.items():
        if name in RESUME_SPEC_OPTIONS:
            recorded = spec.get(name)
        elif name in RESUME_RUN_OPTIONS and run.get(name) is not None:
            recorded = run[name]
        else:
            continue
        value = list(value) if isinstance(value, (list, tuple)) else value
        if value != recorded:
            opt = "--" + name.replace("_", "-")
            raise ClumptoolError(
                f"{opt} {value}: the checkpoint {path} was trained with {name} = {recorded}; a resumed run "
                f"keeps the checkpoint's settings: leave out {opt}, or start a new run without --resume")
    return hp


def check_weights(weights: str | os.PathLike | None) -> None:
    """--weights names a special source or an existing file (checked before any work)."""
    if weights is not None:
        w = str(weights)
        special = w.lower() in ("", "none", "random", "zoobot", "imagenet") or w.startswith("hf_hub:")
        if not special and not Path(w).is_file():
            raise ClumptoolError(f"--weights {w}: file not found; give a local .safetensors/.pth/.ckpt file, "
                                 "'zoobot', a hf_hub: name, or leave --weights out for random initialisation")


def _accelerator(precision: str) -> str:
    acc = "gpu" if torch.cuda.is_available() else "cpu"  # precision is one of PRECISIONS (TrainOptions)
    if acc == "cpu" and precision != "32":
        raise ClumptoolError(f"--precision {precision}: needs a GPU; on CPU use --precision 32")
    return acc


def _devices(devices: str | int | Sequence[int], accelerator: str = "cpu"):
    """The --devices value for Lightning, checked against what this machine has."""
    if isinstance(devices, str):
        d = devices.strip()
        if d == "auto":
            return "auto"
        try:
            devices = [int(v) for v in d.split(",") if v] if "," in d else int(d)
        except ValueError as exc:
            raise ClumptoolError(f"--devices {d}: must be 'auto', a count or a comma list like 0,1") from exc
    gpu = accelerator == "gpu"
    have = torch.cuda.device_count() if gpu else (os.cpu_count() or 1)
    what = "GPU(s)" if gpu else "CPU core(s)"
    if isinstance(devices, int):
        if devices == -1:
            return devices
        if devices < 1 or devices > have:
            raise ClumptoolError(f"--devices {devices}: this machine has {have} {what}; use a count from 1 to "
                                 f"{have} (or auto)")
        return devices
    devices = list(devices)
    if not gpu:
        raise ClumptoolError(f"--devices {','.join(map(str, devices))}: a list of device indices needs GPUs and "
                             "there are none; give a count of CPU processes (e.g. 1) or auto")
    if any(i < 0 or i >= have for i in devices):
        raise ClumptoolError(f"--devices {','.join(map(str, devices))}: this machine has GPUs 0..{have - 1}")
    return devices


def _metrics_parts(log_dir: Path) -> list[Path]:
    """Metrics files of this run in order: parts archived at each resume, then the current file."""
    parts = sorted(log_dir.glob("metrics.part*.csv"))
    return parts + ([log_dir / "metrics.csv"] if (log_dir / "metrics.csv").exists() else [])


@rank_zero_only
def _prepare_logs(log_dir: Path, resuming: bool) -> None:
    """CSVLogger deletes an existing metrics.csv: keep it as a numbered part when resuming, else start clean."""
    if not log_dir.exists():
        return
    if resuming:
        current = log_dir / "metrics.csv"
        if current.exists():
            current.rename(log_dir / f"metrics.part{len(list(log_dir.glob('metrics.part*.csv'))):03d}.csv")
    else:
        for p in _metrics_parts(log_dir):
            p.unlink()


def history_table(log_dir: Path) -> pd.DataFrame:
    """One row per epoch: mean training losses and validation completeness/purity/F1 (across resumes)."""
    frames = []
    for p in _metrics_parts(log_dir):
        try:
            frames.append(pd.read_csv(p))
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
    if not frames:
        return pd.DataFrame()
    m = pd.concat(frames, ignore_index=True)
    if "epoch" not in m:
        return pd.DataFrame()
    cols = [c for c in m.columns if (c.startswith("train_") and not c.endswith("_step")) or c.startswith("val_")]
    # an epoch interrupted and re-run after a resume: the later rows win
    m = m.dropna(subset=["epoch"])
    return m.groupby("epoch")[cols].last().reset_index() if cols else pd.DataFrame()


quiet_lightning = quiet_libraries  # the demo's and benches' name for it


def validation_predictions(model: torch.nn.Module, val_set, batch_size: int) -> list[tuple]:
    """(pred boxes, pred scores, true boxes) per validation galaxy, working pixels."""
    device = next(model.parameters()).device
    model.eval()
    found = []
    with torch.no_grad():
        for images, targets, _ in DataLoader(val_set, batch_size=batch_size, collate_fn=collate):
            for out, tgt in zip(model([im.to(device) for im in images]), targets, strict=True):
                found.append((out["boxes"].float().cpu().numpy(), out["scores"].float().cpu().numpy(),
                              tgt["boxes"].numpy()))
    return found


THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


def choose_threshold(predictions: list[tuple], floor: float = 0.0) -> tuple[float | None, float]:
    """The operating score threshold: best F1 on the validation galaxies (ties: nearest 0.5).

    Returns (threshold, its F1); (None, NaN) without validation truth, where F1 is undefined. An F1 of 0
    means no detection at any threshold matched a true clump.
    """
    if sum(len(t) for _, _, t in predictions) == 0:
        return None, float("nan")
    best: tuple[float, float] | None = None
    for t in (t for t in THRESHOLD_GRID if t >= floor):
        counts = np.sum([match_counts(b, s, tb, score=t) for b, s, tb in predictions], axis=0)
        f1 = scores_from_counts(*counts)[2]
        if best is None or f1 > best[1] or (f1 == best[1] and abs(t - 0.5) < abs(best[0] - 0.5)):
            best = (t, f1)
    assert best is not None
    return best


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


@contextlib.contextmanager
def _other_rank_stage(out: Path) -> Iterator[OutputSet]:
    """DDP ranks other than 0 share rank 0's staging folder; only rank 0 publishes."""
    yield OutputSet(out_dir=out, path=staging_path(out), command="train")


def _nothing_found(out: Path, stage: Path, f1: float, epochs: int, image_size: int, init: str | None) -> str:
    ckpt = stage / "checkpoints" / "last.ckpt"
    return (
        f"training ended without finding anything: on the validation galaxies no detection at any score "
        f"matched a true clump (best F1 {f1:.3f}), so {out} was not written (a previous model there is "
        f"untouched). Train longer (--epochs more than {epochs}, or continue with --resume {ckpt} "
        f"--epochs N), use a smaller --image-size than {image_size}, "
        + ("or start from pretrained --weights (e.g. zoobot). " if init is None else ". ")
        + "To publish this model anyway, pass --accept-empty-model"
    )


def train(boxes: str | os.PathLike | None, images: str | os.PathLike, out: str | os.PathLike,
          options: TrainOptions | None = None, *, subjects: str | os.PathLike | None = None,
          backbone: str = ModelSpec.backbone, weights: str | os.PathLike | None = None,
          image_size: int = ModelSpec.image_size, crop: int | None = ModelSpec.crop,
          in_channels: int = ModelSpec.in_channels, fits_bands: list[int] | None = None,
          anchor_sizes: list[int] | None = None, box_dropout: float = ModelSpec.box_dropout,
          trainable_stages: int | None = None, resume: str | os.PathLike | None = None, max_steps: int = -1,
          progress: bool = True, callbacks: list | None = None, items: tuple[list, list] | None = None,
          log_every_n_steps: int = 10, gradient_clip_val: float | None = 10.0, **fields: Any) -> TrainResult:
    """Train a clump detector (see the module docstring for the outputs).

    ``items`` = (train, validation) lists of :class:`~clumptool.detection.data.Item` bypasses reading
    ``boxes``/``images``/``subjects`` (used by the benchmark). ``resume`` continues a run exactly (epoch,
    step, optimiser and scheduler state, data order and augmentations) from a checkpoint; the model and data
    settings then come from it. ``gradient_clip_val`` clips the gradient norm (random-init runs otherwise see
    loss spikes early on). A run whose model finds nothing on its validation galaxies raises ClumptoolError
    unless ``accept_empty``. How it runs: ``options`` (a :class:`~clumptool.detection.options.TrainOptions`,
    checked when made) or keyword ``fields`` of it (``epochs=2``, ``batch_size=4``, ...); the model's own
    settings (``backbone``, ``image_size``, ...) make its :class:`ModelSpec`, which checks them.
    """
    options = options_from(TrainOptions, options, fields)
    del fields
    with contextlib.nullcontext() if progress else quiet_lightning():
        return _train(**locals())


def _train(boxes, images, out, options, *, subjects, backbone, weights, image_size, crop, in_channels, fits_bands,
           anchor_sizes, box_dropout, trainable_stages, resume, max_steps, progress, callbacks, items,
           log_every_n_steps, gradient_clip_val) -> TrainResult:
    o = options
    epochs, batch_size, lr, weight_decay, val_fraction = o.epochs, o.batch_size, o.lr, o.weight_decay, o.val_fraction
    patience, max_minutes, devices, num_nodes = o.patience or None, o.max_minutes, o.devices, o.num_nodes
    strategy, precision, seed, workers, cache = o.strategy, o.precision, o.seed, o.workers, o.cache
    accept_empty = o.accept_empty
    t0 = time.perf_counter()
    cpu_setup()
    out = Path(out)
    # the launcher's global rank (torchrun, SLURM, Lightning's own processes), known before DDP starts
    rank = rank_zero_only.rank
    # --- everything a user can get wrong is checked before any work ---
    accelerator = _accelerator(str(precision))
    lightning_devices = _devices(devices, accelerator)
    if rank == 0:
        check_output_location(out)
    if resume is not None:
        resume = Path(resume)
        hp = _read_checkpoint_hparams(resume)
        run = hp.get("run") or {}
        seed, batch_size = int(run.get("seed", seed)), int(run.get("batch_size", batch_size))
        val_fraction = float(run.get("val_fraction", val_fraction))
        lr, weight_decay = hp.get("lr", lr), hp.get("weight_decay", weight_decay)
    check_weights(weights)
    run = {"seed": seed, "batch_size": batch_size, "val_fraction": val_fraction}
    if resume is not None:
        spec = ModelSpec.from_dict(hp["spec"], source=str(resume))
        module_kwargs = {"spec": spec.to_dict(), "weights": None, "lr": lr, "weight_decay": weight_decay,
                         "warmup_steps": hp.get("warmup_steps", 100), "run": run}
    else:
        resolve_backbone(backbone)
        spec_kwargs = {"image_size": image_size, "crop": crop, "fits_bands": fits_bands,
                       "box_dropout": box_dropout, "trainable_stages": trainable_stages}
        if anchor_sizes is not None:
            spec_kwargs["anchor_sizes"] = list(anchor_sizes)
        spec = make_spec(backbone, in_channels=in_channels, **spec_kwargs).with_init_weights(weights)
        module_kwargs = {"spec": spec.to_dict(), "weights": None if weights is None else str(weights), "lr": lr,
                         "weight_decay": weight_decay, "run": run}

    L.seed_everything(seed, workers=True, verbose=False)
    if items is None:
        if boxes is None:
            raise ClumptoolError("--boxes: a boxes table is needed (e.g. aggregate's boxes.parquet)")
        labelled = labelled_galaxies(boxes, images, subjects, num_classes=spec.num_classes,
                                     include_in_progress=o.include_in_progress)
        train_items, val_items = split_items(labelled.items, val_fraction, seed)
    else:
        labelled = None
        train_items, val_items = items
    if not train_items:
        raise ClumptoolError("no training galaxies (all went to validation?): label more galaxies or lower "
                             "--val-fraction")
    val_truth = sum(len(it.boxes) for it in val_items)
    n_unclassified, n_in_progress, n_repeated = ((labelled.n_unclassified, labelled.n_in_progress, labelled.n_repeated)
                                                 if labelled is not None else (0, 0, 0))
    boxes_used, boxes_total = count_trained_boxes(train_items + val_items, spec) if items is None else (0, 0)

    lit = DetectorModule(**module_kwargs)
    if workers is None:
        workers = 0 if accelerator == "cpu" else min(8, os.cpu_count() or 1)
    dm = ClumpDataModule(train_items, val_items, spec, batch_size=batch_size, workers=workers, cache=cache,
                         seed=seed, progress=progress)

    stage = staging_path(out)
    reuse = resume is not None and _inside(resume, stage)
    if rank == 0 and not reuse and (stage / "checkpoints" / "last.ckpt").exists():
        log.warning("starting afresh: discarding the checkpoints of an unfinished run in %s (to continue that "
                    "run instead, pass --resume %s)", stage, stage / "checkpoints" / "last.ckpt")
    staging = (output_set(out, "train", keep_staging_on_error=True, reuse_staging=reuse) if rank == 0
               else _other_rank_stage(out))
    with staging as staged:
        work = staged.path
        if rank == 0 and resume is not None and not reuse and (resume.parent.parent / "logs").is_dir():
            shutil.copytree(resume.parent.parent / "logs", work / "logs", dirs_exist_ok=True)
        ckpt_dir = work / "checkpoints"
        # last.ckpt after every epoch (the exact resume point); best-*.ckpt by validation F1 when there is truth
        # saved at the end of the training epoch (after its validation): a resume starts the next epoch cleanly
        last_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                                  enable_version_counter=False, save_on_train_epoch_end=True)
        epoch_history = EpochHistory()
        ctrl_c = CtrlC()
        cbs = [last_cb, StepSeed(seed), epoch_history, ctrl_c.callback(), *(callbacks or [])]
        best_cb = None
        if val_truth:
            best_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="best-{epoch:03d}-{val_f1:.3f}", monitor="val_f1",
                                      mode="max", save_top_k=1, auto_insert_metric_name=False,
                                      save_on_train_epoch_end=True)
            cbs.append(best_cb)
            if patience:
                cbs.append(EarlyStopping(monitor="val_f1", mode="max", patience=patience, check_finite=False))
        _prepare_logs(work / "logs", resuming=resume is not None)
        logger = CSVLogger(save_dir=work, name="logs", version="")
        trainer = L.Trainer(
            accelerator=accelerator, devices=lightning_devices, num_nodes=num_nodes, strategy=strategy,
            precision="32-true" if str(precision) == "32" else precision, max_epochs=epochs, max_steps=max_steps,
            max_time={"minutes": max_minutes} if max_minutes else None, callbacks=cbs, logger=logger,
            enable_progress_bar=progress, enable_model_summary=progress, log_every_n_steps=log_every_n_steps,
            num_sanity_val_steps=0, limit_val_batches=1.0 if val_items else 0, default_root_dir=work,
            gradient_clip_val=gradient_clip_val,
        )
        if trainer.is_global_zero:
            split = pd.DataFrame({"subject_id": [it.subject_id for it in train_items + val_items],
                                  "split": ["train"] * len(train_items) + ["val"] * len(val_items)})
            write_table(split, work / "split.csv")
        try:
            with warnings.catch_warnings(), ctrl_c:
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
                trainer.fit(lit, datamodule=dm, ckpt_path=None if resume is None else str(resume))
        except SystemExit as exc:  # Lightning turns Ctrl-C into sys.exit(1) after its own clean-up
            if trainer.interrupted:
                raise _interrupted(ckpt_dir / "last.ckpt") from exc
            raise
        if trainer.interrupted or ctrl_c.requested:  # (a Ctrl-C after the last step: nothing is published)
            raise _interrupted(ckpt_dir / "last.ckpt")

        best = Path(best_cb.best_model_path) if best_cb is not None and best_cb.best_model_path else None
        last = ckpt_dir / "last.ckpt"
        best_score = float(best_cb.best_model_score) if best_cb is not None and best_cb.best_model_score is not None \
            else None
        history = pd.DataFrame()
        threshold, threshold_f1 = None, float("nan")
        if trainer.is_global_zero:
            source = best if best is not None and best.exists() else last
            if source.exists():
                state = torch.load(source, map_location="cpu", weights_only=True)["state_dict"]
                lit.load_state_dict(state)
            if val_items:
                dm.setup("fit")
                preds = validation_predictions(lit.model, dm.val_set, batch_size)
                threshold, threshold_f1 = choose_threshold(preds, floor=spec.box_score_thresh)
            if threshold_f1 == 0 and not accept_empty:
                raise ClumptoolError(_nothing_found(out, stage, threshold_f1, epochs, spec.image_size,
                                                   spec.init_weights))
            spec = write_model(work, lit.model, dataclasses.replace(
                spec, score_threshold=threshold if threshold is not None else 0.5))
            history = pd.DataFrame(epoch_history.rows) if epoch_history.rows else history_table(work / "logs")
            plot_history(history, work / "training.png")
            summary = {
                "backbone": spec.backbone, "init_weights": spec.init_weights, "version": spec.version,
                "n_train": len(train_items), "n_val": len(val_items), "n_val_boxes": int(val_truth),
                "n_subjects_unclassified_skipped": n_unclassified,
                "n_subjects_in_progress_skipped": n_in_progress,
                "n_subjects_repeating_a_galaxy_skipped": n_repeated,
                "epochs": int(trainer.current_epoch), "global_step": int(trainer.global_step),
                "world_size": int(trainer.world_size),
                "best_checkpoint": f"checkpoints/{best.name}" if best else None, "best_val_f1": best_score,
                "score_threshold": spec.score_threshold,
                "score_threshold_source": "best F1 on the validation galaxies" if threshold is not None
                else "default 0.5 (no validation truth to choose it on)",
                "val_f1_at_threshold": None if threshold_f1 != threshold_f1 else threshold_f1,
                "found_nothing": bool(threshold_f1 == 0), "seed": seed, "batch_size": batch_size,
                "boxes_in_table": boxes_total, "boxes_trained_on": boxes_used,
                "seconds": round(time.perf_counter() - t0, 1),
                "history": json.loads(history.to_json(orient="records")) if not history.empty else [],
            }
            write_text_atomic(work / "training.json", json.dumps(summary, indent=2) + "\n")
            staged.info = {k: summary[k] for k in ("version", "backbone", "n_train", "n_val", "epochs",
                                                   "global_step", "score_threshold")}
    # published: paths now in the output folder
    best_out = out / "checkpoints" / best.name if best is not None else None
    last_out = out / "checkpoints" / "last.ckpt"
    return TrainResult(out_dir=out, spec=spec, best_checkpoint=best_out,
                       last_checkpoint=last_out if last_out.exists() else None,
                       best_val_f1=best_score, epochs=int(trainer.current_epoch), global_step=int(trainer.global_step),
                       n_train=len(train_items), n_val=len(val_items), world_size=int(trainer.world_size),
                       is_global_zero=bool(trainer.is_global_zero), seconds=time.perf_counter() - t0,
                       history=history, score_threshold=spec.score_threshold, val_f1_at_threshold=threshold_f1,
                       n_val_boxes=int(val_truth), boxes_in_table=boxes_total, boxes_trained_on=boxes_used,
                       n_unclassified_skipped=n_unclassified, n_in_progress_skipped=n_in_progress,
                       n_repeated_skipped=n_repeated)


class CtrlC:
    """Ctrl-C during training, acted on between steps.

    Python raises KeyboardInterrupt wherever the main thread is, and a Ctrl-C that lands while Lightning
    commits a checkpoint file is swallowed by fsspec (the run then finishes as if nothing happened). So the
    first Ctrl-C only sets a flag; :meth:`callback` raises at the next step or validation batch, where
    Lightning shuts down cleanly. A second Ctrl-C stops at once.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def callback(self) -> L.Callback:
        flag = self

        class _Check(L.Callback):
            def _check(self, *args, **kwargs) -> None:
                if flag.requested:
                    raise KeyboardInterrupt

            on_train_epoch_start = on_train_batch_start = on_validation_batch_start = _check

        return _Check()


def _interrupted(last: Path) -> TrainingInterrupted:
    if last.exists():
        msg = (f"interrupted; the previous model folder is untouched. The last finished epoch is saved in "
               f"{last}: resume exactly from it with the same command plus --resume {last}")
        return TrainingInterrupted(msg, last)
    return TrainingInterrupted("interrupted before the first epoch finished; nothing to resume (the previous "
                               "model folder is untouched): run the command again", None)


def training_warnings(result: TrainResult) -> list[str]:
    """What a user must know about a finished run even with --quiet (printed on stderr)."""
    found = []
    if result.val_f1_at_threshold != result.val_f1_at_threshold:
        found.append(f"WARNING: no validation truth ({result.n_val} validation galaxies, {result.n_val_boxes} "
                     "boxes): validation F1 is undefined and the operating threshold is the default 0.5; raise "
                     "--val-fraction or label more galaxies")
    cut = result.boxes_in_table - result.boxes_trained_on
    if cut > 0:
        crop = result.spec.crop
        found.append(f"NOTE: {cut} of {result.boxes_in_table} boxes lie mostly outside the central "
                     f"{crop} px crop and were not trained on (--crop none or a larger --crop keeps them)"
                     if crop else f"NOTE: {cut} of {result.boxes_in_table} boxes lie mostly outside their "
                     "images and were not trained on")
    if result.n_unclassified_skipped:
        found.append(f"NOTE: {result.n_unclassified_skipped} subject(s) in --subjects have no classification "
                     "(n_viewers 0 in aggregate's subjects table) and were left out: they are not labelled, "
                     "not negatives")
    if result.n_in_progress_skipped:
        found.append(f"NOTE: {result.n_in_progress_skipped} subject(s) in --subjects are still being classified "
                     "(in_progress in aggregate's subjects table: not finished, fewer than half the retirement "
                     "limit's classifications, not retired) and were left out with their boxes; if the workflow "
                     "retires galaxies before 20, give aggregate the Zooniverse subjects export (--subjects) or its "
                     "--retirement-limit; --include-in-progress trains on them")
    if result.n_repeated_skipped:
        found.append(f"NOTE: {result.n_repeated_skipped} subject(s) in --subjects show the same galaxy as another "
                     "labelled subject with more classifications (a galaxy sent back by select-next-batch "
                     "--include-unfinished is a second subject; this table was aggregated with --per-subject, or by an "
                     "older clumptool, so their classifications were not merged) and were left out with their boxes")
    if result.val_f1_at_threshold == 0:
        found.append("WARNING: this model found no clump on the validation galaxies at any score (published "
                     "because of --accept-empty-model)")
    return found


def summarise(result: TrainResult) -> str:
    """A few lines for the terminal (warnings: :func:`training_warnings`)."""
    f1 = "undefined (no validation truth)" if result.best_val_f1 is None else f"{result.best_val_f1:.3f}"
    lines = [
        f"trained {result.spec.backbone} on {result.n_train} galaxies ({result.n_val} for validation), "
        f"{result.epochs} epoch(s), {result.global_step} steps, {result.seconds / 60:.1f} min",
        f"best validation F1 (score >= 0.5): {f1}",
    ]
    if result.val_f1_at_threshold == result.val_f1_at_threshold:
        lines.append(f"operating score threshold {result.score_threshold:.2f} (best F1 on the validation "
                     f"galaxies: {result.val_f1_at_threshold:.3f}); evaluate and predict use it by default")
    lines += [f"model: {result.out_dir / 'model.safetensors'} (+ model.json, version {result.spec.version})",
              f"checkpoints: {result.out_dir / 'checkpoints'}; curves: {result.out_dir / 'training.png'}"]
    return "\n".join(lines)
