"""The simulated volunteers' classifications of galaxies that ``select-next-batch`` uploaded as new subjects.

Uploaded to Zooniverse, a galaxy becomes a new subject: a new id, metadata carrying ``#galaxy_id`` and, when
its cutout was downscaled or cropped to fit the byte limit, ``#cutout_scale`` etc. (:mod:`clumptool.common.
metadata`). The simulator already holds its volunteers' classifications of every galaxy, under the simulated
subject id and in the original image's pixels. This module rewrites them as the workflow's export would show
them for the uploaded subject: the new ``subject_ids`` and ``subject_data``, the marks and the image's natural
size in the uploaded image's pixels (so that aggregation's :mod:`clumptool.aggregation.frames` maps them back).
A loop that selects, uploads, fetches the new classifications and aggregates them can then be run end to end
against a fake Zooniverse (the demo). Pure: tables in, table out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clumptool.aggregation.frames import cutout_frame, to_cutout_pixels
from clumptool.aggregation.replay import queue_rank
from clumptool.common.errors import ClumptoolError


@dataclass(frozen=True)
class UploadedSubject:
    """One uploaded galaxy as Zooniverse holds it: the subject id, the simulated galaxy (its id in the
    simulated project), the subject's metadata and the uploaded image's size in pixels."""

    subject_id: int
    galaxy_id: int
    width: int
    height: int
    metadata: dict = field(default_factory=dict)


def _marks_to_cutout(annotations: str, frame: tuple[float, float, float, float], width: int,
                     height: int) -> str:
    """The annotations JSON with every point mark in the cutout's pixels; marks outside the cutout (a crop)
    are dropped, as nobody could have clicked them there."""
    tasks = json.loads(annotations)
    for task in tasks:
        value = task.get("value")
        if not isinstance(value, list):
            continue
        marks = [m for m in value if isinstance(m, dict) and "x" in m and "y" in m]
        if not marks:
            continue
        xs, ys = to_cutout_pixels(np.array([m["x"] for m in marks]), np.array([m["y"] for m in marks]), frame)
        inside = (xs >= 0) & (xs <= width) & (ys >= 0) & (ys <= height)
        for m, x, y in zip(marks, xs, ys, strict=True):
            m["x"], m["y"] = round(float(x), 3), round(float(y), 3)
        dropped = {id(m) for m, ok in zip(marks, inside, strict=True) if not ok}
        task["value"] = [m for m in value if id(m) not in dropped]
    return json.dumps(tasks, separators=(",", ":"))


def _natural_size(metadata: str, width: int, height: int) -> str:
    meta = json.loads(metadata)
    for dims in meta.get("subject_dimensions") or []:
        if isinstance(dims, dict):
            dims["naturalWidth"], dims["naturalHeight"] = width, height
    return json.dumps(meta, separators=(",", ":"))


def classifications_of_uploaded(export: pd.DataFrame, uploaded: list[UploadedSubject],
                                first: int | None = None) -> pd.DataFrame:
    """The rows of ``export`` (a simulated project's classification export, as strings) for the uploaded
    galaxies, rewritten for their new subjects (module docstring); with ``first``, only each galaxy's first
    ``first`` classifications in the export's order (the volunteers who have seen it so far).

    Classification ids are kept (the simulator's are unique over the whole project). A galaxy the export
    does not hold is an error naming it."""
    if first is not None and first < 1:
        raise ClumptoolError(f"first={first}: give at least 1 classification per galaxy (or None for all)")
    by_galaxy = {str(u.galaxy_id): u for u in uploaded}
    if len(by_galaxy) != len(uploaded):
        raise ClumptoolError("the uploaded subjects name one galaxy twice")
    keep = export["subject_ids"].astype(str).isin(by_galaxy.keys()).to_numpy()
    rows = export[keep].copy()
    missing = sorted(by_galaxy.keys() - set(rows["subject_ids"].astype(str)))
    if missing:
        raise ClumptoolError(f"galaxies {', '.join(missing)} were uploaded but the simulated export has no "
                             "classification of them; give the export of the project they were simulated in")
    if first is not None:
        rows = rows[queue_rank(rows) < first]
    out = rows.copy()
    subjects, data, annotations, metadata = [], [], [], []
    for gid, ann, meta in zip(rows["subject_ids"].astype(str), rows["annotations"], rows["metadata"], strict=True):
        u = by_galaxy[gid]
        frame = cutout_frame(u.metadata, u.subject_id)
        subjects.append(str(u.subject_id))
        data.append(json.dumps({str(u.subject_id): {"retired": None, **u.metadata}}, separators=(",", ":")))
        annotations.append(_marks_to_cutout(ann, frame, u.width, u.height))
        metadata.append(_natural_size(meta, u.width, u.height))
    out["subject_ids"], out["subject_data"] = subjects, data
    out["annotations"], out["metadata"] = annotations, metadata
    return out.reset_index(drop=True)
