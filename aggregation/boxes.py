"""Clicks and consensus centres -> square boxes for the detector.

Clump Scout's rule (aggregation-reference §3.1): a click becomes a square of side 2.5 x the PSF FWHM in
image pixels, centred on the click. This module is the one place that rule lives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_BOX_SCALE = 2.5
DEFAULT_BOX_SIZE = 16.6  # median side of the real Clump Scout boxes (pixels of the 400 px image)
BOX_COLUMNS = ("subject_id", "x1", "y1", "x2", "y2", "label", "score", "image_width", "image_height")


def square_boxes(x: np.ndarray, y: np.ndarray, side: np.ndarray | float) -> np.ndarray:
    """Return an (n, 4) array of ``[x1, y1, x2, y2]`` squares of side ``side`` centred on (x, y)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    half = np.broadcast_to(np.asarray(side, dtype=float) / 2.0, x.shape)
    return np.stack([x - half, y - half, x + half, y + half], axis=-1)


def box_sides(
    fwhm_px: np.ndarray | None, n: int, box_scale: float = DEFAULT_BOX_SCALE, box_size: float = DEFAULT_BOX_SIZE
) -> np.ndarray:
    """Side per box: ``box_scale`` x FWHM where the FWHM is known (finite, > 0), else ``box_size``."""
    if box_scale <= 0 or box_size <= 0:
        raise ValueError("box_scale and box_size must be positive")
    if fwhm_px is None:
        return np.full(n, float(box_size))
    fwhm = np.asarray(fwhm_px, dtype=float)
    known = np.isfinite(fwhm) & (fwhm > 0)
    return np.where(known, box_scale * np.where(known, fwhm, 0.0), float(box_size))


def clumps_to_boxes(
    clumps: pd.DataFrame,
    fwhm_by_subject: pd.Series | None = None,
    box_scale: float = DEFAULT_BOX_SCALE,
    box_size: float = DEFAULT_BOX_SIZE,
    drop_central: float = 0.0,
    fold_improbable: bool = False,
    improbable_threshold: float = 0.7,
) -> pd.DataFrame:
    """Consensus clumps -> one training box per clump (columns :data:`BOX_COLUMNS`).

    ``drop_central`` removes clumps within that many pixels of the image centre (bulge marks that slipped
    through, as the paper's notebooks did). ``fold_improbable`` relabels clumps with
    ``false_pos_prob > improbable_threshold`` as odd (label 2), the convention of the paper's training set.
    ``score`` is the consensus confidence ``1 - false_pos_prob``.
    """
    if len(clumps) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in BOX_COLUMNS}).astype(
            {"subject_id": "int64", "label": "int64"}
        )
    c = clumps
    if drop_central > 0:
        dx = c["x"] - c["image_width"] / 2.0
        dy = c["y"] - c["image_height"] / 2.0
        c = c[np.hypot(dx, dy) > drop_central]
    fwhm = None
    if fwhm_by_subject is not None:
        fwhm = c["subject_id"].map(fwhm_by_subject).to_numpy(dtype=float)
    sides = box_sides(fwhm, len(c), box_scale, box_size)
    xyxy = square_boxes(c["x"].to_numpy(), c["y"].to_numpy(), sides)
    label = c["label"].to_numpy(dtype="int64").copy()
    fpp = c["false_pos_prob"].to_numpy(dtype=float)
    if fold_improbable:
        label[fpp > improbable_threshold] = 2
    return pd.DataFrame(
        {
            "subject_id": c["subject_id"].to_numpy(dtype="int64"),
            "x1": xyxy[:, 0],
            "y1": xyxy[:, 1],
            "x2": xyxy[:, 2],
            "y2": xyxy[:, 3],
            "label": label,
            "score": 1.0 - fpp,
            "image_width": c["image_width"].to_numpy(dtype=float),
            "image_height": c["image_height"].to_numpy(dtype=float),
        }
    )
