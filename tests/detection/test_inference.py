"""iter_detections maps working-pixel boxes back to original pixels; embeddings; MC dropout."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from clumptool.detection.images import load_image, prepare, working_geometry
from clumptool.detection.inference import (
    detect_tensors,
    embed_tensors,
    enable_mc_dropout,
    iter_detections,
    set_score_threshold,
)
from clumptool.detection.model import build_model
from clumptool.detection.spec import make_spec


class BrightestPixelModel(nn.Module):
    """Detects one 2x2 working-pixel box on the brightest working pixel (a model whose answer is known)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.roi_heads = SimpleNamespace(score_thresh=0.05)
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


def test_iter_detections_maps_to_original_pixels(tmp_path):
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
    dets = list(iter_detections(model, spec, iter(paths), batch_size=2, score_thresh=0.3))
    assert [d.subject_id for d in dets] == ["a", "b", "c"]
    assert model.roi_heads.score_thresh == 0.3 and set(model.seen_shapes) == {(3, 40, 40)}
    for d in dets:
        x, y = truth[d.subject_id]
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


def test_embeddings_and_mc_dropout():
    torch.manual_seed(0)
    model = build_model(make_spec("resnet18", image_size=64, box_dropout=0.5)).eval()
    ims = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    emb = embed_tensors(model, ims)
    assert emb.shape == (2, 512) and np.isfinite(emb).all() and not np.allclose(emb[0], emb[1])
    set_score_threshold(model, 0.0)
    a = detect_tensors(model, ims[:1])[0]
    b = detect_tensors(model, ims[:1])[0]
    assert torch.equal(a["scores"], b["scores"])  # deterministic in eval
    assert enable_mc_dropout(model)
    c = detect_tensors(model, ims[:1])[0]
    d = detect_tensors(model, ims[:1])[0]
    assert not torch.equal(c["scores"], d["scores"])  # dropout stays on through detect_tensors
    assert not model.backbone.training
    plain = build_model(make_spec("resnet18", image_size=64))
    assert not enable_mc_dropout(plain)
