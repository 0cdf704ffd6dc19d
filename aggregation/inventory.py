"""What an export holds: workflows, their tasks and tools with types and counts (for messages that help).

When ``aggregate`` has nothing to work on (no task with point marks, a named task or tool that does not
occur, every mark unusable) the user needs to see what the file *does* hold to choose ``--workflow-id``,
``--task`` and ``--clump-tools``. This reads the export's workflow and annotation columns once more; it
runs only on those failure paths, never on the reader's hot path.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pandas as pd

from clumptool.aggregation.rules import ToolTypes, mark_shape, mark_tool

MAX_LISTED_WORKFLOWS = 12
HOW_TO_CHOOSE = ("choose with --workflow-id W, --task T and --clump-tools I,J (tools that marked clumps; circles, "
                 "rectangles and ellipses are used by their centre when named in --clump-tools)")


@dataclass
class TaskInfo:
    """One task of one workflow: its kind, in how many classifications, and its marks by (tool, shape)."""

    kinds: Counter = field(default_factory=Counter)
    classifications: int = 0
    marks: Counter = field(default_factory=Counter)  # (tool, shape) -> marks
    labels: dict = field(default_factory=dict)  # tool -> label (the workflows export's, else the marks' tool_label)

    @property
    def kind(self) -> str:
        if self.marks or self.kinds.get("drawing"):
            return "drawing"
        named = [k for k in self.kinds if k != "empty"]
        if named:
            return "/".join(sorted(named))
        return "drawing or multiple choice, always empty"

    def tools(self) -> set[int]:
        return {t for t, _ in self.marks if isinstance(t, int)}


@dataclass
class WorkflowInfo:
    name: str = ""
    rows: int = 0
    versions: Counter = field(default_factory=Counter)
    tasks: dict = field(default_factory=lambda: defaultdict(TaskInfo))


def _value_kind(entry: dict) -> str:
    task_type = entry.get("taskType")
    value = entry.get("value")
    if task_type:
        return "drawing" if task_type == "drawing" else str(task_type)
    if isinstance(value, list):
        if not value:
            return "empty"
        if all(isinstance(m, dict) for m in value):
            if any("choice" in m for m in value):
                return "survey"
            if any(k in m for m in value for k in ("tool", "toolIndex", "x", "y", "points", "pathX")):
                return "drawing"
            return "list of objects"
        return "question (multiple choice)"
    if isinstance(value, dict):
        return "object"
    return "question"


def tally(workflow_ids, names, versions, annotations, tool_types: ToolTypes | None = None) -> dict[int | str, WorkflowInfo]:
    """Workflows -> tasks -> kinds and (tool, shape) counts, from the raw columns (pure, for tests).

    ``tool_types`` (from the workflows export) gives each tool's type and label where the marks do not.
    """
    tool_types = tool_types or {}
    out: dict = defaultdict(WorkflowInfo)
    for wf_s, name, version, text in zip(workflow_ids, names, versions, annotations, strict=True):
        try:
            wf = int(wf_s)
        except (TypeError, ValueError):
            wf = str(wf_s)
        info = out[wf]
        info.name = info.name or str(name or "")
        info.rows += 1
        info.versions[str(version)] += 1
        try:
            entries = json.loads(text)
        except (TypeError, ValueError):
            continue
        if not isinstance(entries, list):
            continue
        seen = set()
        for entry in entries:
            if not isinstance(entry, dict) or "markIndex" in entry:
                continue
            task = str(entry.get("task"))
            t = info.tasks[task]
            t.kinds[_value_kind(entry)] += 1
            if task not in seen:
                t.classifications += 1
                seen.add(task)
            value = entry.get("value")
            if isinstance(value, list):
                for mark in value:
                    if isinstance(mark, dict) and "choice" not in mark:
                        tool = mark_tool(mark)
                        declared, label = tool_types.get((wf, task, tool), (None, None))
                        t.marks[(tool, mark_shape(mark, declared))] += 1
                        if tool not in t.labels and (label or mark.get("tool_label")):
                            t.labels[tool] = str(label or mark.get("tool_label"))
    return dict(out)


def read_inventory(path: str | os.PathLike, tool_types: ToolTypes | None = None,
                   chunksize: int = 50_000) -> dict[int | str, WorkflowInfo]:
    """:func:`tally` over an export file (the reader has accepted it before, so it parses)."""
    header = pd.read_csv(path, nrows=0, encoding="utf-8").columns
    cols = [c for c in ("workflow_id", "workflow_name", "workflow_version", "annotations") if c in header]
    merged: dict = {}
    with pd.read_csv(path, usecols=cols, dtype=object, keep_default_na=False, chunksize=chunksize,
                     encoding="utf-8") as reader:
        for chunk in reader:
            names = chunk["workflow_name"] if "workflow_name" in chunk else [""] * len(chunk)
            for wf, info in tally(chunk["workflow_id"], names, chunk["workflow_version"],
                                  chunk["annotations"], tool_types).items():
                if wf not in merged:
                    merged[wf] = info
                    continue
                m = merged[wf]
                m.rows += info.rows
                m.versions.update(info.versions)
                for task, t in info.tasks.items():
                    mt = m.tasks[task]
                    mt.kinds.update(t.kinds)
                    mt.classifications += t.classifications
                    mt.marks.update(t.marks)
                    for tool, label in t.labels.items():
                        mt.labels.setdefault(tool, label)
    return merged


def describe_task(task: str, t: TaskInfo) -> str:
    """``task T1: drawing in 40 classifications, 16 marks: tool 0 point 9 "Normal clump", tool 1 circle 7``."""
    text = f"task {task}: {t.kind} in {t.classifications:,} classification(s)"
    if t.marks:
        tools = ", ".join(f"tool {tool} {shape} {n:,}" + (f" \"{t.labels[tool]}\"" if tool in t.labels else "")
                          for (tool, shape), n in sorted(t.marks.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])))
        text += f", {sum(t.marks.values()):,} marks: {tools}"
    return text


def describe(inventory: dict, workflow_id: int | None = None) -> str:
    """The workflows (or one of them) with their versions, tasks and tools, one task per line."""
    lines = []
    items = sorted(inventory.items(), key=lambda kv: (isinstance(kv[0], str), kv[0] if isinstance(kv[0], int) else 0,
                                                      str(kv[0])))
    if workflow_id is not None:
        items = [(wf, info) for wf, info in items if wf == workflow_id] or items
    for wf, info in items[:MAX_LISTED_WORKFLOWS]:
        versions = ", ".join(sorted(info.versions))
        name = f" \"{info.name}\"" if info.name else ""
        lines.append(f"  workflow {wf}{name}: {info.rows:,} rows, version(s) {versions}")
        for task, t in sorted(info.tasks.items()):
            lines.append(f"    {describe_task(task, t)}")
        if not info.tasks:
            lines.append("    no readable annotations")
    if len(items) > MAX_LISTED_WORKFLOWS:
        lines.append(f"  ... and {len(items) - MAX_LISTED_WORKFLOWS} more workflows")
    return "\n".join(lines)


def point_tasks(inventory: dict, workflow_id: int) -> list[str]:
    """Tasks of a workflow that hold point-like marks (what ``--task`` could name)."""
    info = inventory.get(workflow_id)
    if info is None:
        return []
    return [task for task, t in sorted(info.tasks.items())
            if any(shape in ("point", "circle", "rectangle", "ellipse") for _, shape in t.marks)]
