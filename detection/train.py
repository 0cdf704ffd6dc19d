"""``clumptool train`` as a plain function: labelled galaxies -> a trained detector folder.

Lightning runs the loop on CPU, one GPU, or several GPUs/nodes with DDP (launched by torchrun or SLURM as
Lightning documents; ``devices=2, strategy="ddp"`` also works on CPU with gloo: Lightning re-runs the
command in one subprocess per extra device). Writes into ``out``:

* ``model.safetensors`` + ``model.json``: the best model by validation F1 (see :mod:`clumptool.detection.lit`),
  all that evaluate / predict / select-next-batch need;
* ``checkpoints/best-*.ckpt`` and ``checkpoints/last.ckpt``: Lightning checkpoints (resume with ``resume=``);
* ``logs/metrics.csv`` (CSVLogger), ``training.png`` (losses and validation F1 per epoch),
  ``split.csv`` (which galaxy trained / validated) and ``training.json`` (a summary).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from clumptool.common.atomic import atomic_path, write_text_atomic
from clumptool.common.errors import ClumptoolError
from clumptool.common.tables import write_table
from clumptool.detection.spec import ModelSpec, make_spec

PRECISIONS = ("32", "16-mixed", "bf16-mixed")


@dataclass
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


def _read_checkpoint_hparams(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ClumptoolError(f"{path}: checkpoint to resume from not found") from exc
    except Exception as exc:  # noqa: BLE001
        raise ClumptoolError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or "spec" not in hp:
        raise ClumptoolError(f"{path}: not a checkpoint written by 'clumptool train'")
    return hp


def _accelerator(precision: str) -> str:
    acc = "gpu" if torch.cuda.is_available() else "cpu"
    if precision not in PRECISIONS:
        raise ClumptoolError(f"unknown precision '{precision}' (use one of {', '.join(PRECISIONS)})")
    if acc == "cpu" and precision != "32":
        raise ClumptoolError(f"precision '{precision}' needs a GPU; on CPU use --precision 32")
    return acc


def _devices(devices: str | int | Sequence[int]):
    if isinstance(devices, str):
        d = devices.strip()
        if d == "auto":
            return "auto"
        try:
            return [int(v) for v in d.split(",") if v] if "," in d else int(d)
        except ValueError as exc:
            raise ClumptoolError(f"--devices must be 'auto', a count or a comma list, got {devices!r}") from exc
    return devices


def _launch_rank() -> int:
    """Global rank from the launcher's environment (torchrun, SLURM, Lightning's subprocesses), before DDP starts."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if "LOCAL_RANK" in env:
        return int(env["LOCAL_RANK"]) + int(env.get("NODE_RANK", "0"))
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env.get("SLURM_PROCID", "0"))
    return 0


def _metrics_parts(log_dir: Path) -> list[Path]:
    """Metrics files of this run in order: parts archived at each resume, then the current file."""
    parts = sorted(log_dir.glob("metrics.part*.csv"))
    return parts + ([log_dir / "metrics.csv"] if (log_dir / "metrics.csv").exists() else [])


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


def plot_history(history: pd.DataFrame, target: Path) -> Path | None:
    """training.png: training losses (left) and validation completeness/purity/F1 (right) per epoch."""
    if history.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for col in [c for c in history.columns if c.startswith("train_")]:
        s = history[["epoch", col]].dropna()
        label = col[len("train_"):].removesuffix("_epoch")
        a.plot(s["epoch"], s[col], marker="o", ms=3, label="total" if label == "loss" else label)
    a.set(xlabel="epoch", ylabel="loss", title="training losses", yscale="log")
    a.legend(fontsize=8)
    for col in ("val_f1", "val_completeness", "val_purity"):
        if col in history:
            s = history[["epoch", col]].dropna()
            b.plot(s["epoch"], s[col], marker="o", ms=3, label=col[4:])
    b.set(xlabel="epoch", ylim=(0, 1.02), title="validation (score >= 0.5, centre match)")
    if b.get_legend_handles_labels()[0]:
        b.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return target


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info lines and deprecation warnings would drown the loop's own progress lines."""
    import lightning.pytorch  # noqa: F401 - its import sets the levels; set ours after it

    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def train(boxes: str | os.PathLike | None, images: str | os.PathLike, out: str | os.PathLike, *,
          subjects: str | os.PathLike | None = None, backbone: str = "convnext_nano",
          weights: str | os.PathLike | None = None, image_size: int = 200, crop: int | None = 200,
          in_channels: int = 3, fits_bands: list[int] | None = None, anchor_sizes: list[int] | None = None,
          box_dropout: float = 0.0, trainable_stages: int | None = None, epochs: int = 20,
          batch_size: int = 4, lr: float = 3e-4, weight_decay: float = 5e-5, val_fraction: float = 0.2,
          devices: str | int | Sequence[int] = "auto", num_nodes: int = 1, strategy: str = "auto",
          precision: str = "32", resume: str | os.PathLike | None = None, seed: int = 0,
          workers: int | None = None, cache: bool = False, patience: int | None = 10,
          max_minutes: float | None = None, max_steps: int = -1, progress: bool = True,
          callbacks: list | None = None, items: tuple[list, list] | None = None,
          log_every_n_steps: int = 10, gradient_clip_val: float | None = 10.0) -> TrainResult:
    """Train a clump detector (see the module docstring for the outputs).

    ``items`` = (train, validation) lists of :class:`~clumptool.detection.data.Item` bypasses reading
    ``boxes``/``images``/``subjects`` (used by the benchmark). ``resume`` continues a run exactly (epoch,
    step, optimiser and scheduler state) from a checkpoint; the model settings then come from it.
    ``gradient_clip_val`` clips the gradient norm (random-init runs otherwise see loss spikes early on).
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from clumptool.detection.data import labelled_items, split_items
    from clumptool.detection.io import save_model
    from clumptool.detection.lit import ClumpDataModule, DetectorModule
    from clumptool.detection.model import cpu_setup

    t0 = time.perf_counter()
    cpu_setup()
    accelerator = _accelerator(str(precision))
    out = Path(out)
    if epochs < 1:
        raise ClumptoolError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ClumptoolError(f"batch size must be >= 1, got {batch_size}")
    if resume is not None:
        resume = Path(resume)
        hp = _read_checkpoint_hparams(resume)
        spec = ModelSpec.from_dict(hp["spec"], source=str(resume))
        module_kwargs = {"spec": spec.to_dict(), "weights": None, "lr": hp.get("lr", lr),
                         "weight_decay": hp.get("weight_decay", weight_decay),
                         "warmup_steps": hp.get("warmup_steps", 100)}
    else:
        from clumptool.detection.backbones import resolve_backbone

        resolve_backbone(backbone)
        spec_kwargs = {"image_size": image_size, "crop": crop, "fits_bands": fits_bands,
                       "box_dropout": box_dropout, "trainable_stages": trainable_stages}
        if anchor_sizes is not None:
            spec_kwargs["anchor_sizes"] = list(anchor_sizes)
        spec = make_spec(backbone, in_channels=in_channels, **spec_kwargs)
        module_kwargs = {"spec": spec.to_dict(), "weights": None if weights is None else str(weights), "lr": lr,
                         "weight_decay": weight_decay}

    L.seed_everything(seed, workers=True, verbose=False)
    if items is None:
        if boxes is None:
            raise ClumptoolError("a boxes table is needed (--boxes)")
        all_items = labelled_items(boxes, images, subjects, num_classes=spec.num_classes)
        train_items, val_items = split_items(all_items, val_fraction, seed)
    else:
        train_items, val_items = items
    if not train_items:
        raise ClumptoolError("no training galaxies (all went to validation?)")

    lit = DetectorModule(**module_kwargs)
    spec = lit.spec  # init_weights recorded
    if workers is None:
        workers = 0 if accelerator == "cpu" else min(8, os.cpu_count() or 1)
    dm = ClumpDataModule(train_items, val_items, spec, batch_size=batch_size, workers=workers, cache=cache,
                         seed=seed, progress=progress)

    ckpt_dir = out / "checkpoints"
    has_val = len(val_items) > 0
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best-{epoch:03d}-{val_f1:.3f}" if has_val else "epoch-{epoch:03d}",
                           monitor="val_f1" if has_val else None, mode="max", save_top_k=1, save_last=True,
                           auto_insert_metric_name=False)
    cbs = [ckpt, *(callbacks or [])]
    if has_val and patience:
        cbs.append(EarlyStopping(monitor="val_f1", mode="max", patience=patience))
    if _launch_rank() == 0:
        _prepare_logs(out / "logs", resuming=resume is not None)
    logger = CSVLogger(save_dir=out, name="logs", version="")
    trainer = L.Trainer(
        accelerator=accelerator, devices=_devices(devices), num_nodes=num_nodes, strategy=strategy,
        precision="32-true" if str(precision) == "32" else precision, max_epochs=epochs, max_steps=max_steps,
        max_time={"minutes": max_minutes} if max_minutes else None, callbacks=cbs, logger=logger,
        enable_progress_bar=progress, enable_model_summary=progress, log_every_n_steps=log_every_n_steps,
        num_sanity_val_steps=0, limit_val_batches=1.0 if has_val else 0, default_root_dir=out,
        gradient_clip_val=gradient_clip_val,
    )
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        spec.to_json(out / "model.json")  # beside the checkpoints from the start (load_model reads it)
        split = pd.DataFrame({"subject_id": [it.subject_id for it in train_items + val_items],
                              "split": ["train"] * len(train_items) + ["val"] * len(val_items)})
        write_table(split, out / "split.csv")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
        trainer.fit(lit, datamodule=dm, ckpt_path=None if resume is None else str(resume))

    best = Path(ckpt.best_model_path) if ckpt.best_model_path else None
    last = ckpt_dir / "last.ckpt"
    best_score = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    history = pd.DataFrame()
    if trainer.is_global_zero:
        source = best if best is not None and best.exists() else last
        if source.exists():
            state = torch.load(source, map_location="cpu", weights_only=True)["state_dict"]
            lit.load_state_dict(state)
        save_model(out, lit.model, spec)
        history = history_table(out / "logs")
        plot_history(history, out / "training.png")
        summary = {
            "backbone": spec.backbone, "init_weights": spec.init_weights, "version": spec.version,
            "n_train": len(train_items), "n_val": len(val_items), "epochs": int(trainer.current_epoch),
            "global_step": int(trainer.global_step), "world_size": int(trainer.world_size),
            "best_checkpoint": str(best) if best else None, "best_val_f1": best_score,
            "seconds": round(time.perf_counter() - t0, 1),
            "history": json.loads(history.to_json(orient="records")) if not history.empty else [],
        }
        write_text_atomic(out / "training.json", json.dumps(summary, indent=2) + "\n")
    return TrainResult(out_dir=out, spec=spec, best_checkpoint=best, last_checkpoint=last if last.exists() else None,
                       best_val_f1=best_score, epochs=int(trainer.current_epoch), global_step=int(trainer.global_step),
                       n_train=len(train_items), n_val=len(val_items), world_size=int(trainer.world_size),
                       is_global_zero=bool(trainer.is_global_zero), seconds=time.perf_counter() - t0,
                       history=history)


def summarise(result: TrainResult) -> str:
    """A few lines for the terminal."""
    f1 = "n/a" if result.best_val_f1 is None else f"{result.best_val_f1:.3f}"
    return "\n".join([
        f"trained {result.spec.backbone} on {result.n_train} galaxies ({result.n_val} for validation), "
        f"{result.epochs} epoch(s), {result.global_step} steps, {result.seconds / 60:.1f} min",
        f"best validation F1 (score >= 0.5): {f1}",
        f"model: {result.out_dir / 'model.safetensors'} (+ model.json)",
        f"checkpoints: {result.out_dir / 'checkpoints'}; curves: {result.out_dir / 'training.png'}",
    ])

