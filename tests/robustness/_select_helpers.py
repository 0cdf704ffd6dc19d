"""Builders for the select-next-batch robustness cases: a tiny detector and pool, a previous output set to
protect, and the loopback fake Zooniverse talked to by the real panoptes-client.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import harness  # noqa: E402,F401  (re-exported to the test module)
import numpy as np
import torch
from PIL import Image

N_POOL = 10
PASSWORD = "Pw-r0bust-91xq"  # distinctive, so a leak anywhere can be searched for
USER = "clumpbot"
PROJECT, WORKFLOW = 1234, 5678


def tiny_spec():
    from clumptool.detection.spec import make_spec

    return make_spec("resnet18", image_size=64, crop=None, fpn_channels=16, representation_size=32,
                     rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, detections_per_img=10)


def build_world(root: Path) -> Path:
    """root/images (N_POOL galaxies 7000.., 64 px), root/model (random init), root/previous (a published
    select-next-batch output set to protect). Returns root."""
    from clumptool.detection.io import save_model
    from clumptool.detection.model import build_model

    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(N_POOL):
        arr = rng.uniform(0, 40, (64, 64, 3)).astype(np.uint8)
        for _ in range(i % 3):
            x, y = rng.integers(10, 50, 2)
            arr[y:y + 5, x:x + 5] = 240
        Image.fromarray(arr).save(images / f"{7000 + i}.png")
    torch.manual_seed(0)
    save_model(root / "model", build_model(tiny_spec()), tiny_spec())
    return root


def base_args(world: Path, out: Path, *extra: object, n: int = 2, controls: int = 1) -> list[object]:
    """select-next-batch on the tiny world: cheap strategy, no diversity step."""
    return ["select-next-batch", "--model", world / "model", "--pool", world / "images", "--n", n,
            "--random-control", controls, "--strategy", "entropy", "--diversity", "none", "--out", out, *extra]


def copy_previous(previous: Path, out: Path) -> Path:
    """A copy of a published output set at ``out`` (byte-identical)."""
    shutil.copytree(previous, out)
    return out


def upload_args(url: str, *extra: object) -> list[object]:
    return ["--upload", "--project-id", PROJECT, "--workflow-id", WORKFLOW, "--endpoint", url, *extra]


def galaxies_on_server(fake) -> list[str]:
    """#galaxy_id of every subject the fake server holds (duplicates kept)."""
    with fake.state.lock:
        return sorted(s["metadata"].get("#galaxy_id") for s in fake.state.subjects.values())


def every_file_text(*folders: Path) -> str:
    """Every file under ``folders`` as text (bytes decoded latin-1), to search for leaked secrets."""
    chunks = []
    for folder in folders:
        if Path(folder).exists():
            chunks += [p.read_bytes().decode("latin-1") for p in sorted(Path(folder).rglob("*")) if p.is_file()]
    return "\n".join(chunks)
