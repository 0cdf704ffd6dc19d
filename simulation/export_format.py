"""Write simulated clicks as a Zooniverse classification export, exactly in the real format.

14 columns; ``metadata``, ``annotations`` and ``subject_data`` are JSON strings (CSV-quoted, inner quotes
doubled by the csv module). The older classifications use the old front end's marks (``tool``, ``tool_label``);
the newest share (``fem_fraction``) use the new front end's (``toolIndex``, ``toolType``, ``taskType``,
``classifier_version: 2.0``), as in a project that lived through the front-end migration.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime, timedelta, timezone
from typing import TextIO

import numpy as np
import pandas as pd

from clumptool.common.atomic import atomic_path
from clumptool.simulation.config import SimulationConfig
from clumptool.simulation.volunteers import ClickBatch, Population

EXPORT_COLUMNS = (
    "classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
    "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
    "subject_data", "subject_ids",
)
WORKFLOW_NAME = "Clump Scout (simulated)"
T0_LABEL = "Is there a galaxy in the centre of the image?"
T1_LABEL = "Mark the clumps"
TOOL_LABELS = ("Normal clump", "Odd clump")
START = datetime(2019, 11, 1, tzinfo=timezone.utc)


def workflow_definition(config: SimulationConfig) -> dict:
    """The workflow as a Zooniverse workflow export row holds it (tasks and strings as objects)."""
    major, _, minor = config.workflow_version.partition(".")
    return {
        "workflow_id": config.workflow_id, "display_name": WORKFLOW_NAME, "version": int(major),
        "minor_version": int(minor or 0), "active": True, "first_task": "T0", "primary_language": "en",
        "tasks": {
            "T0": {"help": "T0.help", "type": "single", "answers": [{"next": "T1", "label": "T0.answers.0.label"},
                                                                    {"label": "T0.answers.1.label"}],
                   "question": "T0.question", "required": True},
            "T1": {"help": "T1.help", "type": "drawing", "instruction": "T1.instruction",
                   "tools": [{"type": "point", "color": "#00ff00", "label": "T1.tools.0.label", "details": []},
                             {"type": "point", "color": "#ff9900", "label": "T1.tools.1.label", "details": []}]},
        },
        "strings": {"T0.question": T0_LABEL, "T0.answers.0.label": "Yes", "T0.answers.1.label": "No",
                    "T1.instruction": T1_LABEL, "T1.tools.0.label": TOOL_LABELS[0],
                    "T1.tools.1.label": TOOL_LABELS[1], "T0.help": "", "T1.help": ""},
        "retirement": {"criteria": "classification_count", "options": {"count": config.volunteers_per_subject}},
    }


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def classification_rows(batch: ClickBatch, pop: Population, subject_data: dict[int, str], config: SimulationConfig,
                        rng: np.random.Generator) -> pd.DataFrame:
    """The export as a DataFrame of strings, ordered by classification_id (= by time).

    An extra column ``_row`` (not written) keeps each classification's row in ``batch.classifications``.
    """
    cls = batch.classifications
    n = len(cls)
    # time order: originals in random order, repeats after them
    order = np.lexsort((rng.random(n), cls["repeat"].to_numpy()))
    gaps = rng.exponential(20.0, n)
    seconds = np.empty(n)
    seconds[order] = np.cumsum(gaps)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    fem = rank >= int(round(n * (1 - config.volunteer_model.fem_fraction)))
    marks = batch.marks
    starts = np.searchsorted(marks["row"].to_numpy(), np.arange(n + 1))
    mx, my, mt = marks["x"].to_numpy(), marks["y"].to_numpy(), marks["tool"].to_numpy()
    vt = pop.table
    names, uids, ips = vt["user_name"].to_numpy(), vt["user_id"].to_numpy(), vt["user_ip"].to_numpy()
    size = config.image_size
    dims = json.dumps([{"clientWidth": 500, "clientHeight": 500, "naturalWidth": size, "naturalHeight": size}],
                      separators=(",", ":"))
    sessions = rng.integers(0, 2**63, n)
    durations = rng.uniform(8, 120, n)
    out_meta, out_ann, created = [], [], []
    sids = cls["subject_id"].to_numpy()
    vols = cls["volunteer"].to_numpy()
    for i in range(n):
        t_end = START + timedelta(seconds=float(seconds[i]))
        t_start = t_end - timedelta(seconds=float(durations[i]))
        sl = slice(starts[i], starts[i + 1])
        xs, ys, ts = np.round(mx[sl], 3).tolist(), np.round(my[sl], 3).tolist(), mt[sl].tolist()
        if fem[i]:
            value = [{"frame": 0, "toolIndex": t, "toolType": "point", "x": x, "y": y, "details": [],
                      "tool_label": TOOL_LABELS[t]} for x, y, t in zip(xs, ys, ts, strict=True)]
            ann = [{"task": "T0", "task_label": T0_LABEL, "taskType": "single", "value": "Yes"},
                   {"task": "T1", "task_label": T1_LABEL, "taskType": "drawing", "value": value}]
            version = ',"classifier_version":"2.0"'
        else:
            value = [{"x": x, "y": y, "tool": t, "frame": 0, "details": [], "tool_label": TOOL_LABELS[t]}
                     for x, y, t in zip(xs, ys, ts, strict=True)]
            ann = [{"task": "T0", "task_label": T0_LABEL, "value": "Yes"},
                   {"task": "T1", "task_label": T1_LABEL, "value": value}]
            version = ""
        already = "true" if cls["repeat"].iat[i] else "false"
        out_meta.append(
            f'{{"source":"api","session":"{sessions[i]:016x}","viewport":{{"width":1715,"height":1064}},'
            f'"started_at":"{_iso(t_start)}","finished_at":"{_iso(t_end)}","user_language":"en",'
            f'"subject_flagged":false{version},"subject_dimensions":{dims},'
            f'"subject_selection_state":{{"retired":false,"already_seen":{already},"selection_state":"normal",'
            f'"finished_workflow":false,"user_has_finished_workflow":false}},'
            f'"workflow_version":"{config.workflow_version}"}}'
        )
        out_ann.append(json.dumps(ann, separators=(",", ":")))
        created.append(_ts(t_end))
    df = pd.DataFrame({
        "classification_id": (config.first_classification_id + rank).astype(str),
        "user_name": names[vols], "user_id": uids[vols], "user_ip": ips[vols],
        "workflow_id": str(config.workflow_id), "workflow_name": WORKFLOW_NAME,
        "workflow_version": config.workflow_version, "created_at": created, "gold_standard": "", "expert": "",
        "metadata": out_meta, "annotations": out_ann,
        "subject_data": [subject_data[int(s)] for s in sids], "subject_ids": sids.astype(str),
    })
    df["_rank"] = rank
    df["_row"] = np.arange(n)  # the classification's row in the batch (for marks_truth.csv)
    return df.sort_values("_rank").drop(columns="_rank").reset_index(drop=True)


def write_records(df: pd.DataFrame, fh: TextIO) -> None:
    """The export's header and rows into a text stream (QUOTE_MINIMAL: JSON fields quoted, inner quotes
    doubled; ``\\n`` line ends, as Zooniverse writes them), in chunks so big exports stay cheap."""
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(EXPORT_COLUMNS)
    buf = io.StringIO()
    bw = csv.writer(buf, lineterminator="\n")
    cols = [df[c].tolist() for c in EXPORT_COLUMNS]
    for start in range(0, len(df), 20000):
        buf.seek(0)
        buf.truncate()
        bw.writerows(zip(*(c[start:start + 20000] for c in cols), strict=True))
        fh.write(buf.getvalue())


def write_export(df: pd.DataFrame, target: str | os.PathLike) -> None:
    """Write the export CSV atomically."""
    with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        write_records(df, fh)


def export_bytes(df: pd.DataFrame) -> bytes:
    """The bytes :func:`write_export` would write (what a fake Zooniverse serves as its export)."""
    buf = io.StringIO()
    write_records(df, buf)
    return buf.getvalue().encode("utf-8")
