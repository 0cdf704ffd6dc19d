"""The 8 symmetries of a square galaxy image (the dihedral group D4) for images and boxes.

A galaxy has no preferred orientation on the sky, so the 4 rotations by 90 degrees, each with or without a
flip, are exact label-preserving transforms: training uses them as augmentation and active learning as
test-time augmentation (boxes predicted on a transformed image are mapped back with :func:`invert_boxes`).

Element ``k`` in ``range(8)``: first a horizontal flip if ``k >= 4``, then ``k % 4`` counter-clockwise
rotations by 90 degrees (``numpy.rot90`` convention on an image whose rows run down). ``k = 0`` is the
identity. Coordinates are continuous image pixels: x right, y down, origin at the top-left corner of the first
pixel, so a pixel ``(i, j)`` covers ``[j, j+1] x [i, i+1]``.
"""

from __future__ import annotations

import numpy as np
import torch

D4 = tuple(range(8))


def _check(k: int) -> int:
    if k not in D4:
        raise ValueError(f"symmetry index must be in 0..7, got {k}")
    return k


def apply_to_image(image: np.ndarray | torch.Tensor, k: int) -> np.ndarray | torch.Tensor:
    """Transform a channels-first image (C, H, W) (or a batch (..., H, W)) by element ``k``."""
    k = _check(k)
    if isinstance(image, torch.Tensor):
        out = torch.flip(image, dims=(-1,)) if k >= 4 else image
        return torch.rot90(out, k % 4, dims=(-2, -1)) if k % 4 else out
    out = np.flip(image, axis=-1) if k >= 4 else image
    out = np.rot90(out, k % 4, axes=(-2, -1)) if k % 4 else out
    return np.ascontiguousarray(out)


def _apply_points(x: np.ndarray, y: np.ndarray, k: int, width: float, height: float):
    """Map continuous points of a ``width`` x ``height`` image through element ``k``.

    Returns the new coordinates and the new image size (rotations by 90 degrees swap width and height).
    """
    if k >= 4:
        x = width - x
    for _ in range(k % 4):
        # one counter-clockwise rotation of the array (np.rot90): new row = (W - x), new col = y
        x, y = y, width - x
        width, height = height, width
    return x, y, width, height


def apply_to_boxes(boxes: np.ndarray, k: int, width: float, height: float) -> np.ndarray:
    """Map ``[x1, y1, x2, y2]`` boxes on the untransformed image to the image transformed by ``k``."""
    k = _check(k)
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    xa, ya, _, _ = _apply_points(b[:, 0], b[:, 1], k, width, height)
    xb, yb, _, _ = _apply_points(b[:, 2], b[:, 3], k, width, height)
    return np.stack([np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb)], axis=1)


def inverse(k: int) -> int:
    """The element that undoes ``k`` (flips are their own inverse; rotations by r undo with 4 - r)."""
    k = _check(k)
    return k if k >= 4 else (4 - k) % 4


def invert_boxes(boxes: np.ndarray, k: int, width: float, height: float) -> np.ndarray:
    """Map boxes found on the image transformed by ``k`` back to the untransformed image.

    ``width`` and ``height`` are those of the *untransformed* image.
    """
    k = _check(k)
    # size of the transformed image
    tw, th = (height, width) if k % 2 else (width, height)
    return apply_to_boxes(boxes, inverse(k), tw, th)
