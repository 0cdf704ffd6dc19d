"""The Zooniverse *workflows export*: each drawing task's tools, with their types and labels.

Old front-end (PFE) marks carry only a tool index, so which tool is a point, a circle or a rectangle (and
what volunteers saw it called) is written only in the workflow's definition. Lab > Data Exports >
"Request new workflow export" gives a CSV with one row per workflow version: ``workflow_id``,
``display_name``, ``version``, ``minor_version``, ``tasks`` (JSON: ``{"T1": {"type": "drawing", "tools":
[{"type": "point", "label": "T1.tools.0.label"}, ...]}}``) and ``strings`` (JSON: the labels those keys
name; older exports put the label text in ``tasks`` itself).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clumptool.aggregation.csvcheck import check_file_kind, explain_parse_error, locate_non_utf8
from clumptool.common.errors import ClumptoolError, where

REQUIRED = ("workflow_id", "version", "tasks")


@dataclass(frozen=True)
class Tool:
    """One tool of a drawing task."""

    workflow_id: int
    task: str
    index: int
    type: str
    label: str


def _version_key(version: str, minor: str) -> tuple[int, int]:
    try:
        return int(float(version or 0)), int(float(minor or 0))
    except ValueError:
        return 0, 0


def tools_of(tasks: dict, strings: dict, workflow_id: int) -> list[Tool]:
    """The drawing tools of one workflow version's ``tasks`` JSON, labels looked up in ``strings`` (pure)."""
    out = []
    for task, spec in tasks.items():
        if not isinstance(spec, dict):
            continue
        for i, tool in enumerate(spec.get("tools") or []):
            if not isinstance(tool, dict):
                continue
            label = str(tool.get("label") or "")
            out.append(Tool(workflow_id, str(task), i, str(tool.get("type") or "unknown"),
                            str(strings.get(label, label))))
    return out


def read_workflows(path: str | os.PathLike) -> dict[tuple[int, str, int], Tool]:
    """(workflow_id, task, tool index) -> :class:`Tool`, from the newest version of each workflow in the file."""
    path = Path(path)
    check_file_kind(path, "workflows export")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise locate_non_utf8(path) from None
    except pd.errors.ParserError as exc:
        raise explain_parse_error(path, exc) from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        hint = (" (this is a classification export: give it as the argument, and the workflows export with "
                "--workflows)" if "annotations" in df.columns else "")
        raise ClumptoolError(f"{path}: not a Zooniverse workflows export: missing column(s) {', '.join(missing)}"
                             f"{hint}; download it from the project's Lab > Data Exports (workflows export)")
    df["_key"] = [_version_key(v, m) for v, m in zip(df["version"], df.get("minor_version", [""] * len(df)),
                                                     strict=True)]
    newest = df.sort_values("_key", kind="stable").groupby("workflow_id", sort=False).tail(1)
    tools: dict[tuple[int, str, int], Tool] = {}
    for _, r in newest.iterrows():
        place = f"workflow_id {r['workflow_id']} version {r['version']}"
        try:
            wf = int(r["workflow_id"])
            tasks = json.loads(r["tasks"] or "{}")
            strings = json.loads(r.get("strings") or "{}")
        except (ValueError, json.JSONDecodeError) as exc:
            raise ClumptoolError(f"{where(path, place, 'tasks')}: unreadable ({exc}); download the workflows "
                                 "export again") from None
        if not isinstance(tasks, dict) or not isinstance(strings, dict):
            raise ClumptoolError(f"{where(path, place, 'tasks')}: expected JSON objects in tasks and strings; "
                                 "download the workflows export again")
        for tool in tools_of(tasks, strings, wf):
            tools[(tool.workflow_id, tool.task, tool.index)] = tool
    return tools
