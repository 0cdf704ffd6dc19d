"""Zooniverse classification export (CSV) -> tables of viewers and volunteer clicks.

The export has 14 columns; ``metadata``, ``annotations`` and ``subject_data`` hold JSON (aggregation-reference
§2). Three parts, one job each:

* what a usable row and mark is: :mod:`clumptool.aggregation.rules` (pure, one function per row);
* streaming the file as record batches on several cores: :mod:`clumptool.aggregation.batches`;
* which workflow, version and classifications to keep: :mod:`clumptool.aggregation.selection` (and rows
  sharing a ``classification_id``: :mod:`clumptool.aggregation.duplicates`).

This module ties them together and keeps only compact numeric columns per batch, so a Clump Scout-sized
export (1.74M rows) passes in bounded memory. Rows and marks that cannot be used are counted by reason in
:class:`ReadReport` (with the first examples, naming the classification_id and field), never dropped
silently; ``strict=True`` makes any of them fatal. A file that cannot be read at all (missing, empty,
compressed, not UTF-8, cut short, another kind of table) is refused with the row and field and the fix
(:mod:`clumptool.aggregation.csvcheck`).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from clumptool.aggregation.batches import (
    ShortRows,
    default_workers,
    frame_sizes,
    gc_paused,
    map_in_order,
    raise_csv_error,
    read_range,
    record_ranges,
)
from clumptool.aggregation.csvcheck import (
    DOWNLOAD_HINT,
    check_file_kind,
    check_last_row,
    locate_non_utf8,
    wrong_columns_hint,
)
from clumptool.aggregation.frames import to_original_pixels
from clumptool.aggregation.galaxies import galaxy_ids_in_subject_data, merge_subjects, newest_by_shown
from clumptool.aggregation.rules import Row, RowFields, ToolTypes, first_drawing_task, read_row
from clumptool.aggregation.selection import choose_versions, choose_workflow, drop_dupes_and_repeats
from clumptool.aggregation.workflows import read_workflows
from clumptool.common.errors import ClumptoolError, where
from clumptool.common.metadata import metadata_key

EXPORT_COLUMNS = (
    "classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
    "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
    "subject_data", "subject_ids",
)
REQUIRED_COLUMNS = (
    "classification_id", "user_name", "user_id", "workflow_id", "workflow_version", "created_at",
    "metadata", "annotations", "subject_ids",
)
MAX_EXAMPLES = 20
PARALLEL_MIN_BYTES = 32 << 20  # below this, starting worker processes costs more than it saves


@dataclass
class ReadReport:
    """What happened to every row and mark of the export (for the summary and for ``--strict``)."""

    path: str = ""
    rows_read: int = 0
    rows_used: int = 0
    rows_skipped: Counter = field(default_factory=Counter)
    marks_read: int = 0
    marks_used: int = 0
    marks_dropped: Counter = field(default_factory=Counter)
    duplicates_dropped: int = 0
    duplicate_rows_dropped: int = 0
    conflicting_rows_replaced: int = 0
    subjects_merged: int = 0  # earlier subjects of a galaxy read as its newest (aggregation/galaxies.py)
    galaxy_repeats_dropped: int = 0  # a volunteer's second classification of a galaxy, under another subject
    non_point_marks: Counter = field(default_factory=Counter)
    dropped_tools: Counter = field(default_factory=Counter)  # tool index -> marks not used (any reason)
    workflow_id: int | None = None
    workflow_version: str | None = None
    task: str | None = None
    workflows_seen: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)
    tool_types: dict = field(default_factory=dict)  # (workflow, task, tool) -> (type, label), from --workflows

    def problem(self, kind: str, classification_id: object, fld: str, message: str, strict: bool) -> None:
        """Record a problem with a row or mark; raise at once when ``strict``."""
        text = f"{where(self.path, f'classification_id {classification_id}', fld)}: {message}"
        if strict:
            raise ClumptoolError(text + " (--strict makes this fatal)")
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"kind": kind, "classification_id": str(classification_id), "field": fld,
                                  "message": text})

    def absorb(self, other: ReadReport) -> None:
        """Add the counts and examples of a report on another part of the same file."""
        self.rows_read += other.rows_read
        self.rows_used += other.rows_used
        self.rows_skipped.update(other.rows_skipped)
        self.marks_read += other.marks_read
        self.marks_used += other.marks_used
        self.marks_dropped.update(other.marks_dropped)
        self.non_point_marks.update(other.non_point_marks)
        self.dropped_tools.update(other.dropped_tools)
        for wf, versions in other.workflows_seen.items():
            self.workflows_seen.setdefault(wf, set()).update(versions)
        self.examples.extend(other.examples[: max(0, MAX_EXAMPLES - len(self.examples))])

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "rows_read": self.rows_read,
            "rows_used": self.rows_used,
            "rows_skipped": dict(self.rows_skipped),
            "duplicates_dropped": self.duplicates_dropped,
            "duplicate_rows_dropped": self.duplicate_rows_dropped,
            "conflicting_rows_replaced": self.conflicting_rows_replaced,
            "subjects_merged_into_their_galaxy": self.subjects_merged,
            "galaxy_repeats_dropped": self.galaxy_repeats_dropped,
            "marks_read": self.marks_read,
            "marks_used": self.marks_used,
            "marks_dropped": dict(self.marks_dropped),
            "non_point_marks": dict(self.non_point_marks),
            "workflow_id": self.workflow_id,
            "workflow_version": self.workflow_version,
            "task": self.task,
            "workflows_seen": {str(k): sorted(v) for k, v in self.workflows_seen.items()},
            "tools": {str(tool): {"type": kind, "label": label} for (wf, task, tool), (kind, label)
                      in sorted(self.tool_types.items()) if wf == self.workflow_id and task == self.task},
            "examples": self.examples,
        }


@dataclass
class ExportData:
    """The export as tables.

    ``classifications``: one row per kept classification (classification_id, subject_id, volunteer,
    created_at, workflow_version, n_marks, shown_subject_id: the subject the volunteer saw, where ``subject_id`` is
    its galaxy's newest subject; :mod:`clumptool.aggregation.galaxies`). ``marks``: one row per kept mark (classification_id,
    subject_id, volunteer, frame, tool, x, y). ``frames``: image size per (subject_id, frame).
    ``volunteers``: volunteer (dense int id) -> user_key, user_name, anonymous.
    """

    classifications: pd.DataFrame
    marks: pd.DataFrame
    frames: pd.DataFrame
    volunteers: pd.DataFrame
    subject_data: pd.DataFrame
    report: ReadReport


@dataclass(frozen=True)
class ReadOptions:
    """Which part of the export to read. ``None`` means: work it out from the file."""

    workflow_id: int | None = None
    workflow_version: str | None = None
    task: str | None = None
    clump_tools: tuple[int, ...] | None = None
    strict: bool = False
    on_conflicting_duplicates: str = "error"  # two different rows with one classification_id: or "keep-last"
    workflows: str | os.PathLike | None = None  # the workflows export: tool types and labels of each task
    workers: int | None = None  # processes applying the row rules; None: up to 2 for big files, 1 for small ones
    block_bytes: int = 8 << 20  # bytes of the file per record batch
    # the subjects of one galaxy (#galaxy_id, sent back by select-next-batch) read as its newest: one consensus
    merge_galaxies: bool = True


NO_TIME = np.iinfo("int64").max


@dataclass(frozen=True)
class _Rules:
    """What every batch needs to apply the row rules the same way (sent to the worker processes)."""

    path: str
    task: str | None
    tools: frozenset[int] | None
    workflow_id: int | None
    tool_types: ToolTypes | None
    strict: bool


@dataclass
class _Batch:
    """One record batch after the rules: compact columns, the report of its rows, the drawing task found."""

    cls: dict[str, np.ndarray]
    marks: dict[str, np.ndarray]
    frames: dict[str, np.ndarray]
    report: ReadReport
    task: str | None
    users: dict[str, np.ndarray]  # cls["user"] indexes these: user_key, user_name, anonymous
    versions: list[str]  # cls["version"] indexes these
    subject_data: dict[int, str]  # the first ``subject_data`` of each subject in the batch
    short_rows: ShortRows = field(default_factory=ShortRows)  # rows cut short, read last by the caller
    bytes_read: int = 0  # of the file, for the progress bar


def record(report: ReadReport, row: Row, strict: bool) -> None:
    """Count a row's problems by reason (and list the first examples; ``strict``: raise at the first)."""
    for p in row.problems:  # (the row's workflow version is recorded by the caller)
        if p.kind == "row":
            report.rows_skipped[p.reason] += 1
        else:
            report.marks_dropped[p.reason] += 1
            if p.tool is not None:
                report.dropped_tools[p.tool] += 1
            if p.reason == "not a point mark":
                report.non_point_marks[p.message] += 1
        if not p.quiet:
            report.problem(p.kind, row.classification_id, p.field, p.message, strict)


def _read_piece(rules: _Rules, header: list[str], columns: list[str], piece: tuple[int, int]) -> _Batch:
    """Worker job: parse one record-aligned piece of the file and apply the row rules to it."""
    table, short = read_range(rules.path, header, columns, piece)
    result = _apply_rules(rules, table)
    result.short_rows, result.bytes_read = short, piece[1]
    return result


@gc_paused()
def _apply_rules(rules: _Rules, batch: pa.Table | dict[str, list]) -> _Batch:
    """The row rules over one batch: viewers, clicks and frame sizes as numpy columns."""
    known = frame_sizes(batch.column("metadata")) if not isinstance(batch, dict) else None
    sizes = known.per_row() if known is not None else None
    cols = [batch[c] if isinstance(batch, dict) else
            [""] * batch.num_rows if c == "metadata" and sizes is not None else batch.column(c).to_pylist()
            for c in REQUIRED_COLUMNS]
    report = ReadReport(path=rules.path, rows_read=len(cols[0]))
    seen = report.workflows_seen
    task = rules.task
    rows: list[Row] = []
    used = []
    for i, values in enumerate(zip(*cols, strict=True)):
        row = read_row(RowFields._make(values), task=task, tools=rules.tools, workflow_id=rules.workflow_id,
                       tool_types=rules.tool_types, sizes=None if sizes is None else sizes[i])
        if row.workflow_version:
            seen.setdefault(row.workflow_id, set()).add(row.workflow_version)
        if row.problems:
            record(report, row, rules.strict)
        if row.ok:
            rows.append(row)
            used.append(i)
            task = task or row.task
    report.rows_used = len(rows)
    report.marks_read = sum(r.marks_read for r in rows)
    n_marks = np.fromiter((len(r.clicks) for r in rows), dtype="int32", count=len(rows))
    cls = {"classification_id": np.fromiter((r.classification_id for r in rows), dtype="int64", count=len(rows)),
           "subject_id": np.fromiter((r.subject_id for r in rows), dtype="int64", count=len(rows))}
    # volunteers and versions as codes into this batch's own small tables (re-coded when merged)
    cls["user"], user_keys = pd.factorize(np.array([r.user_key for r in rows], dtype=object))
    first = np.unique(cls["user"], return_index=True)[1]
    users = {"user_key": np.asarray(user_keys, dtype=object),
             "user_name": np.array([rows[i].user_name for i in first], dtype=object),
             "anonymous": np.array([rows[i].anonymous for i in first], dtype=bool)}
    cls["version"], versions = pd.factorize(np.array([r.workflow_version for r in rows], dtype=object))
    cls["workflow_id"] = np.fromiter((r.workflow_id for r in rows), dtype="int64", count=len(rows))
    cls["n_marks"] = n_marks
    cls["created_ns"] = created_ns([r.created_at for r in rows])
    clicks = np.array([c for r in rows for c in r.clicks], dtype="float64").reshape(-1, 4)
    marks = {"classification_id": np.repeat(cls["classification_id"], n_marks), "frame": clicks[:, 0].astype("int16"),
             "tool": clicks[:, 1].astype("int16"), "x": clicks[:, 2], "y": clicks[:, 3]}
    frames: list[tuple] = []
    last: dict[int, list] = {}  # frame sizes once per subject (most rows repeat their subject's)
    for r in rows:
        if last.get(r.subject_id) != r.sizes:
            last[r.subject_id] = r.sizes
            frames.extend((r.subject_id, f, w, h) for f, (w, h) in enumerate(r.sizes))
    table = np.array(frames, dtype="float64").reshape(-1, 4)
    return _Batch(cls=cls, marks=marks, report=report, task=task, users=users, versions=list(versions),
                  subject_data=_first_subject_data(batch, cls["subject_id"], used),
                  frames={"subject_id": table[:, 0].astype("int64"), "frame": table[:, 1].astype("int16"),
                          "image_width": table[:, 2], "image_height": table[:, 3]})


def _first_subject_data(batch: pa.Table | dict[str, list], subject_ids: np.ndarray, used: list[int]) -> dict[int, str]:
    """The ``subject_data`` text of each subject's first kept row (empty when the export has no such column)."""
    first = np.unique(subject_ids, return_index=True)[1]
    rows = np.asarray(used, dtype="int64")[first].tolist()
    if isinstance(batch, dict):
        texts = [batch["subject_data"][i] for i in rows] if "subject_data" in batch else None
    else:
        texts = batch.column("subject_data").take(pa.array(rows, pa.int64())).to_pylist() if "subject_data" in batch.column_names else None
    return {} if texts is None else dict(zip(subject_ids[first].tolist(), texts, strict=True))


def _short_rows_batch(texts: list[str], header: list[str]) -> dict[str, list]:
    """Rows cut short (fewer fields than the header) padded with empty fields, as a spreadsheet would read them."""
    cols: dict[str, list] = {c: [] for c in (*REQUIRED_COLUMNS, "subject_data")}
    for text in texts:
        fields = next(csv.reader([text]), [])
        fields += [""] * (len(header) - len(fields))
        for name, value in zip(header, fields, strict=False):
            if name in cols:
                cols[name].append(value)
        for name in cols:
            if name not in header:
                cols[name].append("")
    return cols


def read_export(
    path: str | os.PathLike,
    options: ReadOptions = ReadOptions(),
    progress: Callable[[int], None] | None = None,
) -> ExportData:
    """Stream a classification export and return its marks, viewers and image sizes as tables.

    Default workflow: the only one in the file (or ``options.workflow_id``); default version: the newest
    version of that workflow present in the file. ``progress`` is called with the number of bytes read.
    Batches are parsed in worker processes for big files; the tables are the same with any number of them.
    """
    path = Path(path)
    header = check_header(path)
    tool_types = None
    if options.workflows is not None:
        tool_types = {key: (t.type, t.label) for key, t in read_workflows(options.workflows).items()}
    workers = options.workers or default_workers(path, PARALLEL_MIN_BYTES)
    columns = [c for c in (*REQUIRED_COLUMNS, "subject_data") if c in header]
    rules = _Rules(str(path), options.task, frozenset(options.clump_tools) if options.clump_tools is not None else None,
                   options.workflow_id, tool_types, options.strict)
    report = ReadReport(path=str(path), tool_types=tool_types or {})
    parts: list[_Batch] = []
    subject_data: dict[int, str] = {}

    users: dict[str, int] = {}  # user_key -> volunteer code, in order of first appearance in the file
    names: list[str] = []
    anonymous: list[bool] = []
    versions: dict[str, int] = {}

    short: list[str] = []

    def keep(result: _Batch) -> None:
        """Merge a batch's result (its users and versions re-coded); remember each subject's first ``subject_data``."""
        if result.short_rows.broken:
            raise_csv_error(path, None)
        short.extend(result.short_rows.texts)
        batch_users = result.users
        codes = list(map(users.get, batch_users["user_key"]))  # most volunteers are known from earlier batches
        for i in [i for i, code in enumerate(codes) if code is None]:
            codes[i] = users[batch_users["user_key"][i]] = len(users)
            names.append(batch_users["user_name"][i])
            anonymous.append(bool(batch_users["anonymous"][i]))
        result.cls["user"] = np.asarray(codes, dtype="int64")[result.cls["user"]]
        result.cls["version"] = np.asarray([versions.setdefault(v, len(versions)) for v in result.versions],
                                           dtype="int32")[result.cls["version"]]
        parts.append(result)
        report.absorb(result.report)
        for sid, text in result.subject_data.items():
            subject_data.setdefault(sid, text)
        if progress is not None:
            progress(result.bytes_read)

    pieces = record_ranges(path, options.block_bytes)
    header_piece = next(pieces, (0, 0))
    if progress is not None:
        progress(header_piece[1])
    read = partial(_read_piece, rules, header, columns)
    try:
        first = next(pieces, None)
        if first is not None and rules.task is None:
            table = read_range(str(path), header, columns, first)[0]
            rules = replace(rules, task=first_drawing_task(table.column("workflow_id").to_pylist(),
                                                           table.column("annotations").to_pylist(),
                                                           options.workflow_id))
            read = partial(_read_piece, rules, header, columns)
        if first is not None:
            pieces = itertools.chain([first], pieces)
        for piece in pieces if rules.task is None else ():  # no drawing task in the first piece: look on, in order
            keep(read(piece))
            if parts[-1].task is not None:
                rules = replace(rules, task=parts[-1].task)
                read = partial(_read_piece, rules, header, columns)
                break
        for result in map_in_order(read, pieces, workers):
            keep(result)
    except pa.ArrowInvalid as exc:
        raise_csv_error(path, exc)
    if short:  # rows cut short, read last (the CSV reader hands them over aside)
        cols = _short_rows_batch(short, header)
        keep(_apply_rules(rules, cols))
    report.task = next((p.task for p in parts if p.task is not None), options.task)
    report.rows_used = 0
    volunteers = pd.DataFrame({"user_key": np.asarray(list(users), dtype=object),
                               "user_name": np.asarray(names, dtype=object), "anonymous": np.asarray(anonymous, bool)})
    return _finish(parts, subject_data, volunteers, list(versions), report, options)


def _concat(parts: list[dict[str, np.ndarray]], empty: dict[str, str]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({k: np.array([], dtype=t) for k, t in empty.items()})
    return pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def _finish(parts: list[_Batch], subject_data: dict[int, str], volunteers: pd.DataFrame, versions: list[str],
            report: ReadReport, options: ReadOptions) -> ExportData:
    cls = _concat([p.cls for p in parts], {"classification_id": "int64", "subject_id": "int64", "user": "int64",
                                           "version": "int32", "workflow_id": "int64", "n_marks": "int32",
                                           "created_ns": "int64"})
    marks = _concat([p.marks for p in parts], {"classification_id": "int64", "frame": "int16", "tool": "int16",
                                               "x": "float64", "y": "float64"})
    frames = _concat([p.frames for p in parts], {"subject_id": "int64", "frame": "int16", "image_width": "float64",
                                                 "image_height": "float64"})
    cls["workflow_version"] = np.asarray(versions or [""], dtype=object)[cls["version"].to_numpy()]
    wf = choose_workflow(report, options.workflow_id)
    chosen = choose_versions(report, wf, options.workflow_version)
    galaxy_of = None
    if options.merge_galaxies and subject_data:
        galaxy_of = galaxy_ids_in_subject_data(np.fromiter(subject_data.keys(), dtype="int64", count=len(subject_data)),
                                               list(subject_data.values()))
    cls, marks = drop_dupes_and_repeats(cls, marks, report, wf, chosen, options.on_conflicting_duplicates, galaxy_of)
    if cls.empty:  # e.g. every row's subject_ids unreadable: an empty consensus would look like a finished one
        reasons = "; ".join(f"{n:,} {k}" for k, n in sorted(report.rows_skipped.items()))
        example = f" (e.g. {report.examples[0]['message']})" if report.examples else ""
        raise ClumptoolError(f"{report.path}: no usable classifications of workflow {wf} (version "
                             f"{report.workflow_version}) among {report.rows_read:,} rows: {reasons}{example}; fix "
                             "those rows or download the export again (Zooniverse project Lab > Data Exports)")
    # volunteers numbered densely, in order of first appearance in the file
    present = np.zeros(len(volunteers), dtype=bool)
    present[cls["user"].to_numpy()] = True
    cls["volunteer"] = (np.cumsum(present) - 1)[cls["user"].to_numpy()].astype("int64")
    users = volunteers[present].reset_index(drop=True)
    users.insert(0, "volunteer", np.arange(len(users), dtype="int64"))
    created = cls["created_ns"].to_numpy()
    cls["created_at"] = pd.to_datetime(np.where(created == NO_TIME, np.datetime64("NaT", "ns"),
                                                 created.view("datetime64[ns]")), utc=True)
    cls = cls[["classification_id", "subject_id", "created_at", "workflow_version", "workflow_id", "n_marks",
               "volunteer", "shown_subject_id"]].reset_index(drop=True)

    n_parsed = len(marks)
    # marks and frames by the subject the volunteer saw (its cutout frame), then by the galaxy's subject
    marks = marks.merge(cls[["classification_id", "shown_subject_id", "volunteer"]], on="classification_id",
                        how="inner").rename(columns={"shown_subject_id": "subject_id"})
    if n_parsed > len(marks):
        report.marks_dropped["in classifications not used (repeats, other workflows/versions)"] += n_parsed - len(marks)
    report.marks_used = len(marks)
    shown_subjects = cls["shown_subject_id"].unique()
    frames = frames[frames["subject_id"].isin(shown_subjects)]
    frames = frames.groupby(["subject_id", "frame"], as_index=False).max()
    sd = pd.DataFrame({"subject_id": np.fromiter(subject_data.keys(), dtype="int64", count=len(subject_data)),
                       "subject_data": list(subject_data.values())})
    sd = sd[sd["subject_id"].isin(shown_subjects)].sort_values("subject_id").reset_index(drop=True)
    marks, frames = to_original_pixels(marks, frames, sd)  # marks on downscaled cutouts -> original pixels
    if report.subjects_merged:  # the galaxy's subjects as its newest (aggregation/galaxies.py)
        newest = newest_by_shown(cls)
        marks["subject_id"] = merge_subjects(marks["subject_id"], newest)
        frames["subject_id"] = merge_subjects(frames["subject_id"], newest)
        frames = frames.groupby(["subject_id", "frame"], as_index=False).max()
    marks = marks[["classification_id", "frame", "tool", "x", "y", "subject_id", "volunteer"]]
    return ExportData(classifications=cls, marks=marks, frames=frames, volunteers=users, subject_data=sd,
                      report=report)


def check_header(path: Path) -> list[str]:
    """Read the header line and fail clearly when the file is not a classification export."""
    check_file_kind(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:  # pandas skips a BOM too
        try:
            header = next(csv.reader(fh))
        except StopIteration:
            raise ClumptoolError(f"{path}: empty file (expected a Zooniverse classification export)") from None
        except UnicodeDecodeError:
            raise locate_non_utf8(path) from None
        except csv.Error as exc:
            raise ClumptoolError(f"{path}: not a readable CSV file ({exc}); {DOWNLOAD_HINT}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ClumptoolError(
            f"{path}: not a Zooniverse classification export: missing column(s) {', '.join(missing)} (it has "
            f"{', '.join(header[:8])}{', ...' if len(header) > 8 else ''}){wrong_columns_hint(header)}"
        )
    check_last_row(path, len(header), header=header)
    return header


NO_TIME = np.iinfo("int64").max


def created_ns(values: list[str]) -> np.ndarray:
    """``created_at`` strings -> int64 nanoseconds (UTC); unreadable -> :data:`NO_TIME` (sorts last).

    Zooniverse writes ``2019-11-01 00:00:13 UTC``; that format is parsed vectorised, anything else
    falls back to pandas' flexible parser.
    """
    s = pd.Series(values, dtype="object")
    # fast path: "<ISO date time> UTC" goes through pandas' ISO parser (several times faster than strptime)
    utc = (s.str[-4:].str.upper() == " UTC").to_numpy(dtype=bool)
    ns = _utc_ns(pd.to_datetime(s.str[:-4].where(utc, ""), format="%Y-%m-%d %H:%M:%S", errors="coerce", utc=True))
    for fmt in ("%Y-%m-%d %H:%M:%S UTC", "mixed"):  # the rest: the exact format, then anything pandas reads
        bad = (ns == NO_TIME) & s.astype(bool).to_numpy()
        if not bad.any():
            break
        ns[bad] = _utc_ns(pd.to_datetime(s[bad], format=fmt, errors="coerce", utc=True))
    return ns


def _utc_ns(t: pd.Series) -> np.ndarray:
    ns = t.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype("int64")
    return np.where(t.isna().to_numpy(), NO_TIME, ns)


def subject_metadata_from_export(subject_data: pd.DataFrame) -> pd.DataFrame:
    """Subject metadata carried in the export's ``subject_data`` column (one JSON object per subject).

    Used when no subjects export is given: Clump Scout subjects carry ``#fwhmImagePix`` there.
    """
    records = []
    for sid, text in zip(subject_data["subject_id"], subject_data["subject_data"], strict=True):
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            continue
        meta = obj.get(str(sid)) if isinstance(obj, dict) else None
        if not isinstance(meta, dict):
            continue
        rec = {"subject_id": int(sid)}
        rec.update({metadata_key(k): v for k, v in meta.items() if k != "retired" and not isinstance(v, dict)})
        records.append(rec)
    if not records:
        return pd.DataFrame({"subject_id": pd.Series(dtype="int64")})
    return pd.DataFrame.from_records(records)
