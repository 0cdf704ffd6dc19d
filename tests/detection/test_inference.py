"""Boxes mapped from working back to original pixels (through the Lightning path); embeddings; the bench's loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from clumptool.detection.image_list import ImageList
from clumptool.detection.images import load_image, prepare, working_geometry
from clumptool.detection.inference import embed_tensors, to_detections
from clumptool.detection.model import build_model
from clumptool.detection.predicting import PostProcessed, collecting_trainer, detect_images
from clumptool.detection.spec import make_spec


class BrightestPixelModel(nn.Module):
    """Detects one 2x2 working-pixel box on the brightest working pixel (a model whose answer is known)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen_shapes = []

    def forward(self, images):
        out = []
        for im in images:
            self.seen_shapes.append(tuple(im.shape))
            flat = int(im.sum(0).argmax())
            y, x = divmod(flat, im.shape[-1])
            out.append({"boxes": torch.tensor([[x, y, x + 2.0, y + 2.0]]), "scores": torch.tensor([0.9]),
                        "labels": torch.tensor([2])})
        return out


class RawHead:
    """A predict_step head that runs the fake model and only maps its boxes back (no threshold, no NMS)."""

    def __call__(self, model, images, geoms, first):
        return [to_detections({k: v.cpu() for k, v in out.items()}, g, str(j))
                for j, (out, g) in enumerate(zip(model(images), geoms, strict=True))]


def test_detections_are_mapped_to_original_pixels(tmp_path):
    # 160 x 120 images, central crop 80 px (offset x 40, y 20), resized to 40 px (scale 0.5)
    spec = make_spec("resnet18", image_size=40, crop=80)
    truth = {"a": (70, 50), "b": (45, 95), "c": (100, 30)}
    paths = []
    for sid, (x, y) in truth.items():
        arr = np.zeros((120, 160, 3), np.uint8)
        arr[y:y + 2, x:x + 2] = 255   # a 2x2 bright square at original pixels x..x+2, y..y+2
        Image.fromarray(arr).save(tmp_path / f"{sid}.png")
        paths.append(tmp_path / f"{sid}.png")
    model = BrightestPixelModel()
    images = ImageList(ids=list(truth), paths=[str(p) for p in paths])
    dets = detect_images(collecting_trainer("cpu"), model, RawHead(), images, spec, batch_size=2)
    assert [d.subject_id for d in dets] == ["0", "1", "0"]  # position in its batch (batches of 2)
    assert set(model.seen_shapes) == {(3, 40, 40)}
    for sid, d in zip(truth, dets, strict=True):
        x, y = truth[sid]
        (x1, y1, x2, y2), = d.boxes
        # one working pixel = 2 original pixels: the mapped box is 4 px and covers the bright square
        assert (x2 - x1, y2 - y1) == (4.0, 4.0)
        assert x1 <= x and x + 2 <= x2 and y1 <= y and y + 2 <= y2
        assert (d.width, d.height) == (160, 120) and d.labels.tolist() == [2]


def test_geometry_round_trip_and_pixels():
    geom, ww, wh = working_geometry(160, 120, crop=80, image_size=40)
    assert (geom.offset_x, geom.offset_y, geom.scale, ww, wh) == (40.0, 20.0, 0.5, 40, 40)
    boxes = np.array([[50.0, 30.0, 66.0, 46.0]])
    np.testing.assert_allclose(geom.to_original(geom.to_working(boxes)), boxes)
    img = np.zeros((1, 120, 160), np.float32)
    img[0, 60:64, 80:84] = 1.0  # original box [80, 60, 84, 64]
    t, g = prepare(img, 80, 40)
    ys, xs = np.nonzero(t[0].numpy() > 0.5)
    np.testing.assert_allclose(g.to_original([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]),
                               [[80, 60, 84, 64]])


def test_load_image_png_and_fits(tmp_path):
    from astropy.io import fits

    arr = np.zeros((10, 12, 3), np.uint8)
    arr[2, 3] = (255, 0, 128)
    Image.fromarray(arr).save(tmp_path / "x.png")
    im = load_image(tmp_path / "x.png", 3)
    assert im.shape == (3, 10, 12) and im.dtype == np.float32
    assert im[:, 2, 3].tolist() == pytest.approx([1.0, 0.0, 128 / 255])
    cube = np.zeros((4, 10, 12), np.float32)
    cube[2, 0, 5] = 100.0  # FITS row 0 = bottom of the displayed image
    fits.PrimaryHDU(cube).writeto(tmp_path / "x.fits")
    f = load_image(tmp_path / "x.fits", 2, fits_bands=[2, 0])
    assert f.shape == (2, 10, 12) and f[0, 9, 5] == 1.0 and f[0].max() == 1.0


def test_embeddings_need_eval_mode_and_leave_the_model_alone():
    torch.manual_seed(0)
    model = build_model(make_spec("resnet18", image_size=64, box_dropout=0.5))
    ims = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    with pytest.raises(ValueError, match="eval mode"):
        embed_tensors(model, ims)
    model.eval()
    emb = embed_tensors(model, ims)
    assert emb.shape == (2, 512) and np.isfinite(emb).all() and not np.allclose(emb[0], emb[1])
    assert not any(m.training for m in model.modules())


def test_the_bench_loop_and_the_lightning_path_give_the_same_detections(tmp_path, monkeypatch):
    """bench/bare_loop.iter_detections (the bench's baseline) = detect_images with predict's head, NMS off."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    from bare_loop import iter_detections  # bench/ is not a package: on the path for this test only

    spec = make_spec("resnet18", image_size=64, crop=None, fpn_channels=16, representation_size=32,
                     rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, detections_per_img=10)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    torch.manual_seed(0)
    model = build_model(spec).eval()
    loop = list(iter_detections(model, spec, paths, batch_size=2, score_thresh=0.2))
    images = ImageList(ids=["0", "1", "2"], paths=[str(p) for p in paths])
    lit = detect_images(collecting_trainer("cpu"), model, PostProcessed(0.2, None), images, spec, batch_size=2)
    assert sum(len(d.scores) for d in loop) > 0
    for a, b in zip(loop, lit, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert model.roi_heads.score_thresh == spec.box_score_thresh  # the threshold was per call
