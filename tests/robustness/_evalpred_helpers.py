"""Builders for the evaluate/predict robustness cases: a tiny project (40 px galaxies) and a tiny detector.

The detector is a random-init resnet18 Faster R-CNN on 32 px inputs whose classifier is biased to report
clumps, so every galaxy gets detections in well under a second. Its operating threshold (what ``train``
records in model.json) is set through the spec when ModelSpec has the field, else patched in on load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from harness import no_traceback

SIZE = 40
SUBJECTS = [str(1000 + i) for i in range(6)]  # 1005 has no clumps
OPERATING = 0.35


def make_project(root: Path, n_extra_images: int = 0) -> Path:
    """images/<id>.png, truth.csv (points with FWHM), subjects.csv; ``n_extra_images`` more hard-linked copies."""
    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for k, sid in enumerate(SUBJECTS):
        arr = rng.uniform(0, 40, size=(SIZE, SIZE, 3)).astype(np.uint8)
        if k < len(SUBJECTS) - 1:
            x, y = 12 + 2 * k, 20
            arr[y - 2:y + 3, x - 2:x + 3] = 250
            rows.append((sid, float(x), float(y), 1, 2.0))
        Image.fromarray(arr).save(images / f"{sid}.png")
    first = images / f"{SUBJECTS[0]}.png"
    for k in range(n_extra_images):
        os.link(first, images / f"{2000 + k}.png")
    pd.DataFrame(rows, columns=["subject_id", "x", "y", "label", "fwhm_px"]).to_csv(root / "truth.csv", index=False)
    pd.DataFrame({"subject_id": [int(s) for s in SUBJECTS]}).to_csv(root / "subjects.csv", index=False)
    return root


def spec_has_threshold() -> bool:
    from clumptool.detection.spec import ModelSpec

    return "score_threshold" in {f.name for f in dataclasses.fields(ModelSpec)}


def make_model(folder: Path, threshold: float | None = OPERATING) -> Path:
    """Save the tiny detector; ``threshold`` is its recorded operating threshold (None: a legacy model)."""
    import torch

    from clumptool.detection.io import save_model
    from clumptool.detection.model import build_model
    from clumptool.detection.spec import make_spec

    torch.manual_seed(0)
    extra = {"score_threshold": threshold} if spec_has_threshold() else {}
    spec = make_spec("resnet18", image_size=32, crop=None, fpn_channels=16, representation_size=32, **extra)
    model = build_model(spec)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 4.0, 1.0]))
    return save_model(folder, model, spec)


def patch_threshold(monkeypatch, model_dir: Path, threshold: float) -> None:
    """Before ``train`` records the operating threshold in model.json, give it to the spec on load."""
    if spec_has_threshold():
        return
    from clumptool.detection.spec import ModelSpec

    original = ModelSpec.from_json.__func__
    target = Path(model_dir).resolve()

    def from_json(cls, path):
        spec = original(cls, path)
        if Path(path).resolve().parent == target:
            spec.score_threshold = threshold
        return spec

    monkeypatch.setattr(ModelSpec, "from_json", classmethod(from_json))


def metrics(out: Path) -> dict:
    return json.loads((Path(out) / "metrics.json").read_text())


def catalogue_meta(path: Path) -> dict:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[b"clumptool"])


def failed(outcome, *needles: str) -> None:
    """Exit 2, an 'Error:' line holding every needle, no traceback."""
    no_traceback(outcome)
    assert outcome.code == 2, outcome.text
    assert "Error" in outcome.text, outcome.text
    for n in needles:
        assert n in outcome.text, (n, outcome.text)
