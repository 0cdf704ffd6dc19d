"""train -> checkpoints -> exact resume; outputs loadable; DDP on CPU with 2 processes; CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import lightning as L
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from tiny_projects import make_tiny_project

from clumptool.cli import main
from clumptool.common.errors import ClumptoolError
from clumptool.detection.io import load_model
from clumptool.detection.train import train

TINY = {"backbone": "resnet18", "image_size": 48, "crop": None, "batch_size": 2, "progress": False,
        "accept_empty": True}  # a few steps from random init find nothing: that is not what these tests check


class EpochRecorder(L.Callback):
    def __init__(self):
        self.started = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.started.append((trainer.current_epoch, trainer.global_step))


@pytest.mark.slow
def test_train_checkpoint_resume(tiny_project, tmp_path):
    boxes, images, subjects = tiny_project
    out = tmp_path / "run"
    first = EpochRecorder()
    r1 = train(boxes, images, out, subjects=subjects, epochs=1, val_fraction=0.25, callbacks=[first], **TINY)
    assert (r1.n_train, r1.n_val) == (6, 2)
    assert first.started == [(0, 0)] and r1.global_step == 3  # 6 galaxies / batch 2
    for name in ("model.safetensors", "model.json", "training.png", "training.json", "split.csv",
                 "checkpoints/last.ckpt", "logs/metrics.csv"):
        assert (out / name).exists(), name
    assert r1.best_checkpoint is not None and r1.best_checkpoint.exists()
    split = pd.read_csv(out / "split.csv")
    assert (split["split"] == "val").sum() == 2

    second = EpochRecorder()
    r2 = train(boxes, images, out, subjects=subjects, epochs=2, val_fraction=0.25, callbacks=[second],
               resume=out / "checkpoints" / "last.ckpt", **TINY)
    assert second.started == [(1, 3)]  # continues at epoch 1, step 3: no epoch repeated
    assert r2.global_step == 6 and r2.epochs == 2
    hist = r2.history
    assert hist["epoch"].tolist() == [0, 1] and hist["val_f1"].notna().all()
    summary = json.loads((out / "training.json").read_text())
    assert summary["global_step"] == 6 and summary["n_train"] == 6

    # the model folder holds the best checkpoint's network; both load without repeating options
    m1, spec = load_model(out)
    m2, _ = load_model(r2.best_checkpoint)
    assert spec.image_size == 48 and spec.crop is None
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(m1.backbone(x)["0"], m2.backbone(x)["0"])


def test_cli_bad_inputs(tiny_project, tmp_path):
    boxes, images, _ = tiny_project
    runner = CliRunner()
    base = ["train", "--boxes", str(boxes), "--images", str(images), "--out", str(tmp_path / "o"), "--quiet"]
    res = runner.invoke(main, [*base, "--backbone", "vgg99"])
    assert res.exit_code == 2 and "unknown backbone 'vgg99'" in res.output
    if not torch.cuda.is_available():
        res = runner.invoke(main, [*base, "--precision", "16-mixed"])
        assert res.exit_code == 2 and "needs a GPU" in res.output
    (tmp_path / "none").mkdir()
    res = runner.invoke(main, ["train", "--boxes", str(boxes), "--images", str(tmp_path / "none"), "--quiet"])
    assert res.exit_code == 2 and "no images" in res.output
    res = runner.invoke(main, [*base, "--resume", str(tmp_path / "missing.ckpt")])
    assert res.exit_code == 2 and "not found" in res.output
    with pytest.raises(ClumptoolError, match="epochs"):
        train(boxes, images, tmp_path / "o", epochs=0)


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path):
    """Lightning's "ddp" on CPU (gloo) re-runs the command once per extra device: run the CLI as a subprocess."""
    boxes, images, subjects = make_tiny_project(tmp_path, n=10)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "clumptool.cli", "train", "--boxes", str(boxes), "--images", str(images),
           "--subjects", str(subjects), "--backbone", "resnet18", "--image-size", "48", "--crop", "none",
           "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.2", "--devices", "2", "--strategy", "ddp",
           "--out", str(out), "--quiet", "--accept-empty-model"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "training.json").read_text())
    # 8 training galaxies, batch 2: 4 steps on one process, 2 per process when split over 2 processes
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    assert (out / "model.safetensors").exists() and (out / "checkpoints" / "last.ckpt").exists()


def test_match_counts_metric_sums_and_keeps_undefined_undefined():
    """The validation counts are a torchmetrics Metric (sum over batches; over DDP processes on compute)."""
    import math

    from clumptool.detection.lit import MatchCounts

    metric = MatchCounts()
    out = {"boxes": torch.tensor([[10.0, 10.0, 20.0, 20.0], [40.0, 40.0, 50.0, 50.0], [0.0, 0.0, 4.0, 4.0]]),
           "scores": torch.tensor([0.9, 0.8, 0.2])}  # the last one is below the 0.5 validation score
    truth = {"boxes": torch.tensor([[11.0, 11.0, 21.0, 21.0], [60.0, 60.0, 70.0, 70.0]])}
    metric.update([out, out], [truth, truth])
    metric.update([{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}], [truth])
    assert (int(metric.n_true), int(metric.n_det), int(metric.n_matched)) == (6, 4, 2)
    assert metric.compute() == pytest.approx((2 / 6, 2 / 4, 4 / 10))
    metric.reset()
    metric.update([{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}], [{"boxes": torch.zeros(0, 4)}])
    assert all(math.isnan(v) for v in metric.compute())
    assert metric.state_dict() == {}  # nothing extra in checkpoints: exact resume and old checkpoints unaffected


def test_module_records_the_spec_it_was_given(tmp_path):
    """The hyper-parameters are the spec passed in (recording its initial weights), never rewritten."""
    import timm
    from safetensors.torch import save_file

    from clumptool.detection.lit import DetectorModule
    from clumptool.detection.spec import make_spec

    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(tmp_path / "enc.safetensors"))
    spec = make_spec("resnet18", image_size=48, crop=None)
    with pytest.raises(ValueError, match="with_init_weights"):
        DetectorModule(spec=spec.to_dict(), weights=str(tmp_path / "enc.safetensors"))
    recorded = spec.with_init_weights(tmp_path / "enc.safetensors").to_dict()
    module = DetectorModule(spec=recorded, weights=str(tmp_path / "enc.safetensors"))
    assert module.hparams["spec"] == recorded and module.spec.to_dict() == recorded


def test_train_leaves_out_galaxies_still_being_classified(tiny_project, tmp_path):
    """A lean project's subjects table marks the galaxies volunteers are still at (in_progress): train leaves
    them out, says so and records it; --include-in-progress puts them back."""
    from clumptool.detection.train import training_warnings

    boxes, images, subjects = tiny_project
    st = pd.read_csv(subjects) if str(subjects).endswith(".csv") else pd.read_parquet(subjects)
    st["n_viewers"] = [2, 2] + [20] * (len(st) - 2)
    st["in_progress"] = [True, True] + [False] * (len(st) - 2)
    st.to_parquet(tmp_path / "subjects.parquet", index=False)
    r = train(boxes, images, tmp_path / "run", subjects=tmp_path / "subjects.parquet", epochs=1,
              val_fraction=0.25, **TINY)
    assert r.n_train + r.n_val == len(st) - 2 and r.n_in_progress_skipped == 2
    assert json.loads((tmp_path / "run" / "training.json").read_text())["n_subjects_in_progress_skipped"] == 2
    assert any("2 subject(s)" in w and "still being classified" in w for w in training_warnings(r))
    r = train(boxes, images, tmp_path / "all", subjects=tmp_path / "subjects.parquet", epochs=1,
              val_fraction=0.25, include_in_progress=True, **TINY)
    assert r.n_train + r.n_val == len(st) and r.n_in_progress_skipped == 0
