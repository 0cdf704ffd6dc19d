"""Builders of small Zooniverse classification exports for the aggregation tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from clumptool.aggregation.export import EXPORT_COLUMNS


class ExportBuilder:
    """Write classification rows in the exact Zooniverse export format (both front-end forms)."""

    def __init__(self, workflow_id: int = 99999, version: str = "12.34", size: int = 400):
        self.rows: list[dict] = []
        self.workflow_id = workflow_id
        self.version = version
        self.size = size
        self._next_id = 1000

    def add(self, subject_id: int, user: str | None, marks: list[tuple[float, float, int]] | None,
            fem: bool = False, anonymous: bool = False, workflow_id: int | None = None,
            version: str | None = None, created_at: str | None = None, frames: int = 1, raw_annotations=None,
            raw_metadata=None, **overrides) -> int:
        self._next_id += 1
        cid = self._next_id
        marks = marks or []
        if fem:
            value = [{"frame": m[3] if len(m) > 3 else 0, "toolIndex": m[2], "toolType": "point",
                      "x": m[0], "y": m[1], "details": []} for m in marks]
            ann = [{"task": "T0", "task_label": "Is there a galaxy in the centre of the image?", "value": "Yes"},
                   {"task": "T1", "taskType": "drawing", "value": value}]
            classifier = "2.0"
        else:
            value = [{"x": m[0], "y": m[1], "tool": m[2], "frame": m[3] if len(m) > 3 else 0, "details": [],
                      "tool_label": ["Normal clump", "Odd clump"][m[2]] if m[2] in (0, 1) else "Other"}
                     for m in marks]
            ann = [{"task": "T0", "task_label": "Is there a galaxy in the centre of the image?", "value": "Yes"},
                   {"task": "T1", "task_label": "Mark the clumps", "value": value}]
            classifier = "1.0"
        meta = {"source": "api", "classifier_version": classifier,
                "subject_dimensions": [{"clientWidth": 500, "clientHeight": 500, "naturalWidth": self.size,
                                        "naturalHeight": self.size}] * frames}
        name = f"not-logged-in-{abs(hash(user)) % 10**8:08x}" if anonymous else user
        row = {
            "classification_id": cid, "user_name": name, "user_id": "" if anonymous else str(abs(hash(user)) % 10**6),
            "user_ip": "ddf0c9028b1ece89e3b1", "workflow_id": workflow_id or self.workflow_id,
            "workflow_name": "Clump marking", "workflow_version": version or self.version,
            "created_at": created_at or f"2019-11-01 00:{(cid // 60) % 60:02d}:{cid % 60:02d} UTC",
            "gold_standard": "", "expert": "",
            "metadata": raw_metadata if raw_metadata is not None else json.dumps(meta),
            "annotations": raw_annotations if raw_annotations is not None else json.dumps(ann),
            "subject_data": json.dumps({str(subject_id): {"retired": None, "#fwhmImagePix": 5.0}}),
            "subject_ids": str(subject_id),
        }
        row.update(overrides)
        self.rows.append(row)
        return cid

    def write(self, path: Path, columns=EXPORT_COLUMNS) -> Path:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            w.writeheader()
            for r in self.rows:
                w.writerow(r)
        return path


def simulate_crowd(rng: np.random.Generator, n_subjects: int = 60, n_volunteers: int = 80,
                   per_subject: int = 20, size: int = 400):
    """A small crowd with known truth: clumps, volunteer skills, clicks. Returns (builder, truth, skills)."""
    b = ExportBuilder(size=size)
    p_det = rng.uniform(0.5, 0.95, n_volunteers)
    fp_rate = rng.uniform(0.0, 0.5, n_volunteers)
    scatter = rng.uniform(1.0, 3.0, n_volunteers)
    spammer = np.zeros(n_volunteers, bool)
    spammer[:3] = True
    truth = []
    for s in range(n_subjects):
        sid = 5000 + s
        k = rng.poisson(1.5)
        pts = []
        while len(pts) < k:
            p = rng.uniform(size * 0.3, size * 0.7, 2)
            if all(np.hypot(*(p - q)) > 12 for q, _ in pts):
                pts.append((p, int(rng.random() < 0.2)))
        for p, odd in pts:
            truth.append((sid, p[0], p[1], odd + 1))
        for v in rng.choice(n_volunteers, per_subject, replace=False):
            marks = []
            if spammer[v]:
                marks = [(*rng.uniform(0, size, 2), 0) for _ in range(rng.poisson(3))]
            else:
                for p, odd in pts:
                    if rng.random() < p_det[v]:
                        tool = odd if rng.random() > 0.2 else 1 - odd
                        marks.append((*np.clip(p + rng.normal(0, scatter[v], 2), 0, size), tool))
                marks += [(*rng.uniform(size * 0.2, size * 0.8, 2), 0) for _ in range(rng.poisson(fp_rate[v]))]
            b.add(sid, f"vol{v}", [(float(x), float(y), int(t)) for x, y, t in marks], fem=bool(v % 3 == 0))
    return b, truth, {"p_fn": 1 - p_det, "spammer": spammer}
