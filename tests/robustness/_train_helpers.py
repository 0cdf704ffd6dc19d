"""Builders for the train robustness cases: a tiny labelled project and a previous model folder.

Kept tiny so that real training runs take seconds: 48 px images, 8 galaxies, efficientnet_b0 (the smallest
backbone by weight size) at 32 px, one torch thread (two cores are shared by several test runs, and
over-subscribed threads make each step ~10x slower).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY_ARGS = ("--backbone", "efficientnet_b0", "--image-size", "32", "--crop", "none", "--batch-size", "3",
             "--quiet")


def make_project(root: Path, n: int = 8, size: int = 48, seed: int = 0) -> tuple[Path, Path, Path]:
    """``n`` images with 0-2 bright 6x6 clumps each (every third has none); boxes.csv and subjects.csv."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        sid = 1000 + i
        arr = rng.uniform(0, 30, (size, size, 3)).astype(np.uint8)
        for _ in range(0 if i % 3 == 0 else 1 + i % 2):
            x, y = rng.integers(8, size - 14, 2)
            arr[y:y + 6, x:x + 6] = 250
            rows.append({"subject_id": sid, "x1": x - 2.0, "y1": y - 2.0, "x2": x + 8.0, "y2": y + 8.0,
                         "label": 1})
        Image.fromarray(arr).save(images / f"{sid}.png")
    boxes = root / "boxes.csv"
    pd.DataFrame(rows, columns=["subject_id", "x1", "y1", "x2", "y2", "label"]).to_csv(boxes, index=False)
    subjects = root / "subjects.csv"
    pd.DataFrame({"subject_id": [1000 + i for i in range(n)]}).to_csv(subjects, index=False)
    return boxes, images, subjects


def tiny_spec(**kw):
    from clumptool.detection.spec import make_spec

    return make_spec("efficientnet_b0", image_size=32, crop=None, **kw)


def previous_model(out: Path, **spec_kw) -> Path:
    """A published model folder (as 'clumptool train' leaves it) with random weights: the run to protect."""
    from clumptool.common.outputs import output_set
    from clumptool.detection.io import save_model
    from clumptool.detection.model import build_model

    spec = tiny_spec(**spec_kw)
    with output_set(out, "train") as staged:
        save_model(staged.path, build_model(spec), spec)
        (staged.path / "training.json").write_text(json.dumps({"note": "previous run"}) + "\n")
    return out


def write_boxes(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows, columns=["subject_id", "x1", "y1", "x2", "y2", "label"]).to_csv(path, index=False)
    return path


def fake_checkpoint(path: Path, **spec_kw) -> Path:
    """A small file shaped like a clumptool training checkpoint (hyper-parameters only), for option checks."""
    import torch

    spec = tiny_spec(**spec_kw)
    torch.save({"hyper_parameters": {"spec": spec.to_dict(), "lr": 3e-4, "weight_decay": 5e-5,
                                     "run": {"seed": 0, "batch_size": 3, "val_fraction": 0.2}},
                "loops": {}, "state_dict": {}}, path)
    return path


def epoch_losses(model_dir: Path) -> list[float]:
    """Per-epoch mean training loss recorded in training.json."""
    history = json.loads((model_dir / "training.json").read_text())["history"]
    return [float(h["train_loss_epoch"]) for h in history]
