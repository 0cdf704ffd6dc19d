"""The row rules (circles, both rectangle forms, shapes without a point), the workflows export, and the real
exports of other projects read end to end."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from clumptool.aggregation.export import ReadOptions, read_export
from clumptool.aggregation.rules import Problem, RowFields, mark_centre, read_mark, read_row
from clumptool.aggregation.workflows import read_workflows
from clumptool.common.errors import ClumptoolError

SIZES = [(400.0, 300.0)]


def _real_exports() -> Path:
    """``shared/data/real-exports`` beside the checkout (one folder further up for a git worktree)."""
    root = Path(__file__).resolve().parents[2]
    for base in (root.parent, root.parent.parent):
        if (base / "shared" / "data" / "real-exports").is_dir():
            return base / "shared" / "data" / "real-exports"
    pytest.skip("the real exports (shared/data/real-exports) are not beside this checkout")


# --- one mark ------------------------------------------------------------------------------------------------


def test_a_circle_counts_by_its_centre_only_when_its_tool_is_named():
    circle = {"x": 100.0, "y": 50.0, "r": 12.0, "angle": 0, "tool": 2, "frame": 0}
    assert read_mark(circle, SIZES, {2}) == (0, 2, 100.0, 50.0)
    problem = read_mark(circle, SIZES, None)
    assert isinstance(problem, Problem) and problem.reason == "not a point mark"
    assert problem.message == "tool 2 (circle)" and problem.quiet


def test_old_rectangles_give_the_centre_of_their_corner_and_size():
    rect = {"x": 100.0, "y": 50.0, "width": 40.0, "height": 20.0, "tool": 1, "frame": 0}
    assert mark_centre(rect, "rectangle") == (120.0, 60.0)
    assert read_mark(rect, SIZES, {1}) == (0, 1, 120.0, 60.0)
    assert read_mark(rect, SIZES, None).message == "tool 1 (rectangle)"


def test_new_rectangles_give_their_centre_as_it_is():
    rect = {"x_center": 100.0, "y_center": 50.0, "width": 40.0, "height": 20.0, "toolIndex": 0,
            "toolType": "rectangle", "frame": 0}
    assert read_mark(rect, SIZES, {0}) == (0, 0, 100.0, 50.0)
    no_type = {k: v for k, v in rect.items() if k != "toolType"}  # known by its keys as well
    assert read_mark(no_type, SIZES, {0}) == (0, 0, 100.0, 50.0)


def test_a_rectangle_without_a_usable_size_or_a_centre_outside_is_named():
    bad = read_mark({"x": 10.0, "y": 10.0, "width": None, "height": 5.0, "tool": 0}, SIZES, {0})
    assert bad.reason == "missing or NaN coordinates" and "width=None" in bad.message
    outside = read_mark({"x": 390.0, "y": 10.0, "width": 40.0, "height": 5.0, "tool": 0}, SIZES, {0})
    assert outside.reason == "outside the image" and "(410.0, 12.5)" in outside.message


@pytest.mark.parametrize("mark, shape", [
    ({"points": [{"x": 1, "y": 2}], "tool": 3}, "polygon"),
    ({"toolType": "freehandLine", "pathX": [1, 2], "pathY": [3, 4], "toolIndex": 0}, "freehandLine"),
    ({"x1": 1, "y1": 2, "x2": 3, "y2": 4, "tool": 1}, "line"),
    ({"x": 5.0, "tool": 1}, "line (x only)"),
    ({"toolType": "bezier", "points": [], "toolIndex": 2}, "bezier"),
])
def test_shapes_without_a_point_are_not_point_marks_per_tool_even_when_named(mark, shape):
    problem = read_mark(mark, SIZES, {0, 1, 2, 3})
    assert problem.reason == "not a point mark" and shape in problem.message


def test_the_declared_tool_type_decides_the_shape_of_an_old_mark():
    mark = {"x": 100.0, "y": 50.0, "tool": 1}  # an old PFE mark: no type, no radius
    assert read_mark(mark, SIZES, None) == (0, 1, 100.0, 50.0)  # looks like a point
    assert read_mark(mark, SIZES, None, declared="circle").message == "tool 1 (circle)"
    assert read_mark(mark, SIZES, {1}, declared="circle") == (0, 1, 100.0, 50.0)


def test_one_row_to_its_clicks_and_problems():
    ann = [{"task": "T0", "value": "Yes"}, {"task": "T1", "value": [
        {"x": 10.0, "y": 20.0, "tool": 0, "frame": 0}, {"x": math.inf, "y": 1.0, "tool": 0},
        {"points": [], "tool": 2}]}]
    meta = {"subject_dimensions": [{"naturalWidth": 400, "naturalHeight": 300}]}
    fields = RowFields("7", "ann", "", "5", "1.2", "2020-01-01 00:00:00 UTC", json.dumps(meta), json.dumps(ann), "42")
    row = read_row(fields, task=None)
    assert row.ok and row.task == "T1" and row.subject_id == 42 and row.anonymous and row.user_key == "ann"
    assert row.clicks == [(0, 0, 10.0, 20.0)] and row.marks_read == 3 and row.sizes == [(400.0, 300.0)]
    assert [p.reason for p in row.problems] == ["missing or NaN coordinates", "not a point mark"]
    broken = read_row(fields._replace(annotations="[{"), task="T1")
    assert not broken.ok and broken.problems[0].reason == "broken JSON in annotations"


# --- the workflows export --------------------------------------------------------------------------------------

WORKFLOW_COLUMNS = ["workflow_id", "display_name", "version", "active", "classifications_count", "pairwise", "grouped",
                    "prioritized", "primary_language", "first_task", "tutorial_subject_id",
                    "retired_set_member_subjects_count", "tasks", "retirement", "aggregation", "strings",
                    "minor_version"]


def write_workflows(path: Path, workflow_id: int = 99999, versions=((11, 2), (12, 34))) -> Path:
    """A workflows export in Zooniverse's format: labels in ``strings``; the newest version has a circle tool."""
    rows = []
    for major, minor in versions:
        tools = [{"type": "point", "label": "T1.tools.0.label", "color": "#ff0000", "details": []},
                 {"type": "point" if major < 12 else "circle", "label": "T1.tools.1.label", "details": []},
                 {"type": "polygon", "label": "T1.tools.2.label", "details": []}]
        tasks = {"T0": {"help": "T0.help", "type": "single", "question": "T0.question",
                        "answers": [{"next": "T1", "label": "T0.answers.0.label"}, {"label": "T0.answers.1.label"}]},
                 "T1": {"help": "T1.help", "type": "drawing", "tools": tools, "instruction": "T1.instruction"}}
        strings = {"T0.question": "Is there a galaxy?", "T0.answers.0.label": "Yes", "T0.answers.1.label": "No",
                   "T1.instruction": "Mark the clumps", "T1.tools.0.label": "Normal clump",
                   "T1.tools.1.label": "Round clump", "T1.tools.2.label": "Outline"}
        rows.append([workflow_id, "Clump marking", major, "true", 100, "false", "false", "false", "en", "T0", "", 0,
                     json.dumps(tasks), json.dumps({"criteria": "classification_count", "options": {"count": 20}}),
                     "{}", json.dumps(strings), minor])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(WORKFLOW_COLUMNS)
        w.writerows(rows)
    return path


def test_workflows_export_gives_tool_types_and_labels_of_the_newest_version(tmp_path):
    tools = read_workflows(write_workflows(tmp_path / "workflows.csv"))
    assert {k: (t.type, t.label) for k, t in tools.items()} == {
        (99999, "T1", 0): ("point", "Normal clump"), (99999, "T1", 1): ("circle", "Round clump"),
        (99999, "T1", 2): ("polygon", "Outline")}


def test_a_classification_export_given_as_workflows_is_refused(export_builder, tmp_path):
    export_builder.add(1, "a", [(1, 1, 0)])
    with pytest.raises(ClumptoolError, match="not a Zooniverse workflows export.*--workflows"):
        read_workflows(export_builder.write(tmp_path / "e.csv"))


def _old_export(b):
    """Old-format rows (tool index only): tool 0 points, tool 1 marks drawn with a circle tool, tool 2 outlines."""
    for i, user in enumerate("abcd"):
        b.add(1, user, [(100.0 + i * 0.2, 100.0, 0), (200.0, 150.0 + i * 0.2, 1)])
    return b


def test_declared_circle_tools_are_not_points_unless_named(export_builder, tmp_path):
    path = _old_export(export_builder).write(tmp_path / "e.csv")
    workflows = write_workflows(tmp_path / "workflows.csv")
    guessed = read_export(path)  # without the workflows export, tool 1's marks look like points
    assert len(guessed.marks) == 8
    typed = read_export(path, ReadOptions(workflows=workflows))
    assert len(typed.marks) == 4 and set(typed.marks["tool"]) == {0}
    assert typed.report.non_point_marks == {"tool 1 (circle)": 4}
    assert typed.report.as_dict()["tools"]["1"] == {"type": "circle", "label": "Round clump"}
    named = read_export(path, ReadOptions(workflows=workflows, clump_tools=(0, 1)))
    assert len(named.marks) == 8


def test_labels_from_the_workflows_export_appear_in_the_listing(export_builder, tmp_path):
    path = _old_export(export_builder).write(tmp_path / "e.csv")
    workflows = write_workflows(tmp_path / "workflows.csv")
    with pytest.raises(ClumptoolError) as err:
        read_export(path, ReadOptions(workflows=workflows, workflow_id=5))
    assert 'tool 1 circle 4 "Round clump"' in str(err.value) and 'tool 0 point 4 "Normal clump"' in str(err.value)


# --- through the command line -----------------------------------------------------------------------------------


def _run(*args):
    from click.testing import CliRunner

    from clumptool.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_an_export_with_no_point_task_exits_2_listing_tasks_and_tool_types(export_builder, tmp_path):
    outline = {"task": "T1", "taskType": "drawing", "value": [
        {"frame": 0, "toolIndex": 0, "toolType": "polygon", "points": [{"x": 1, "y": 2}]},
        {"frame": 0, "toolIndex": 1, "toolType": "line", "x1": 1, "y1": 2, "x2": 3, "y2": 4}]}
    for user in "abc":
        export_builder.add(1, user, None, raw_annotations=json.dumps([{"task": "T0", "value": "Yes"}, outline]))
    r = _run("aggregate", export_builder.write(tmp_path / "e.csv"), "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert "none of the 6 marks" in r.output and "tool 0 (polygon) 3" in r.output and "tool 1 (line) 3" in r.output
    assert "task T0: question" in r.output and "tool 0 polygon 3" in r.output
    assert not (tmp_path / "o").exists()


def test_aggregate_with_a_workflows_export_names_the_tools(export_builder, tmp_path):
    path = _old_export(export_builder).write(tmp_path / "e.csv")
    workflows = write_workflows(tmp_path / "workflows.csv")
    r = _run("aggregate", path, "--workflows", workflows, "--clump-tools", "0,1", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert '0 point "Normal clump"' in r.output and '1 circle "Round clump"' in r.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["marks_used"] == 8 and summary["clumps_accepted"] == 2
    r = _run("aggregate", path, "--workflows", tmp_path / "nope.csv", "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "nope.csv: file not found" in r.output


# --- the real exports of other projects --------------------------------------------------------------------------


def test_real_mixed_export_fossil_finder_points_are_aggregated(tmp_path):
    path = shutil.copy(_real_exports() / "mixed-projects-classifications.csv", tmp_path)
    r = _run("aggregate", path, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "several workflows" in r.output and 'tool 4 point 2 "Claystone"' in r.output
    for task, marks in (("T1", 7), ("T3", 12)):
        r = _run("aggregate", path, "--workflow-id", "371", "--task", task, "--out", tmp_path / task)
        assert r.exit_code == 0, r.output
        summary = json.loads((tmp_path / task / "summary.json").read_text())
        assert summary["marks_used"] == marks and summary["classifications_used"] == 10
        assert summary["export"]["rows_skipped"] == {"other workflow": 153}
    # palm crowns drawn as circles: counted by their centres once the circle tools are named
    r = _run("aggregate", path, "--workflow-id", "3130", "--out", tmp_path / "c")
    assert r.exit_code == 2 and "tool 0 (circle) 16" in r.output and "--clump-tools" in r.output
    r = _run("aggregate", path, "--workflow-id", "3130", "--clump-tools", "0,1,2", "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["marks_used"] == 33


def test_real_cat_export_has_no_point_task(tmp_path):
    path = shutil.copy(_real_exports() / "cat-project-classifications.csv", tmp_path)
    r = _run("aggregate", path, "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert "no task with point marks" in r.output
    assert "tool 0 freehandLine 165" in r.output and "tool 1 polygon 19" in r.output
