"""The D4 symmetries keep a box on the same pixels of the transformed image, and invert exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clumptool.detection.symmetry import D4, apply_to_boxes, apply_to_image, inverse, invert_boxes


@pytest.mark.parametrize("k", D4)
def test_box_follows_its_pixels(k):
    h, w = 12, 20  # not square, so width/height swaps are exercised
    img = np.zeros((1, h, w))
    img[0, 3:5, 14:17] = 1.0  # rows 3-4, columns 14-16 -> box x 14..17, y 3..5
    box = np.array([[14.0, 3.0, 17.0, 5.0]])
    out = apply_to_image(img, k)
    tb = apply_to_boxes(box, k, w, h)[0]
    ys, xs = np.nonzero(out[0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(tb)


@pytest.mark.parametrize("k", D4)
def test_invert_undoes_apply(k):
    rng = np.random.default_rng(k)
    xy = rng.uniform(0, 30, (5, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 10, (5, 2))], axis=1)
    back = invert_boxes(apply_to_boxes(boxes, k, 40, 50), k, 40, 50)
    np.testing.assert_allclose(back, boxes)


@pytest.mark.parametrize("k", D4)
def test_torch_and_numpy_agree_and_inverse_restores(k):
    img = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    t = apply_to_image(img, k)
    np.testing.assert_array_equal(t.numpy(), apply_to_image(img.numpy(), k))
    assert torch.equal(apply_to_image(t, inverse(k)), img)


def test_eight_distinct_transforms():
    img = np.arange(16.0).reshape(1, 4, 4)
    assert len({apply_to_image(img, k).tobytes() for k in D4}) == 8
    with pytest.raises(ValueError):
        apply_to_image(img, 8)
