"""Which classifications to aggregate, and is there anything to aggregate?

Choosing: the workflow (the only one, or ``--workflow-id``), its version (the newest, or ``--workflow-version``,
a major number meaning all its minor versions), rows sharing a classification_id (copies dropped, conflicts
refused or the last kept: :mod:`clumptool.aggregation.duplicates`) and repeat classifications of a subject by
one volunteer (the first by ``created_at`` kept).

Checking:
"marks read 0" with exit 0 and empty tables looks like a result (galaxies without clumps) when it is a
wrong choice of task or tool, or an export of another kind. So after reading: a task or tool that does not
occur, or marks that are all unusable, is an error listing what the export does hold and how to choose;
a task that occurs but on which volunteers marked nothing is a real, empty result and is said so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from clumptool.aggregation.duplicates import find_duplicate_rows
from clumptool.aggregation.galaxies import merge_subjects, newest_subject_of_galaxy
from clumptool.aggregation.inventory import HOW_TO_CHOOSE, describe, point_tasks, read_inventory
from clumptool.common.errors import ClumptoolError, where

if TYPE_CHECKING:
    from clumptool.aggregation.export import ExportData, ReadOptions, ReadReport

MAX_CONFLICT_EXAMPLES = 20

NOT_PARSE_REASONS = ("in classifications not used", "in dropped duplicate rows")  # marks fine in themselves


def _listing(report: ReadReport, workflow_id: int | None) -> str:
    inventory = read_inventory(report.path, report.tool_types)
    return f"The export holds:\n{describe(inventory, workflow_id)}\n{HOW_TO_CHOOSE}"


def newest_version(versions: Iterable[str]) -> str:
    """The newest of version strings like ``12.34`` (numerically: 12.10 is newer than 12.9)."""
    return max(versions, key=lambda v: tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in v.split(".")))


def choose_workflow(report: ReadReport, workflow_id: int | None) -> int:
    """The workflow to aggregate: ``workflow_id`` if it occurs, else the only one; else an error listing them."""
    path, seen = report.path, report.workflows_seen
    if workflow_id is not None:
        if workflow_id not in seen:
            raise ClumptoolError(
                f"{path}: workflow id {workflow_id} is not in this export (--workflow-id); it holds:\n"
                f"{describe(read_inventory(path, report.tool_types))}\nchoose one of these with --workflow-id")
        return workflow_id
    if not seen:
        if report.rows_read == 0:
            raise ClumptoolError(f"{path}: no readable classifications: the export has a header but no rows; download "
                                 "the export again once volunteers have classified (Zooniverse project Lab > Data Exports)")
        reasons = "; ".join(f"{n:,} {k}" for k, n in sorted(report.rows_skipped.items()))
        example = f" (e.g. {report.examples[0]['message']})" if report.examples else ""
        raise ClumptoolError(f"{path}: no readable classifications among {report.rows_read:,} rows: "
                             f"{reasons}{example}; check that this is a Zooniverse classification export")
    if len(seen) > 1:
        raise ClumptoolError(f"{path}: several workflows ({', '.join(map(str, sorted(seen)))}); choose one with "
                             f"--workflow-id. The export holds:\n{describe(read_inventory(path, report.tool_types))}")
    return next(iter(seen))


def choose_versions(report: ReadReport, workflow_id: int, wanted: str | None) -> set[str]:
    """The versions of the workflow to keep (the newest by default); records the label in ``report``."""
    versions = report.workflows_seen[workflow_id]
    report.workflow_id = workflow_id
    if wanted is None:
        report.workflow_version = newest_version(versions)
        return {report.workflow_version}
    chosen = {v for v in versions if v == wanted or ("." not in wanted and v.split(".")[0] == wanted)}
    if not chosen:
        raise ClumptoolError(
            f"{report.path}: workflow {workflow_id} has no version {wanted} (--workflow-version); its versions: "
            f"{', '.join(sorted(versions))} (give one of them, or the major number, e.g. 12 for all 12.x)")
    report.workflow_version = wanted
    return chosen


def drop_dupes_and_repeats(cls: pd.DataFrame, marks: pd.DataFrame, report: ReadReport, workflow_id: int,
                           versions: set[str], on_conflict: str, galaxy_of: dict[int, str] | None = None
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The classifications to aggregate, each row's clicks following it (``n_marks`` of them, in order).

    Rows sharing a classification_id first (copies dropped, conflicts refused or the last kept), then other
    workflows and versions, then repeat classifications of a subject by one volunteer (the first kept).
    ``galaxy_of`` (subject id -> galaxy id): the kept subjects of one galaxy become its newest
    (:mod:`clumptool.aggregation.galaxies`) before repeats are found, so a volunteer's second classification of the
    galaxy under another subject is a repeat too; ``shown_subject_id`` keeps the subject each volunteer saw.
    """
    path = report.path
    dups = find_duplicate_rows(path, cls["classification_id"].to_numpy(), on_conflict)
    if dups.drop.any():
        in_dropped = dups.drop[np.repeat(np.arange(len(cls)), cls["n_marks"].to_numpy())]
        if in_dropped.any():
            report.marks_dropped["in dropped duplicate rows"] += int(in_dropped.sum())
        marks = marks[~in_dropped].reset_index(drop=True)
        cls = cls[~dups.drop].reset_index(drop=True)
        report.duplicate_rows_dropped = dups.copies_dropped
        report.conflicting_rows_replaced = int(dups.drop.sum()) - dups.copies_dropped
        for cid, rows in dups.conflicts[:MAX_CONFLICT_EXAMPLES]:
            report.examples.append({
                "kind": "row", "classification_id": str(cid), "field": "classification_id",
                "message": f"{where(path, f'classification_id {cid}')}: different rows ({', '.join(map(str, rows))}) "
                           "share this id; the last was kept (--on-conflicting-duplicates keep-last)"})
    in_wf = cls["workflow_id"].to_numpy() == workflow_id
    keep_version = cls["workflow_version"].isin(versions).to_numpy()
    if (in_wf & ~keep_version).any():
        report.rows_skipped["other workflow version"] += int((in_wf & ~keep_version).sum())
    cls = cls[in_wf & keep_version]
    cls = cls.assign(shown_subject_id=cls["subject_id"])
    newest = newest_subject_of_galaxy(cls["subject_id"].to_numpy(), galaxy_of or {})
    if not newest.empty:
        cls["subject_id"] = merge_subjects(cls["subject_id"], newest)
        report.subjects_merged = int((newest.index.to_numpy() != newest.to_numpy()).sum())
    cls = cls.sort_values(["created_ns", "classification_id"], kind="stable")
    repeat = cls.duplicated(["user", "subject_id"], keep="first")
    same_subject = repeat if newest.empty else cls.duplicated(["user", "shown_subject_id"], keep="first")
    report.duplicates_dropped = int(same_subject.sum())
    report.galaxy_repeats_dropped = int((repeat & ~same_subject).sum())
    cls = cls[~repeat].sort_values("classification_id", kind="stable").reset_index(drop=True)
    report.rows_used = len(cls)
    return cls, marks


def _tools_present(data: ExportData) -> set[int]:
    return set(data.marks["tool"].astype(int).tolist()) | set(data.report.dropped_tools)


def check_something_to_aggregate(data: ExportData, options: ReadOptions, odd_tools: tuple[int, ...] | None = None) -> str | None:
    """Raise :class:`ClumptoolError` when there is nothing to aggregate; return a note for an empty result.

    ``odd_tools`` are the tools the user named with ``--odd-tools`` (checked to occur), or ``None``.
    """
    rep = data.report
    path, wf, task = rep.path, rep.workflow_id, rep.task
    if task is None:
        info = read_inventory(path, rep.tool_types).get(wf)
        empty = [t for t, ti in sorted(info.tasks.items()) if not ti.marks and ti.kinds.get("empty")] if info else []
        hint = (f"If {' or '.join(empty)} is the clump-marking task and volunteers marked nothing, say so with "
                f"--task {empty[0]} (an empty result). " if empty else "")
        raise ClumptoolError(
            f"{path}: workflow {wf} has no task with point marks (nothing for aggregate to cluster). {hint}"
            + _listing(rep, wf))
    if rep.marks_read == 0:
        inventory = read_inventory(path, rep.tool_types)
        info = inventory.get(wf)
        if info is None or task not in info.tasks:
            tasks = ", ".join(sorted(info.tasks)) if info else "none"
            raise ClumptoolError(
                f"{path}: task {task} (--task) does not occur in workflow {wf} (its tasks: {tasks}). "
                + _listing(rep, wf))
        found = point_tasks(inventory, wf)
        kind = info.tasks[task].kind
        if kind not in ("drawing", "drawing or multiple choice, always empty"):
            raise ClumptoolError(
                f"{path}: task {task} of workflow {wf} is a {kind} task, not a drawing task; "
                + (f"tasks with point marks: {', '.join(found)}. " if found else "") + _listing(rep, wf))
        return (f"volunteers marked nothing: task {task} holds no mark in the {len(data.classifications):,} "
                f"classifications used, so every subject has 0 clumps (a real result: check it is the task you meant)")
    tools = options.clump_tools
    present = _tools_present(data)
    if tools is not None:
        missing = [t for t in tools if t not in present]
        if missing:
            raise ClumptoolError(
                f"{path}: --clump-tools {','.join(map(str, tools))}: no mark of tool {', '.join(map(str, missing))} "
                f"in task {task} of workflow {wf}. " + _listing(rep, wf))
    if odd_tools:
        missing = [t for t in odd_tools if t not in present]
        if missing:
            raise ClumptoolError(
                f"{path}: --odd-tools {','.join(map(str, odd_tools))}: no mark of tool {', '.join(map(str, missing))} "
                f"in task {task} of workflow {wf} (tools there: {', '.join(map(str, sorted(present))) or 'none'}); "
                "name the tool volunteers used for odd clumps, or leave --odd-tools out")
    if rep.marks_used > 0:
        return None
    parse_dropped = {k: n for k, n in rep.marks_dropped.items() if not k.startswith(NOT_PARSE_REASONS)}
    usable_elsewhere = rep.marks_read - sum(parse_dropped.values())
    if usable_elsewhere > 0:
        if options.workflow_version is None:
            raise ClumptoolError(
                f"{path}: task {task} has no usable mark in version {rep.workflow_version} of workflow {wf} "
                f"(the newest); its {usable_elsewhere:,} usable marks are in other versions "
                f"({', '.join(sorted(set(rep.workflows_seen.get(wf, ())) - {rep.workflow_version}))}): choose them "
                "with --workflow-version "
                "(e.g. the major number for all its minor versions)")
        return (f"volunteers marked nothing in version {rep.workflow_version}: task {task} holds no usable mark in "
                f"the {len(data.classifications):,} classifications used, so every subject has 0 clumps")
    reasons = "; ".join(f"{n:,} {k}" for k, n in sorted(parse_dropped.items(), key=lambda kv: -kv[1]))
    per_tool = ""
    if rep.non_point_marks:
        per_tool = " (not point marks: " + ", ".join(
            f"{k} {n:,}" for k, n in sorted(rep.non_point_marks.items())) + ")"
    example = next((e["message"] for e in rep.examples if e["kind"] == "mark"), None)
    if set(parse_dropped) <= {"not a point mark", "other tool"}:
        fix = ("Name point tools (or circle/rectangle tools, used by their centre) with --clump-tools, or choose "
               "the task that holds the clump marks with --task.")
    else:
        fix = ("Fix those marks in the export (coordinates must be finite pixels inside the image, on a frame "
               "the subject has), or choose the task and tools that hold the clump marks.")
    raise ClumptoolError(
        f"{path}: none of the {rep.marks_read:,} marks of task {task} in workflow {wf} can be used: {reasons}"
        f"{per_tool}{f'; e.g. {example}' if example else ''}. {fix} " + _listing(rep, wf))
