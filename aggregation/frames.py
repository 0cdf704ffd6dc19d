"""Marks made on a downscaled or cropped cutout -> the original image's pixels.

``select-next-batch`` may shrink a galaxy's image to fit Zooniverse's 1 MiB limit (and could crop it); it
records the mapping in hidden subject metadata (``#cutout_scale``, ``#cutout_scale_y``, ``#cutout_x0``,
``#cutout_y0``: :mod:`clumptool.common.metadata`). Volunteers click in the uploaded image's pixels, so
before consensus every mark on such a subject is mapped back::

    x_original = x0 + x_uploaded / scale_x        y_original = y0 + y_uploaded / scale_y

and the frame sizes with it, so clumps, boxes, training and catalogues share the original frame. Subjects
without these keys are left exactly as they are. Pure: tables in, tables out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from clumptool.common.errors import ClumptoolError
from clumptool.common.metadata import (
    CUTOUT_KEYS,
    CUTOUT_SCALE,
    CUTOUT_SCALE_Y,
    CUTOUT_X0,
    CUTOUT_Y0,
    metadata_value,
)

FRAME_COLUMNS = ("subject_id", "scale_x", "scale_y", "x0", "y0")


def _number(value: object, subject_id: object, key: str, positive: bool) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or (positive and number <= 0):
        need = "a positive number" if positive else "a number"
        raise ClumptoolError(f"subject {subject_id}: subject_data #{key} is {value!r}, not {need}; fix the subject's "
                             f"metadata on Zooniverse (or remove #{key} if the image was uploaded unscaled)")
    return number


def cutout_frame(meta: Mapping[str, object], subject_id: object) -> tuple[float, float, float, float]:
    """(scale_x, scale_y, x0, y0) of one subject's metadata; (1, 1, 0, 0) without cutout keys (identity).

    A key that is not a usable number is an error naming the subject and the key."""
    sx = _number(metadata_value(meta, CUTOUT_SCALE, 1.0), subject_id, CUTOUT_SCALE, True)
    sy = _number(metadata_value(meta, CUTOUT_SCALE_Y, sx), subject_id, CUTOUT_SCALE_Y, True)
    x0 = _number(metadata_value(meta, CUTOUT_X0, 0.0), subject_id, CUTOUT_X0, False)
    y0 = _number(metadata_value(meta, CUTOUT_Y0, 0.0), subject_id, CUTOUT_Y0, False)
    return sx, sy, x0, y0


def to_cutout_pixels(x: np.ndarray, y: np.ndarray, frame: tuple[float, float, float, float]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Original-image pixels -> the uploaded cutout's pixels (the inverse of :func:`to_original_pixels`), e.g.
    to show simulated volunteers' marks as they would have clicked them on the uploaded image."""
    sx, sy, x0, y0 = frame
    return (np.asarray(x, dtype="float64") - x0) * sx, (np.asarray(y, dtype="float64") - y0) * sy


def cutout_frames(subject_data: pd.DataFrame) -> pd.DataFrame:
    """Per subject whose ``subject_data`` (the export's JSON column) carries cutout keys: its scales and offsets.

    Returns :data:`FRAME_COLUMNS`; subjects without any cutout key are not listed (identity).
    """
    rows = []
    for sid, text in zip(subject_data["subject_id"], subject_data["subject_data"], strict=True):
        if not isinstance(text, str) or "cutout_" not in text:  # most subjects: skip the JSON parse
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            continue
        meta = obj.get(str(sid)) if isinstance(obj, dict) else None
        if not isinstance(meta, dict) or all(metadata_value(meta, k) is None for k in CUTOUT_KEYS):
            continue
        frame = cutout_frame(meta, sid)
        if frame != (1.0, 1.0, 0.0, 0.0):
            rows.append((int(sid), *frame))
    return pd.DataFrame(rows, columns=list(FRAME_COLUMNS)).astype(
        {"subject_id": "int64", "scale_x": "float64", "scale_y": "float64", "x0": "float64", "y0": "float64"})


def to_original_pixels(marks: pd.DataFrame, frames: pd.DataFrame,
                       subject_data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``marks`` (x, y) and ``frames`` (image_width, image_height) of cutout subjects in original pixels.

    A crop offset moves marks but not the frame size: the frame then describes the cropped region's extent
    in original pixels (its width and height divided by the scale).
    """
    table = cutout_frames(subject_data)
    if len(table) == 0:
        return marks, frames
    marks, frames = marks.copy(), frames.copy()
    sid = marks["subject_id"].to_numpy()
    pos = pd.Index(table["subject_id"]).get_indexer(sid)
    hit = pos >= 0
    if hit.any():
        p = pos[hit]
        x, y = marks["x"].to_numpy(dtype="float64", copy=True), marks["y"].to_numpy(dtype="float64", copy=True)
        x[hit] = table["x0"].to_numpy()[p] + x[hit] / table["scale_x"].to_numpy()[p]
        y[hit] = table["y0"].to_numpy()[p] + y[hit] / table["scale_y"].to_numpy()[p]
        marks["x"], marks["y"] = x, y
    fpos = pd.Index(table["subject_id"]).get_indexer(frames["subject_id"].to_numpy())
    fhit = fpos >= 0
    if fhit.any():
        q = fpos[fhit]
        w = frames["image_width"].to_numpy(dtype="float64", copy=True)
        h = frames["image_height"].to_numpy(dtype="float64", copy=True)
        w[fhit] = w[fhit] / table["scale_x"].to_numpy()[q]
        h[fhit] = h[fhit] / table["scale_y"].to_numpy()[q]
        frames["image_width"], frames["image_height"] = w, h
    return marks, frames
