"""Tiny classification exports (and copies of real ones) for the robustness cases of ``clumptool aggregate``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from harness import interrupt_when, no_traceback, run_cli, snapshot  # noqa: E402,F401

# the shared data folder lies beside the checkout (../shared), in CI as on a developer's machine
# (a git worktree one level deeper, e.g. wt/NAME, finds it one folder further up)
REAL_EXPORTS = next((p / "shared" / "data" / "real-exports" for p in Path(__file__).resolve().parents[3:5]
                     if (p / "shared" / "data" / "real-exports").is_dir()),
                    Path(__file__).resolve().parents[3] / "shared" / "data" / "real-exports")
EXPORT_COLUMNS = (
    "classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
    "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
    "subject_data", "subject_ids",
)


def row(cid: int, subject_id: int, user: str, marks: list[tuple], *, fem: bool = True, version: str = "12.34",
        workflow_id: int = 99999, size: int = 400, frames: int = 1, task: str = "T1") -> dict:
    """One export row in Zooniverse's format; a mark is (x, y, tool[, frame])."""
    if fem:
        value = [{"frame": m[3] if len(m) > 3 else 0, "toolIndex": m[2], "toolType": "point", "x": m[0], "y": m[1],
                  "details": []} for m in marks]
        drawing = {"task": task, "taskType": "drawing", "value": value}
    else:
        value = [{"x": m[0], "y": m[1], "tool": m[2], "frame": m[3] if len(m) > 3 else 0, "details": []}
                 for m in marks]
        drawing = {"task": task, "value": value}
    ann = [{"task": "T0", "value": "Yes"}, drawing]
    meta = {"source": "api", "subject_dimensions": [{"naturalWidth": size, "naturalHeight": size}] * frames}
    return {
        "classification_id": cid, "user_name": user, "user_id": str(1000 + sum(map(ord, user))),
        "user_ip": "abc", "workflow_id": workflow_id, "workflow_name": "Clump marking", "workflow_version": version,
        "created_at": f"2019-11-01 00:{(cid // 60) % 60:02d}:{cid % 60:02d} UTC", "gold_standard": "", "expert": "",
        "metadata": json.dumps(meta), "annotations": json.dumps(ann),
        "subject_data": json.dumps({str(subject_id): {"retired": None, "#fwhmImagePix": 5.0}}),
        "subject_ids": str(subject_id),
    }


def clump_rows(n_subjects: int = 3, users: str = "abcd", start: int = 1000, **kw) -> list[dict]:
    """Every user marks the same two clumps (tool 0 and odd tool 1) on every subject."""
    rows, cid = [], start
    for s in range(n_subjects):
        for i, u in enumerate(users):
            cid += 1
            rows.append(row(cid, 100 + s, u, [(50.0 + s + i * 0.3, 60.0, 0), (200.0, 210.0 + i * 0.3, 1)], **kw))
    return rows


def write_export(path: Path, rows: list[dict], columns=EXPORT_COLUMNS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def small_export(path: Path, **kw) -> Path:
    return write_export(path, clump_rows(**kw))


def real_export(name: str, folder: Path) -> Path:
    """A copy of one of the real exports (never the original)."""
    target = folder / name
    shutil.copyfile(REAL_EXPORTS / name, target)
    return target


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))
