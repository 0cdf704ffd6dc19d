"""Is there anything to aggregate? Refuse clearly when the chosen task or tools hold no usable mark.

"marks read 0" with exit 0 and empty tables looks like a result (galaxies without clumps) when it is a
wrong choice of task or tool, or an export of another kind. So after reading: a task or tool that does not
occur, or marks that are all unusable, is an error listing what the export does hold and how to choose;
a task that occurs but on which volunteers marked nothing is a real, empty result and is said so.
"""

from __future__ import annotations

from clumptool.aggregation.export import ExportData, ReadOptions
from clumptool.aggregation.inventory import HOW_TO_CHOOSE, describe, point_tasks, read_inventory
from clumptool.common.errors import ClumptoolError

NOT_PARSE_REASONS = ("in classifications not used", "in dropped duplicate rows")  # marks fine in themselves


def _listing(path: str, workflow_id: int | None) -> str:
    inventory = read_inventory(path)
    return f"The export holds:\n{describe(inventory, workflow_id)}\n{HOW_TO_CHOOSE}"


def _tools_present(data: ExportData) -> set[int]:
    return set(data.marks["tool"].astype(int).tolist()) | set(data.report.dropped_tools)


def check_something_to_aggregate(data: ExportData, options: ReadOptions, odd_tools: tuple[int, ...] | None = None) -> str | None:
    """Raise :class:`ClumptoolError` when there is nothing to aggregate; return a note for an empty result.

    ``odd_tools`` are the tools the user named with ``--odd-tools`` (checked to occur), or ``None``.
    """
    rep = data.report
    path, wf, task = rep.path, rep.workflow_id, rep.task
    if task is None:
        info = read_inventory(path).get(wf)
        empty = [t for t, ti in sorted(info.tasks.items()) if not ti.marks and ti.kinds.get("empty")] if info else []
        hint = (f"If {' or '.join(empty)} is the clump-marking task and volunteers marked nothing, say so with "
                f"--task {empty[0]} (an empty result). " if empty else "")
        raise ClumptoolError(
            f"{path}: workflow {wf} has no task with point marks (nothing for aggregate to cluster). {hint}"
            + _listing(path, wf))
    if rep.marks_read == 0:
        inventory = read_inventory(path)
        info = inventory.get(wf)
        if info is None or task not in info.tasks:
            tasks = ", ".join(sorted(info.tasks)) if info else "none"
            raise ClumptoolError(
                f"{path}: task {task} (--task) does not occur in workflow {wf} (its tasks: {tasks}). "
                + _listing(path, wf))
        found = point_tasks(inventory, wf)
        kind = info.tasks[task].kind
        if kind not in ("drawing", "drawing or multiple choice, always empty"):
            raise ClumptoolError(
                f"{path}: task {task} of workflow {wf} is a {kind} task, not a drawing task; "
                + (f"tasks with point marks: {', '.join(found)}. " if found else "") + _listing(path, wf))
        return (f"volunteers marked nothing: task {task} holds no mark in the {len(data.classifications):,} "
                f"classifications used, so every subject has 0 clumps (a real result: check it is the task you meant)")
    tools = options.clump_tools
    present = _tools_present(data)
    if tools is not None:
        missing = [t for t in tools if t not in present]
        if missing:
            raise ClumptoolError(
                f"{path}: --clump-tools {','.join(map(str, tools))}: no mark of tool {', '.join(map(str, missing))} "
                f"in task {task} of workflow {wf}. " + _listing(path, wf))
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
        f"{per_tool}{f'; e.g. {example}' if example else ''}. {fix} " + _listing(path, wf))
