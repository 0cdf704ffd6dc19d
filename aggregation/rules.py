"""The Zooniverse row rules: one export row's fields -> the clicks it holds and the problems it has (pure).

This is the only place that decides what a usable mark is (aggregation-reference §2.4):

* both front ends: old PFE marks carry ``tool`` (and no type: the shape is known from the workflows export,
  or else from the mark's keys), new FEM marks carry ``toolIndex`` and ``toolType``;
* a point counts as a click; a circle (centre ``x, y``), a rectangle (old PFE ``x, y`` = corner plus
  ``width, height``; FEM ``x_center, y_center``) or an ellipse counts by its centre only when its tool is
  named as a clump tool; any other shape (polygon, line, freehand, bezier...) is "not a point mark";
* coordinates must be finite natural-image pixels inside the frame's ``subject_dimensions``;
* a classification with no marks still counts: it is a viewer.

Nothing here reads files or keeps state; :mod:`clumptool.aggregation.export` applies it to every row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from clumptool.common.ids import subject_id_text

POINT_LIKE = ("point", "circle", "rectangle", "ellipse")  # shapes with a centre: usable as a click when named
SHAPE_KEYS = (("points", "polygon"), ("pathX", "freehandLine"), ("x_center", "rectangle"), ("width", "rectangle"),
              ("rx", "ellipse"), ("r", "circle"), ("x1", "line"), ("x2", "line"))

# (workflow_id, task, tool index) -> (tool type, label), from the workflows export (clumptool.aggregation.workflows)
ToolTypes = Mapping[tuple[int, str, int], tuple[str, str]]


@dataclass(frozen=True)
class Problem:
    """Why a row or mark is not used: ``reason`` is the counter key, ``message`` names the field's value.

    ``quiet`` problems are expected (another workflow or tool, a shape that is not a point) and are only
    counted; the others are also listed as examples, and ``--strict`` makes them fatal.
    """

    kind: str  # "row" or "mark"
    reason: str
    field: str
    message: str
    quiet: bool = False
    tool: int | None = None
    shape: str | None = None


class RowFields(NamedTuple):
    """The fields of an export row that the rules read, as text (the export's column names)."""

    classification_id: str
    user_name: str
    user_id: str
    workflow_id: str
    workflow_version: str
    created_at: str
    metadata: str
    annotations: str
    subject_ids: str


@dataclass(slots=True)
class Row:
    """What one row holds once the rules are applied (``ok`` False: the row is skipped, see ``problems``)."""

    classification_id: object
    ok: bool = False
    workflow_id: int = 0
    workflow_version: str = ""
    subject_id: int = 0
    user_key: str = ""
    user_name: str = ""
    anonymous: bool = False
    created_at: str = ""
    clicks: list[tuple[int, int, float, float]] = field(default_factory=list)  # (frame, tool, x, y)
    sizes: list[tuple[float, float]] = field(default_factory=list)  # natural (width, height) per frame
    marks_read: int = 0
    task: str | None = None
    problems: list[Problem] = field(default_factory=list)


def is_number(v: object) -> bool:
    """A finite int or float (JSON ``true`` is not a coordinate)."""
    kind = type(v)
    return (kind is float or kind is int or (isinstance(v, (int, float)) and not isinstance(v, bool))) and \
        math.isfinite(v)


def frame_sizes(metadata: dict) -> list[tuple[float, float]]:
    """Natural (width, height) of each frame from ``subject_dimensions``; NaN where not given."""
    sizes = []
    for d in metadata.get("subject_dimensions") or []:
        d = d if isinstance(d, dict) else {}
        w, h = d.get("naturalWidth"), d.get("naturalHeight")
        sizes.append((float(w) if is_number(w) else math.nan, float(h) if is_number(h) else math.nan))
    return sizes


def mark_tool(mark: dict) -> object:
    tool = mark.get("tool")
    return mark.get("toolIndex") if tool is None else tool


def mark_shape(mark: dict, declared: str | None = None) -> str:
    """The shape a mark was drawn with: FEM's ``toolType``, the workflows export's tool type, or its keys."""
    tool_type = mark.get("toolType") or declared
    if tool_type:
        return str(tool_type)
    for key, shape in SHAPE_KEYS:
        if key in mark:
            return shape
    has_x, has_y = "x" in mark, "y" in mark
    if has_x and has_y:
        return "point"
    if has_x or has_y:
        return "line (x only)" if has_x else "line (y only)"
    return "unknown shape"


def mark_centre(mark: dict, shape: str) -> tuple[object, object]:
    """The click a mark stands for: (x, y) of a point, circle or ellipse; the centre of a rectangle.

    Rectangles come in two forms: FEM ``x_center, y_center`` (already the centre) and PFE ``x, y`` (the
    top-left corner) plus ``width, height``. Values are returned unchecked; a corner-form rectangle with a
    side that is not a number gives ``None`` for that axis.
    """
    if shape != "rectangle":
        return mark.get("x"), mark.get("y")
    if "x_center" in mark or "y_center" in mark:
        return mark.get("x_center"), mark.get("y_center")
    x, y, w, h = mark.get("x"), mark.get("y"), mark.get("width"), mark.get("height")
    return (x + w / 2 if is_number(x) and is_number(w) else None,
            y + h / 2 if is_number(y) and is_number(h) else None)


def read_mark(mark: dict, sizes: list[tuple[float, float]], tools: set[int] | None,
              declared: str | None = None) -> tuple[int, int, float, float] | Problem:
    """One mark -> its click ``(frame, tool, x, y)``, or the :class:`Problem` that makes it unusable.

    ``tools``: the tools named as clump tools (``None``: every point tool); ``declared``: the tool's type in
    the workflows export, if known.
    """
    tool = mark_tool(mark)
    shape = mark_shape(mark, declared)
    if shape != "point" and not (tools is not None and tool in tools and shape in POINT_LIKE):
        return Problem("mark", "not a point mark", "annotations", f"tool {tool} ({shape})", quiet=True,
                       tool=tool if type(tool) is int else None, shape=shape)
    if type(tool) is not int:
        return Problem("mark", "no tool index", "annotations",
                       f"mark without a tool index: {json.dumps(mark)[:120]}")
    if tools is not None and tool not in tools:
        return Problem("mark", "other tool", "annotations", f"tool {tool}", quiet=True, tool=tool)
    x, y = mark_centre(mark, shape)
    if not (is_number(x) and is_number(y)):
        given = {k: mark.get(k) for k in ("x", "y", "x_center", "y_center", "width", "height", "r") if k in mark}
        return Problem("mark", "missing or NaN coordinates", "annotations",
                       f"{shape} mark with " + (", ".join(f"{k}={v!r}" for k, v in given.items()) or "no x, y"),
                       tool=tool)
    frame = mark.get("frame") or 0
    if type(frame) is not int or frame < 0:
        return Problem("mark", "bad frame", "annotations", f"frame {frame!r}", tool=tool)
    if sizes and frame >= len(sizes):
        return Problem("mark", "frame that does not exist", "annotations",
                       f"mark on frame {frame}; the subject has {len(sizes)} frame(s)", tool=tool)
    w, h = sizes[frame] if frame < len(sizes) else (math.nan, math.nan)
    if x < 0 or y < 0 or (math.isfinite(w) and x > w) or (math.isfinite(h) and y > h):
        size = f"the {w:g}x{h:g} image" if math.isfinite(w) and math.isfinite(h) else "the image"
        return Problem("mark", "outside the image", "annotations",
                       f"mark ({x:.1f}, {y:.1f}) outside {size} (frame {frame})", tool=tool)
    return frame, tool, float(x), float(y)


_SHAPE_KEY_SET = frozenset(key for key, _ in SHAPE_KEYS)


def plain_point(mark: dict, sizes: list[tuple[float, float]], tools: set[int] | None
                ) -> tuple[int, int, float, float] | None:
    """The common case of :func:`read_mark` (without declared tool types) in one step: a point mark with float
    coordinates inside its frame gives the same click; ``None`` for anything else (then read_mark decides)."""
    tool, x, y = mark.get("tool"), mark.get("x"), mark.get("y")
    if tool is None:
        tool = mark.get("toolIndex")
    frame = mark.get("frame") or 0
    if type(x) is not float or type(y) is not float or type(tool) is not int or type(frame) is not int:
        return None
    tool_type = mark.get("toolType")
    if (tool_type != "point" if tool_type else not _SHAPE_KEY_SET.isdisjoint(mark)) or \
            (tools is not None and tool not in tools) or frame < 0 or (sizes and frame >= len(sizes)):
        return None
    w, h = sizes[frame] if frame < len(sizes) else (math.nan, math.nan)
    if not (math.isfinite(x) and math.isfinite(y) and x >= 0 and y >= 0 and (x <= w or not math.isfinite(w))
            and (y <= h or not math.isfinite(h))):
        return None
    return frame, tool, x, y


def _is_drawing_value(value: object) -> bool:
    return isinstance(value, list) and all(map(dict.__instancecheck__, value))  # a list of mark objects


def find_drawing_task(annotations: list) -> str | None:
    """The id of the first task holding point-like marks (dicts with x and y), or ``None``."""
    for task in annotations:
        if not isinstance(task, dict):
            continue
        value = task.get("value")
        if task.get("taskType") == "drawing" or (
            _is_drawing_value(value) and any("x" in m and "y" in m for m in value)
        ):
            return task.get("task")
    return None


def first_drawing_task(workflow_ids: list[str], annotations: list[str], workflow_id: int | None) -> str | None:
    """The drawing task of the first row (of ``workflow_id``, if given) whose annotations hold one."""
    for wf, text in zip(workflow_ids, annotations, strict=True):
        if workflow_id is not None and wf != str(workflow_id):
            continue
        value = _json_problem("annotations", text)
        if isinstance(value, list) and (task := find_drawing_task(value)) is not None:
            return task
    return None


def task_marks(annotations: list, task: str) -> list[dict]:
    """All mark dicts of ``task``; FEM may split one task over several annotation entries."""
    marks: list[dict] = []
    for entry in annotations:
        if isinstance(entry, dict) and entry.get("task") == task and "markIndex" not in entry:
            value = entry.get("value")
            if _is_drawing_value(value):
                marks.extend(value)
    return marks


_raw_decode = json.JSONDecoder().raw_decode


def _json_problem(fld: str, text: str) -> Problem | object:
    try:
        value, end = _raw_decode(text)
        if end == len(text):
            return value
    except json.JSONDecodeError:
        pass
    try:  # anything but one bare JSON value (blanks around it, trailing data, broken): json.loads' verdict
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return Problem("row", f"broken JSON in {fld}", fld, f"broken JSON ({exc.msg} at char {exc.pos})")


def read_row(fields: RowFields, *, task: str | None, tools: set[int] | None = None,
             workflow_id: int | None = None, tool_types: ToolTypes | None = None,
             sizes: list[tuple[float, float]] | None = None) -> Row:
    """Apply every rule to one row of the export.

    ``task``: the drawing task (``None``: the first task of this row holding point-like marks, returned in
    ``Row.task``); ``workflow_id``: rows of other workflows are skipped (quietly); ``sizes``: the frame sizes
    when the caller has already read them from ``metadata`` (else the metadata JSON is parsed here).
    """
    cid_s = fields.classification_id
    try:
        row = Row(int(cid_s))
    except ValueError:
        row = Row(cid_s or "?")
        if cid_s == "classification_id":  # files concatenated with their headers: harmless, counted
            row.problems.append(Problem("row", "repeated header line (files concatenated with their headers?)",
                                        "classification_id", "", quiet=True))
        else:
            row.problems.append(Problem("row", "bad classification_id", "classification_id", "not an integer"))
        return row
    skip = row.problems.append
    wf_s, version, sids = fields.workflow_id, fields.workflow_version, fields.subject_ids
    try:
        row.workflow_id = int(wf_s)
    except ValueError:
        skip(Problem("row", "bad workflow_id", "workflow_id", f"not an integer: {wf_s!r}"))
        return row
    if not version.replace(".", "").isdigit():  # e.g. a row cut short: it must not pick the version
        skip(Problem("row", "bad workflow_version", "workflow_version", f"not a version number like 12.34: {version!r}"))
        return row
    row.workflow_version = version
    if workflow_id is not None and row.workflow_id != workflow_id:
        skip(Problem("row", "other workflow", "workflow_id", "", quiet=True))
        return row
    if ";" in sids:
        skip(Problem("row", "multi-subject classification", "subject_ids",
                     f"several subjects ({sids}); not a point-marking classification of one image"))
        return row
    # the one id rule: "123.0" (a spreadsheet's) is 123, as in every other table; plain digits need no more
    sid_text = sids if sids.isdigit() else subject_id_text(sids)
    if sid_text is None or not sid_text.lstrip("+-").isdigit():
        skip(Problem("row", "bad subject_ids", "subject_ids", f"not an integer subject id: {sids!r}"))
        return row
    row.subject_id = int(sid_text)
    annotations = _json_problem("annotations", fields.annotations)
    if isinstance(annotations, Problem):
        skip(annotations)
        return row
    if sizes is None:
        meta_s = fields.metadata
        metadata = _json_problem("metadata", meta_s) if meta_s else {}
        if isinstance(metadata, Problem):
            skip(metadata)
            return row
    else:
        metadata = {}
    if not isinstance(annotations, list) or not isinstance(metadata, dict):
        skip(Problem("row", "unexpected JSON shape", "annotations" if not isinstance(annotations, list) else "metadata",
                     "unexpected JSON shape (annotations must be a list, metadata an object)"))
        return row
    row.sizes = frame_sizes(metadata) if sizes is None else sizes
    row.task = task if task is not None else find_drawing_task(annotations)
    if row.task is not None:
        marks = task_marks(annotations, row.task)
        row.marks_read = len(marks)
        for mark in marks:
            click = None if tool_types else plain_point(mark, row.sizes, tools)
            if click is None:
                declared = None
                if tool_types:
                    declared = tool_types.get((row.workflow_id, row.task, mark_tool(mark)), (None,))[0]
                click = read_mark(mark, row.sizes, tools, declared)
            if type(click) is tuple:
                row.clicks.append(click)
            else:
                row.problems.append(click)
    uid, uname = fields.user_id, fields.user_name
    row.user_key, row.user_name, row.anonymous = uid or uname, uname, uid == ""
    row.created_at = fields.created_at
    row.ok = True
    return row
