"""Tiny labelled image folders for the detection tests (64 px, bright square clumps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def make_tiny_project(root: Path, n: int = 8, size: int = 64, seed: int = 0) -> tuple[Path, Path, Path]:
    """``n`` images with 0-2 bright 6x6 clumps each (every third image has none); boxes.csv, subjects.csv."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        sid = str(1000 + i)
        arr = (rng.uniform(0, 30, (size, size, 3))).astype(np.uint8)
        k = 0 if i % 3 == 0 else 1 + i % 2
        for _ in range(k):
            x, y = rng.integers(12, size - 18, 2)
            arr[y:y + 6, x:x + 6] = 250
            rows.append({"subject_id": int(sid), "x1": x - 2.0, "y1": y - 2.0, "x2": x + 8.0, "y2": y + 8.0,
                         "label": 1, "score": 0.9})
        Image.fromarray(arr).save(images / f"{sid}.png")
    boxes = root / "boxes.csv"
    pd.DataFrame(rows, columns=["subject_id", "x1", "y1", "x2", "y2", "label", "score"]).to_csv(boxes, index=False)
    subjects = root / "subjects.csv"
    pd.DataFrame({"subject_id": [1000 + i for i in range(n)]}).to_csv(subjects, index=False)
    return boxes, images, subjects
