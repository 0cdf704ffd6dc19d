"""Real Zoobot objects as the detector's starting point: a Zoobot Lightning checkpoint and the hub path.

Both use a small timm encoder (resnet18) built with ``pretrained=False``: nothing is downloaded. The trained
detector freezes its encoder (``--trainable-stages 0``, batch norm frozen as for any pretrained start), so
its encoder tensors after training must equal the ones it was started from, bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from timm.models import save_for_hf
from torch.utils.data import DataLoader
from zoobot.pytorch.training.finetune import FinetuneableZoobotClassifier

from clumptool.cli import main

pytestmark = pytest.mark.slow

TRAIN = ["--backbone", "resnet18", "--image-size", "48", "--crop", "none", "--epochs", "1", "--batch-size", "2",
         "--val-fraction", "0.25", "--trainable-stages", "0", "--quiet", "--accept-empty-model"]


def _encoder_in_detector(model_dir: Path) -> dict[str, torch.Tensor]:
    """The encoder tensors of a trained detector folder, named as in the timm encoder."""
    prefix = "backbone.body."
    return {k[len(prefix):]: v for k, v in load_file(str(model_dir / "model.safetensors")).items()
            if k.startswith(prefix)}


def _assert_same_encoder(detector: dict[str, torch.Tensor], encoder: dict[str, torch.Tensor]) -> None:
    wanted = {k: v for k, v in encoder.items() if not k.endswith("num_batches_tracked")}
    assert set(detector) == set(wanted)  # resnet18 features_only keeps every stage the classifier had
    for k, v in wanted.items():
        assert torch.equal(detector[k], v), k


def test_train_from_a_zoobot_lightning_checkpoint(tiny_project, tmp_path):
    """FinetuneableZoobotClassifier trained a few steps by a Lightning Trainer -> train --weights that.ckpt."""
    torch.manual_seed(0)
    encoder = timm.create_model("resnet18", pretrained=False, num_classes=0)
    zoobot = FinetuneableZoobotClassifier(encoder=encoder, num_classes=2, learning_rate=1e-3)
    data = [{"image": torch.rand(3, 32, 32), "label": i % 2} for i in range(4)]
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        limit_val_batches=0)
    trainer.fit(zoobot, DataLoader(data, batch_size=2))
    ckpt = tmp_path / "zoobot-finetuned.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    enc = {k[len("encoder."):]: v for k, v in saved.items() if k.startswith("encoder.")}
    assert enc and any(k.startswith("head.") for k in saved)  # Zoobot's layout: encoder.* + head.*

    boxes, images, subjects = tiny_project
    out = tmp_path / "model"
    res = CliRunner().invoke(main, ["train", "--boxes", str(boxes), "--images", str(images), "--subjects",
                                    str(subjects), "--out", str(out), "--weights", str(ckpt), *TRAIN])
    assert res.exit_code == 0, res.output
    _assert_same_encoder(_encoder_in_detector(out), enc)
    assert json.loads((out / "model.json").read_text())["init_weights"] == str(ckpt)


def _hub_cache(root: Path, repo_id: str, encoder: torch.nn.Module, revision: str = "0" * 40) -> Path:
    """A Hugging Face cache as the hub client leaves it: models--<org>--<name>/snapshots/<rev>/ + refs/main."""
    repo = root / "hub" / ("models--" + repo_id.replace("/", "--"))
    save_for_hf(encoder, repo / "snapshots" / revision, safe_serialization=True)  # timm's hub format
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return root


def test_train_with_weights_zoobot_through_an_offline_hub_cache(tiny_project, tmp_path):
    """--weights zoobot -> hf_hub:mwalmsley/zoobot-encoder-resnet18, read by timm from the cache, offline."""
    torch.manual_seed(1)
    encoder = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with torch.no_grad():
        encoder.bn1.running_mean.uniform_(-1, 1)  # buffers travel too
    hf_home = _hub_cache(tmp_path / "hf", "mwalmsley/zoobot-encoder-resnet18", encoder)
    boxes, images, subjects = tiny_project
    out = tmp_path / "model"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
           "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "clumptool.cli", "train", "--boxes", str(boxes), "--images", str(images),
           "--subjects", str(subjects), "--out", str(out), "--weights", "zoobot", *TRAIN]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_encoder(_encoder_in_detector(out), encoder.state_dict())
    spec = json.loads((out / "model.json").read_text())
    assert spec["init_weights"] == "zoobot" and spec["backbone"] == "resnet18"
