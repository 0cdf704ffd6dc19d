"""The one inference path: predict, evaluate and select-next-batch all run the detector through run_detection
(Lightning's Trainer.predict); in-memory results come back in image order; N CPU processes give what 1 gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from clumptool.common.errors import ClumptoolError
from clumptool.detection import predicting
from clumptool.detection.image_list import ImageList
from clumptool.detection.predicting import collecting_trainer, detect_images

sys.path.insert(0, os.path.dirname(__file__))
from tiny_projects import make_tiny_project  # noqa: E402

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _spec(dropout: float = 0.0):
    from clumptool.detection.spec import make_spec

    return make_spec("resnet18", image_size=64, crop=None, box_dropout=dropout, fpn_channels=16,
                     representation_size=32, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                     detections_per_img=10)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 tiny galaxies with truth; a clump-happy random detector with box dropout (MC dropout works)."""
    from clumptool.detection.io import save_model
    from clumptool.detection.model import build_model

    root = tmp_path_factory.mktemp("one_path")
    boxes, images, _ = make_tiny_project(root, n=8)
    torch.manual_seed(0)
    model = build_model(_spec(0.3))
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-1.0, 1.0, 0.0]))
    return root, boxes, images, save_model(root / "model", model, _spec(0.3))


class IndexHead:
    """Each image's index in the run, as the head sees it (batch start + position)."""

    def __call__(self, model, images, geoms, first):
        return [first + j for j in range(len(images))]


def test_results_come_back_in_image_order(tiny):
    _, _, images, _ = tiny
    paths = sorted(str(p) for p in images.glob("*.png"))
    listed = ImageList(ids=[str(i) for i in range(len(paths))], paths=paths)
    out = detect_images(collecting_trainer("cpu"), torch.nn.Linear(1, 1), IndexHead(), listed, _spec(),
                        batch_size=3)
    assert out == list(range(len(paths)))


def test_devices_and_strategies_are_checked_before_any_work():
    with pytest.raises(ClumptoolError, match="--device 'gpu0': not a torch device"):
        collecting_trainer("gpu0", option="--device")
    with pytest.raises(ClumptoolError, match="--device 0: give at least 1"):
        collecting_trainer("0", option="--device")
    with pytest.raises(ClumptoolError, match="--strategy ddp_spawn: .*use --strategy ddp"):
        collecting_trainer("2", strategy="ddp_spawn")
    with pytest.raises(ClumptoolError, match="--num-nodes must be >= 1"):
        collecting_trainer("cpu", num_nodes=0)


def test_predict_evaluate_and_select_all_run_through_run_detection(tiny, tmp_path, monkeypatch):
    from clumptool.active_learning.select import select_next_batch
    from clumptool.detection import predict as predict_module
    from clumptool.detection.evaluate import evaluate_model
    from clumptool.detection.predict import predict_catalogue

    root, boxes, images, model = tiny
    calls: list[str] = []
    real = predicting.run_detection

    def counted(trainer, module, data, writer):
        calls.append(f"{type(module.head).__name__}/{type(writer).__name__}")
        return real(trainer, module, data, writer)

    monkeypatch.setattr(predicting, "run_detection", counted)
    monkeypatch.setattr(predict_module, "run_detection", counted)  # predict calls it directly
    monkeypatch.setenv("CLUMPTOOL_STATE_DIR", str(tmp_path / "state"))
    predict_catalogue(model, images, tmp_path / "cat", score_threshold=0.3, n_overlay=1, devices="cpu",
                      progress=False)
    assert calls == ["PostProcessed/ShardWriter"]  # (the overlay figure is drawn from the catalogue)
    evaluate_model(model, boxes, images, tmp_path / "ev", device="cpu", progress=False)
    assert calls[1:] == ["PostProcessed/Collector"]
    select_next_batch(model, images, tmp_path / "sel", n=2, random_control=1, strategy="mc-bald", passes=2,
                      diversity="kcenter", candidates=4, device="cpu", progress=False, round_name="r")
    # scoring, then the candidates' embeddings; the figure is drawn from the scoring's detections
    assert calls[2:] == ["ScoringHead/Collector", "EmbeddingHead/Collector"]


@pytest.mark.slow
def test_two_cpu_processes_evaluate_and_select_as_one(tiny, tmp_path):
    """--device 2 without a GPU: 2 processes (DDP over gloo) score their shares, the first one writes."""
    root, boxes, images, model = tiny
    runs = {}
    for n in (1, 2):
        ev = subprocess.run([sys.executable, "-m", "clumptool.cli", "evaluate", "--model", str(model), "--boxes",
                             str(boxes), "--images", str(images), "--device", str(n), "--batch-size", "3",
                             "--out", str(tmp_path / f"ev{n}")], capture_output=True, text=True, timeout=600,
                            env=ENV, cwd=tmp_path)
        assert ev.returncode == 0, ev.stderr[-3000:]
        assert ev.stdout.count("COCO mAP") == 1  # one summary, from the first process
        sel = subprocess.run([sys.executable, "-m", "clumptool.cli", "select-next-batch", "--model", str(model),
                              "--pool", str(images), "--n", "3", "--random-control", "1", "--strategy", "mc-bald",
                              "--passes", "3", "--batch-size", "3", "--device", str(n), "--round", "r", "--quiet",
                              "--out", str(tmp_path / f"sel{n}")], capture_output=True, text=True, timeout=600,
                             env={**ENV, "CLUMPTOOL_STATE_DIR": str(tmp_path / f"state{n}")}, cwd=tmp_path)
        assert sel.returncode == 0, sel.stderr[-3000:]
        metrics = json.loads((tmp_path / f"ev{n}" / "metrics.json").read_text())
        runs[n] = (metrics, pd.read_parquet(tmp_path / f"sel{n}" / "pool_scores.parquet"),
                   pd.read_parquet(tmp_path / f"sel{n}" / "selection.parquet"))
    (m1, p1, s1), (m2, p2, s2) = runs[1], runs[2]
    assert m1["scopes"] == m2["scopes"] and m1["curves"] == m2["curves"]
    assert m1["scopes"]["overall"]["at_threshold"]["n_det"] > 0
    pd.testing.assert_frame_equal(p1, p2, rtol=1e-6)  # MC dropout too: its draws follow the galaxies
    assert (p1["score"] > 0).all() and len(p1) == 8
    assert s1["galaxy_id"].tolist() == s2["galaxy_id"].tolist()
    assert not list(tmp_path.glob(".*"))  # no staging folder left
    np.testing.assert_array_equal(s1["rank"], np.arange(1, len(s1) + 1))


def test_an_uploaded_subject_is_catalogued_under_its_own_id_from_its_galaxys_image(tmp_path):
    """A Zooniverse subjects export lists the subject select-next-batch uploaded (#galaxy_id in its metadata); the
    images keep the galaxy's name. predict reads that image and catalogues it under the subject id, which is what
    aggregate --detections matches to the classifications."""

    from PIL import Image

    from clumptool.detection.image_list import read_image_list

    images = tmp_path / "images"
    images.mkdir()
    for gid in ("77", "78"):
        Image.new("RGB", (16, 16)).save(images / f"{gid}.png")
    pd.DataFrame({"subject_id": [5001, 78], "metadata": [json.dumps({"#galaxy_id": "77"}), json.dumps({})]}).to_csv(
        tmp_path / "subjects.csv", index=False)
    found = read_image_list(images, tmp_path / "subjects.csv")
    assert dict(zip(found.ids, [p.rsplit("/", 1)[-1] for p in found.paths], strict=True)) == {"5001": "77.png",
                                                                                              "78": "78.png"}
    assert found.missing == []
