"""Zooniverse classification export (CSV) -> a tidy table of volunteer marks.

The export has 14 columns; ``metadata``, ``annotations`` and ``subject_data`` hold JSON (aggregation-reference
§2). This reader streams the file in chunks, parses each row's JSON once and keeps only compact numeric
columns, so a Clump Scout-sized export (1.74M rows) passes in bounded memory.

What it keeps, and why:

* classifications with **no** marks stay, as viewers: they are the evidence of false negatives;
* point marks in both front-end forms: old PFE (``tool``) and new FEM (``toolIndex``/``toolType``);
* the frame of each mark, and the natural image size of each frame (``subject_dimensions``);
* anonymous volunteers, keyed by ``user_name`` (``not-logged-in-<hash>``) when ``user_id`` is empty.

* rows sharing a ``classification_id``: byte-identical copies dropped and counted, different rows refused
  (or the last kept, ``on_conflicting_duplicates="keep-last"``), see :mod:`clumptool.aggregation.duplicates`;
* the shape of every mark: old PFE marks carry no ``toolType``, so rectangles, circles, polygons and lines are
  known by their keys and never taken for points (a named circle/rectangle tool counts by its centre).

Rows and marks that cannot be used are counted by reason in :class:`ReadReport` (with the first examples,
naming the classification_id and field), never dropped silently; ``strict=True`` makes any of them fatal.
A file that cannot be read at all (missing, empty, compressed, not UTF-8, cut short, another kind of table)
is refused with the row and field and the fix (:mod:`clumptool.aggregation.csvcheck`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from pandas.io.parsers import TextFileReader

from clumptool.aggregation.csvcheck import (
    DOWNLOAD_HINT,
    check_file_kind,
    check_last_row,
    explain_parse_error,
    locate_non_utf8,
    wrong_columns_hint,
)
from clumptool.aggregation.duplicates import find_duplicate_rows
from clumptool.common.errors import ClumptoolError, where

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
    non_point_marks: Counter = field(default_factory=Counter)
    dropped_tools: Counter = field(default_factory=Counter)  # tool index -> marks not used (any reason)
    workflow_id: int | None = None
    workflow_version: str | None = None
    task: str | None = None
    workflows_seen: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)

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
            "marks_read": self.marks_read,
            "marks_used": self.marks_used,
            "marks_dropped": dict(self.marks_dropped),
            "non_point_marks": dict(self.non_point_marks),
            "workflow_id": self.workflow_id,
            "workflow_version": self.workflow_version,
            "task": self.task,
            "workflows_seen": {str(k): sorted(v) for k, v in self.workflows_seen.items()},
            "examples": self.examples,
        }


@dataclass
class ExportData:
    """The export as tables.

    ``classifications``: one row per kept classification (classification_id, subject_id, volunteer,
    created_at, workflow_version, n_marks). ``marks``: one row per kept mark (classification_id,
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
    chunksize: int = 25_000  # rows per chunk when reading in this process
    workers: int | None = None  # processes parsing chunks; None: up to 2 for big files, 1 for small ones
    block_bytes: int = 8 << 20  # bytes of the file per worker job


PARALLEL_MIN_BYTES = 32 << 20  # below this, starting worker processes costs more than it saves
PEEK_BYTES = 1 << 20  # the drawing task is looked for in the rows of the file's first MB first


# ---------------------------------------------------------------------------------------------------------
# per-row parsing (pure functions)
# ---------------------------------------------------------------------------------------------------------


def _frame_sizes(metadata: dict) -> list[tuple[float, float]]:
    dims = metadata.get("subject_dimensions") or []
    sizes = []
    for d in dims:
        if isinstance(d, dict):
            w, h = d.get("naturalWidth"), d.get("naturalHeight")
            sizes.append((float(w) if _is_number(w) else math.nan, float(h) if _is_number(h) else math.nan))
        else:
            sizes.append((math.nan, math.nan))
    return sizes


def _is_number(v: object) -> bool:
    kind = type(v)  # exact float/int first: the common case, without isinstance's tuple walk
    number = kind is float or kind is int or (isinstance(v, (int, float)) and not isinstance(v, bool))
    return number and math.isfinite(v)


def _mark_tool(mark: dict) -> object:
    tool = mark.get("tool")
    return mark.get("toolIndex") if tool is None else tool


def _is_drawing_value(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


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


def iter_task_marks(annotations: list, task: str) -> Iterable[dict]:
    """All mark dicts of ``task``; FEM may split one task over several annotation entries."""
    for entry in annotations:
        if isinstance(entry, dict) and entry.get("task") == task and "markIndex" not in entry:
            value = entry.get("value")
            if _is_drawing_value(value):
                yield from value


# ---------------------------------------------------------------------------------------------------------
# streaming reader
# ---------------------------------------------------------------------------------------------------------


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
    check_last_row(path, len(header))
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


class _Accumulator:
    """Collects parsed rows chunk by chunk as compact numpy arrays (no JSON objects, few Python strings).

    Volunteers and workflow versions are interned to integer codes; timestamps become int64 nanoseconds.
    """

    def __init__(self) -> None:
        self.cls_parts: list[dict[str, np.ndarray]] = []
        self.mark_parts: list[dict[str, np.ndarray]] = []
        self.frame_parts: list[dict[str, np.ndarray]] = []
        self.user_code: dict[str, int] = {}
        self.user_names: list[str] = []
        self.user_anon: list[bool] = []
        self.version_code: dict[str, int] = {}
        self.subject_data: dict[int, str] = {}
        self.new_chunk()

    def new_chunk(self) -> None:
        self.c_id, self.c_subject, self.c_user, self.c_created = [], [], [], []
        self.c_version, self.c_workflow, self.c_nmarks = [], [], []
        self.m_cid, self.m_frame, self.m_tool, self.m_x, self.m_y = [], [], [], [], []
        self.f_subject, self.f_frame, self.f_w, self.f_h = [], [], [], []

    def user(self, key: str, name: str, anonymous: bool) -> int:
        code = self.user_code.get(key)
        if code is None:
            code = self.user_code[key] = len(self.user_names)
            self.user_names.append(name)
            self.user_anon.append(anonymous)
        return code

    def version(self, v: str) -> int:
        code = self.version_code.get(v)
        if code is None:
            code = self.version_code[v] = len(self.version_code)
        return code

    def close_chunk(self) -> None:
        self.cls_parts.append({
            "classification_id": np.asarray(self.c_id, dtype="int64"),
            "subject_id": np.asarray(self.c_subject, dtype="int64"),
            "user": np.asarray(self.c_user, dtype="int64"),
            "created_ns": created_ns(self.c_created),
            "version": np.asarray(self.c_version, dtype="int32"),
            "workflow_id": np.asarray(self.c_workflow, dtype="int64"),
            "n_marks": np.asarray(self.c_nmarks, dtype="int32"),
        })
        self.mark_parts.append({
            "classification_id": np.asarray(self.m_cid, dtype="int64"),
            "frame": np.asarray(self.m_frame, dtype="int16"),
            "tool": np.asarray(self.m_tool, dtype="int16"),
            "x": np.asarray(self.m_x, dtype="float64"),
            "y": np.asarray(self.m_y, dtype="float64"),
        })
        frames = pd.DataFrame({
            "subject_id": np.asarray(self.f_subject, dtype="int64"),
            "frame": np.asarray(self.f_frame, dtype="int16"),
            "image_width": np.asarray(self.f_w, dtype="float64"),
            "image_height": np.asarray(self.f_h, dtype="float64"),
        }).groupby(["subject_id", "frame"], as_index=False).max()
        self.frame_parts.append({c: frames[c].to_numpy() for c in frames.columns})
        self.new_chunk()

    def merge(self, other: _Accumulator, other_report: ReadReport, report: ReadReport) -> None:
        """Append a closed chunk parsed elsewhere, re-coding its volunteers and versions to ours."""
        keys = list(other.user_code)  # in code order
        codes = list(map(self.user_code.get, keys))  # most volunteers are known already
        for i in [i for i, code in enumerate(codes) if code is None]:
            codes[i] = self.user(keys[i], other.user_names[i], other.user_anon[i])
        user_map = np.array(codes or [0], dtype="int64")
        version_map = np.array([self.version(v) for v in other.version_code] or [0], dtype="int32")
        for part in other.cls_parts:
            part["user"] = user_map[part["user"]] if len(part["user"]) else part["user"]
            part["version"] = version_map[part["version"]] if len(part["version"]) else part["version"]
            self.cls_parts.append(part)
        self.mark_parts.extend(other.mark_parts)
        self.frame_parts.extend(other.frame_parts)
        for sid, sd in other.subject_data.items():
            self.subject_data.setdefault(sid, sd)
        report.absorb(other_report)

    @staticmethod
    def concat(parts: list[dict[str, np.ndarray]]) -> pd.DataFrame:
        return pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def read_export(
    path: str | os.PathLike,
    options: ReadOptions = ReadOptions(),
    progress: Callable[[int], None] | None = None,
    while_reading: Callable[[], None] | None = None,
) -> ExportData:
    """Stream a classification export and return its marks, viewers and image sizes as tables.

    Default workflow: the only one in the file (or ``options.workflow_id``); default version: the newest
    version of that workflow present in the file. ``progress`` is called with the number of bytes read.

    Big files are parsed in worker processes (CSV and JSON parsing are the bottleneck): the main process
    only cuts the file into record-aligned byte ranges, each worker reads and parses its own ranges, and the
    results are merged in file order with at most a few ranges in flight, so memory stays bounded whatever
    the file size. The tables are identical to the one-process reader's.

    ``while_reading`` (e.g. importing what the caller needs next) runs in a thread of this process once the
    worker processes have started, when this process would otherwise mostly wait; it has finished (and any
    exception it raised is raised) when this function returns. Without workers it simply runs first.
    """
    path = Path(path)
    header = check_header(path)
    tools = set(options.clump_tools) if options.clump_tools is not None else None
    workers = options.workers
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if path.stat().st_size >= PARALLEL_MIN_BYTES else 1
    usecols = [c for c in (*REQUIRED_COLUMNS, "subject_data") if c in header]
    try:
        if workers > 1:
            acc, report = _Accumulator(), ReadReport(path=str(path))
            background = _BackgroundTask(while_reading)
            try:
                with background:
                    report.task = _read_in_workers(path, usecols, workers, acc, report, options, tools,
                                                   progress, background.start)
                return _finish(acc, report, options)
            except (pd.errors.ParserError, UnicodeDecodeError, _NoRecordBoundary):
                # a broken (or not RFC-4180-quoted) file: find its error, or its tables, exactly as the
                # one-process reader does
                _check_csv(path, usecols, options.chunksize)
                progress = None  # the bytes were counted once already
                if background.thread is not None:
                    background.reraise()
                    while_reading = None
        if while_reading is not None:
            while_reading()
        acc, report = _Accumulator(), ReadReport(path=str(path))
        report.task = _read_serially(path, usecols, acc, report, options, tools, progress)
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
        raise explain_parse_error(path, exc) from exc
    return _finish(acc, report, options)


def _csv_reader(source: object, usecols: list[str] | None, chunksize: int | None) -> pd.DataFrame | TextFileReader:
    """The one way the export's CSV is read (whole file by chunks, or one byte range), so all agree."""
    return pd.read_csv(source, usecols=usecols, dtype=object, keep_default_na=False, chunksize=chunksize,
                       encoding="utf-8", on_bad_lines="error")


def _read_serially(path: Path, usecols: list[str], acc: _Accumulator, report: ReadReport, options: ReadOptions,
                   tools: set[int] | None, progress: Callable[[int], None] | None) -> str | None:
    """Parse the export chunk by chunk in this process; returns the drawing task."""
    task = options.task
    last_pos = 0
    with _csv_reader(path, usecols, options.chunksize) as reader:
        for chunk in reader:
            task = _parse_chunk(_chunk_columns(chunk), acc, report, options, task, tools)
            acc.close_chunk()
            if progress is not None:
                pos = _reader_position(reader)
                if pos is not None:
                    progress(pos - last_pos)
                    last_pos = pos
    return task


def _check_csv(path: Path, usecols: list[str], chunksize: int) -> None:
    """Tokenise the whole file as the one-process reader does (raises its very error, if any)."""
    with _csv_reader(path, usecols, chunksize) as reader:
        for _ in reader:
            pass


class _NoRecordBoundary(Exception):
    """The file cannot be cut at record boundaries by quote parity (bare quotes, or lone-CR line ends)."""


def _last_record_end(buf: bytes | bytearray, size: int | None = None) -> int:
    """Index just past the last record-ending newline of ``buf[:size]`` (which starts at a record start); 0 if none.

    RFC 4180 doubles quotes inside quoted fields, so a newline ends a record iff the number of quote
    characters before it is even (``bytes.count`` runs at C speed; most candidates are right at once).
    A file with bare quotes breaks the rule, but then a range cut inside a quoted field ends inside it and
    pandas refuses it (EOF inside string): the caller falls back to the one-process reader.
    """
    end = buf.rfind(b"\n", 0, len(buf) if size is None else size)
    if end < 0:
        return 0
    quotes = buf.count(b'"', 0, end)
    while quotes % 2:
        prev = buf.rfind(b"\n", 0, end)
        if prev < 0:
            return 0
        quotes -= buf.count(b'"', prev, end)
        end = prev
    return end + 1


def _first_record_end(buf: bytes) -> int:
    """Index just past the first record-ending newline of ``buf`` (which starts at a record start); 0 if none."""
    start = quotes = 0
    while (end := buf.find(b"\n", start)) >= 0:
        quotes += buf.count(b'"', start, end)
        if quotes % 2 == 0:
            return end + 1
        start = end + 1
    return 0


def _record_ranges(fh: BinaryIO, block_bytes: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of consecutive record-aligned pieces of ``fh`` from its position to the end.

    Each piece is about ``block_bytes`` long (longer when one record is); raises :class:`_NoRecordBoundary`
    when no record ends within ``32 * block_bytes``, so memory stays bounded on files this cannot split.
    The file is read into one reused buffer (fresh multi-MB allocations cost more than the quote counting).
    """
    offset = fh.tell()
    buf = bytearray(2 * block_bytes)
    filled = 0  # bytes of buf holding the file from offset on
    while True:
        if filled + block_bytes > len(buf):  # a record longer than the buffer: grow it
            if filled > 32 * block_bytes:
                raise _NoRecordBoundary
            buf.extend(bytes(len(buf)))
        with memoryview(buf) as view:
            n = fh.readinto(view[filled:filled + block_bytes])
        if not n:
            if filled:
                yield offset, filled
            return
        filled += n
        cut = _last_record_end(buf, filled)
        if cut:
            yield offset, cut
            offset += cut
            buf[:filled - cut] = buf[cut:filled]
            filled -= cut


def _read_header(fh: BinaryIO, block_bytes: int) -> bytes:
    """The header record's bytes (the file position is left just after it)."""
    buf = b""
    while True:
        more = fh.read(block_bytes)
        buf += more
        end = _first_record_end(buf)
        if end or not more:
            end = end or len(buf)
            fh.seek(end)
            return buf[:end]
        if len(buf) > 32 * block_bytes:
            raise _NoRecordBoundary


def _read_range(path: str, header: bytes, offset: int, length: int, usecols: list[str]) -> dict[str, list]:
    """Rows of one record-aligned byte range as plain column lists, parsed as the one-process reader parses them.

    Arrow's CSV reader (a pandas dependency already) parses a range ~2.5x faster than pandas' own; it is used
    only for what it reads exactly like pandas (RFC 4180 quoting, strings kept as they are, every row with
    the header's number of fields). Anything it refuses (a short or long row, bad UTF-8, odd header) is read
    by pandas, whose result or error is the reference.
    """
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(length)
    blob = header + data
    columns = _arrow_columns(blob, usecols)
    if columns is None:
        columns = _chunk_columns(_csv_reader(io.BytesIO(blob), usecols, None))
    return columns


def _arrow_columns(data: bytes, usecols: list[str]) -> dict[str, list] | None:
    """The columns by Arrow's CSV reader, or ``None`` where it cannot stand in for pandas exactly."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    header = data[: data.find(b"\n")]
    names = header.rstrip(b"\r").split(b",")
    if b'"' in header or len(set(names)) != len(names):  # pandas renames duplicates
        return None
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            read_options=pa_csv.ReadOptions(use_threads=False, block_size=max(len(data), 1 << 20)),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True, double_quote=True, escape_char=False),
            convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in usecols},
                                                  include_columns=usecols, strings_can_be_null=False,
                                                  quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError, KeyError, ValueError):
        return None
    n = table.num_rows
    cols = {c: table.column(c).to_pylist() for c in REQUIRED_COLUMNS}
    cols["subject_data"] = table.column("subject_data").to_pylist() if "subject_data" in usecols else [""] * n
    return cols


def _peek_range(path: str, header: bytes, offset: int, length: int, workflow_id: int | None) -> str | None:
    """The drawing task of the first rows of a byte range (of its first ~1 MB when found there: less waiting)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(length)
    head = _last_record_end(data[:PEEK_BYTES])
    for part in ((data[:head], data) if 0 < head < len(data) else (data,)):
        rows = _csv_reader(io.BytesIO(header + part), ["workflow_id", "annotations"], None)
        if workflow_id is not None:
            rows = rows[pd.to_numeric(rows["workflow_id"], errors="coerce") == workflow_id]
        task = peek_drawing_task(rows["annotations"].tolist())
        if task is not None:
            return task
    return None


_sent_subject_data: dict = {"read": None, "subjects": set()}  # per worker process: see _parse_range


def _parse_range(path: str, header: bytes, offset: int, length: int, usecols: list[str], options: ReadOptions,
                 task: str | None, tools: set[int] | None, read_id: str) -> tuple[_Accumulator, ReadReport]:
    """Worker job: read and parse one byte range into a fresh accumulator and report (merged by the caller).

    A worker takes its ranges in file order and the caller merges them in file order, so a subject whose
    ``subject_data`` this process has returned before (in this read) is known to the caller already: it is
    not sent again (on a Clump Scout-sized export that is most of what would cross the process boundary).
    """
    acc = _Accumulator()
    report = ReadReport(path=path)
    _parse_chunk(_read_range(path, header, offset, length, usecols), acc, report, options, task, tools)
    acc.close_chunk()
    if _sent_subject_data["read"] != read_id:
        _sent_subject_data.update(read=read_id, subjects=set())
    sent = _sent_subject_data["subjects"]
    acc.subject_data = {sid: sd for sid, sd in acc.subject_data.items() if sid not in sent}
    sent.update(acc.subject_data)
    return acc, report


def _read_in_workers(path: Path, usecols: list[str], workers: int, acc: _Accumulator, report: ReadReport,
                     options: ReadOptions, tools: set[int] | None,
                     progress: Callable[[int], None] | None,
                     workers_started: Callable[[], None] = lambda: None) -> str | None:
    """Parse record-aligned byte ranges in a process pool, merging in file order, a bounded window in flight.

    Every worker must cluster the same drawing task, so it is found first in the rows of the first range.
    ``workers_started`` is called once every worker process exists (no fork can follow it).
    """
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    task = options.task
    window = 2 * workers
    pending: deque = deque()
    with open(path, "rb") as fh, ProcessPoolExecutor(max_workers=workers) as pool:
        header = _read_header(fh, options.block_bytes)
        # a range cut where pandas is inside a quoted field fails to parse ("EOF inside string"), and the
        # one-process reader takes over; every range starts with the header, so it must be exactly one record
        if len(_csv_reader(io.BytesIO(header), None, None)):
            raise _NoRecordBoundary
        if progress is not None:
            progress(len(header))
        ranges = _record_ranges(fh, options.block_bytes)
        first = next(ranges, None)
        if first is None:
            return task
        if task is None:
            task = _peek_range(str(path), header, *first, options.workflow_id)

        def merge_oldest() -> None:
            future, length = pending.popleft()
            acc.merge(*future.result(), report)
            if progress is not None:
                progress(length)

        read_id = os.urandom(8).hex()
        try:
            for offset, length in itertools.chain([first], ranges):
                pending.append((pool.submit(_parse_range, str(path), header, offset, length, usecols, options,
                                            task, tools, read_id), length))
                if len(pending) >= window:
                    workers_started()
                while len(pending) >= window or (pending and pending[0][0].done()):
                    merge_oldest()
            workers_started()
            while pending:
                merge_oldest()
        except BaseException:
            for future, _ in pending:
                future.cancel()
            raise
    return task


class _BackgroundTask:
    """Run a callable in a thread, started on demand (once), joined on exit; its exception is re-raised."""

    def __init__(self, task: Callable[[], None] | None):
        self.task = task
        self.thread = None
        self.error: BaseException | None = None

    def start(self) -> None:
        if self.task is None or self.thread is not None:
            return
        import threading

        def run() -> None:
            try:
                self.task()
            except BaseException as exc:  # handed to the caller on exit
                self.error = exc

        self.thread = threading.Thread(target=run, name="clumptool-while-reading", daemon=True)
        self.thread.start()

    def __enter__(self) -> _BackgroundTask:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.thread is not None:
            self.thread.join()
        elif self.task is not None and exc_info[0] is None:
            self.task()  # the workers never started (e.g. an empty file): run it here
        if exc_info[0] is None:
            self.reraise()

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


def peek_drawing_task(annotations: Iterable[str]) -> str | None:
    """The drawing task of the first readable annotation that has one (as the serial reader finds it)."""
    for text in annotations:
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            continue
        if isinstance(value, list):
            task = find_drawing_task(value)
            if task is not None:
                return task
    return None


def _chunk_columns(chunk: pd.DataFrame) -> dict[str, list]:
    """A chunk as plain lists (cheap to pickle to a worker, fast to iterate)."""
    cols = {c: chunk[c].tolist() for c in REQUIRED_COLUMNS}
    cols["subject_data"] = chunk["subject_data"].tolist() if "subject_data" in chunk.columns else [""] * len(chunk)
    return cols


def _reader_position(reader: object) -> int | None:
    handles = getattr(reader, "handles", None)
    handle = getattr(handles, "handle", None)
    try:
        return handle.buffer.tell() if hasattr(handle, "buffer") else handle.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _parse_chunk(
    columns: dict[str, list],
    acc: _Accumulator,
    report: ReadReport,
    options: ReadOptions,
    task: str | None,
    tools: set[int] | None,
) -> str | None:
    strict = options.strict
    want_wf = options.workflow_id
    cols = [columns[c] for c in (
        "classification_id", "user_name", "user_id", "workflow_id", "workflow_version", "created_at",
        "metadata", "annotations", "subject_ids", "subject_data")]
    # hot loop (one pass per row of the export): bound methods in locals; marks that pass the common-case
    # checks go straight in, anything else gets the full checks of _mark_problem
    isfinite = math.isfinite
    m_cid, m_frame, m_tool = acc.m_cid.append, acc.m_frame.append, acc.m_tool.append
    m_x, m_y = acc.m_x.append, acc.m_y.append
    c_id, c_subject, c_user, c_created = acc.c_id.append, acc.c_subject.append, acc.c_user.append, acc.c_created.append
    c_version, c_workflow, c_nmarks = acc.c_version.append, acc.c_workflow.append, acc.c_nmarks.append
    f_subject, f_frame, f_w, f_h = acc.f_subject.append, acc.f_frame.append, acc.f_w.append, acc.f_h.append
    user_code, version_code = acc.user_code, acc.version_code
    workflows_seen = report.workflows_seen
    subject_data = acc.subject_data
    report.rows_read += len(cols[0])
    marks_read = rows_used = 0
    for cid_s, uname, uid, wf_s, version, created, meta_s, ann_s, sids, sd in zip(*cols, strict=True):
        try:
            cid = int(cid_s)
        except ValueError:
            if cid_s == "classification_id":  # files concatenated with their headers: harmless, counted
                report.rows_skipped["repeated header line (files concatenated with their headers?)"] += 1
                continue
            report.rows_skipped["bad classification_id"] += 1
            report.problem("row", cid_s or "?", "classification_id", "not an integer", strict)
            continue
        try:
            wf = int(wf_s)
        except ValueError:
            report.rows_skipped["bad workflow_id"] += 1
            report.problem("row", cid, "workflow_id", f"not an integer: {wf_s!r}", strict)
            continue
        if not version.replace(".", "").isdigit():  # e.g. a row cut short: it must not pick the version
            report.rows_skipped["bad workflow_version"] += 1
            report.problem("row", cid, "workflow_version", f"not a version number like 12.34: {version!r}",
                           strict)
            continue
        seen = workflows_seen.get(wf)
        if seen is None:
            seen = workflows_seen[wf] = set()
        seen.add(version)
        if want_wf is not None and wf != want_wf:
            report.rows_skipped["other workflow"] += 1
            continue
        if ";" in sids:
            report.rows_skipped["multi-subject classification"] += 1
            report.problem("row", cid, "subject_ids", f"several subjects ({sids}); not a point-marking "
                           "classification of one image", strict)
            continue
        try:
            sid = int(sids)
        except ValueError:
            report.rows_skipped["bad subject_ids"] += 1
            report.problem("row", cid, "subject_ids", f"not an integer subject id: {sids!r}", strict)
            continue
        try:
            annotations = _json_loads(ann_s)
        except json.JSONDecodeError as exc:
            report.rows_skipped["broken JSON in annotations"] += 1
            report.problem("row", cid, "annotations", f"broken JSON ({exc.msg} at char {exc.pos})", strict)
            continue
        try:
            metadata = _load_metadata(meta_s) if meta_s else {}
        except json.JSONDecodeError as exc:
            report.rows_skipped["broken JSON in metadata"] += 1
            report.problem("row", cid, "metadata", f"broken JSON ({exc.msg} at char {exc.pos})", strict)
            continue
        if not isinstance(annotations, list) or not isinstance(metadata, dict):
            report.rows_skipped["unexpected JSON shape"] += 1
            report.problem("row", cid, "annotations" if not isinstance(annotations, list) else "metadata",
                           "unexpected JSON shape (annotations must be a list, metadata an object)", strict)
            continue
        if task is None:
            task = find_drawing_task(annotations)
        sizes = _frame_sizes(metadata)
        n_kept = 0
        if task is not None:
            for mark in iter_task_marks(annotations, task):
                marks_read += 1
                tool = mark.get("tool")
                if tool is None:
                    tool = mark.get("toolIndex")
                x, y, frame = mark.get("x"), mark.get("y"), mark.get("frame") or 0
                tool_type = mark.get("toolType")
                fine = ((tool_type == "point" if tool_type is not None
                         else "r" not in mark and "width" not in mark and "rx" not in mark)
                        and type(tool) is int and (tools is None or tool in tools)
                        and type(x) is float and type(y) is float and isfinite(x) and isfinite(y)
                        and x >= 0 and y >= 0 and type(frame) is int and frame >= 0)
                if fine and sizes:
                    if frame < len(sizes):
                        w, h = sizes[frame]
                        fine = (not isfinite(w) or x <= w) and (not isfinite(h) or y <= h)
                    else:
                        fine = False
                if not fine:
                    reason = _mark_problem(mark, sizes, tools)
                    if reason is not None:
                        report.marks_dropped[reason[0]] += 1
                        if type(tool) is int:
                            report.dropped_tools[tool] += 1
                        if reason[0] == "not a point mark":
                            report.non_point_marks[reason[1]] += 1
                        elif reason[0] != "other tool":
                            report.problem("mark", cid, "annotations", reason[1], strict)
                        continue
                    x, y = mark_centre(mark)
                m_cid(cid)
                m_frame(int(frame))
                m_tool(int(tool))
                m_x(float(x))
                m_y(float(y))
                n_kept += 1
        for frame, (w, h) in enumerate(sizes):
            f_subject(sid)
            f_frame(frame)
            f_w(w)
            f_h(h)
        user_key = uid or uname
        user = user_code.get(user_key)
        if user is None:
            user = acc.user(user_key, uname, uid == "")
        code = version_code.get(version)
        if code is None:
            code = acc.version(version)
        c_id(cid)
        c_subject(sid)
        c_user(user)
        c_created(created)
        c_version(code)
        c_workflow(wf)
        c_nmarks(n_kept)
        if sd and sid not in subject_data:
            subject_data[sid] = sd
        rows_used += 1
    report.rows_used += rows_used
    report.marks_read += marks_read
    return task


_scan_json = json.JSONDecoder().scan_once


def _json_loads(text: str) -> object:
    """``json.loads`` (same values, same errors) without its per-call overhead for the common case."""
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError, TypeError):  # leading blanks, broken JSON, not a string: the slow way
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


_DIMENSIONS_KEY = '"subject_dimensions"'


def _load_metadata(text: str) -> object:
    """The metadata object, or only its ``subject_dimensions`` (the one field read) when that can be cut out.

    Metadata is the longest JSON of a row and decoding all of it was a fifth of the reading time. A field
    that does not look like a whole object (e.g. cut short) is decoded in full, so its error is reported;
    within a whole-looking object only the ``subject_dimensions`` value is checked.
    """
    key = text.find(_DIMENSIONS_KEY)
    if key > 0 and text[0] == "{" and text[-1] == "}" and text[key - 1] in "{, \t\r\n":
        j = key + len(_DIMENSIONS_KEY)
        while text[j] in " \t\r\n":
            j += 1
        if text[j] == ":":
            j += 1
            while text[j] in " \t\r\n":
                j += 1
            try:
                value, _ = _scan_json(text, j)
            except (StopIteration, ValueError):
                pass
            else:
                return {"subject_dimensions": value}
    return _json_loads(text)


SHAPE_KEYS = (("points", "polygon"), ("pathX", "freehand line"), ("width", "rectangle"), ("rx", "ellipse"),
              ("r", "circle"), ("x1", "line"), ("x2", "line"))
CENTRED_SHAPES = ("point", "circle", "rectangle", "ellipse")  # a named clump tool of these shapes: its centre


def mark_shape(mark: dict) -> str:
    """The shape a mark was drawn with: FEM says (``toolType``), old PFE marks are known by their keys."""
    tool_type = mark.get("toolType")
    if tool_type is not None:
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


def mark_centre(mark: dict) -> tuple[float, float]:
    """The click a mark stands for: (x, y) of a point or circle, the centre of a rectangle."""
    x, y = float(mark["x"]), float(mark["y"])
    if mark_shape(mark) == "rectangle":
        x += float(mark.get("width") or 0) / 2
        y += float(mark.get("height") or 0) / 2
    return x, y


def _mark_problem(mark: dict, sizes: list[tuple[float, float]], tools: set[int] | None) -> tuple[str, str] | None:
    """Why a mark cannot be used, as (counter key, message); ``None`` if it is fine.

    A mark of another shape is not a point mark (its tool and shape are the message), except circles,
    rectangles and ellipses of a tool named in ``--clump-tools``, whose centre is used as the click.
    """
    tool = _mark_tool(mark)
    shape = mark_shape(mark)
    named = tools is not None and tool in tools
    if shape != "point" and not (named and shape in CENTRED_SHAPES):
        return "not a point mark", f"tool {tool} ({shape})"
    if not isinstance(tool, int) or isinstance(tool, bool):
        return "no tool index", f"mark without a tool index: {json.dumps(mark)[:120]}"
    if tools is not None and tool not in tools:
        return "other tool", f"tool {tool}"
    x, y = mark.get("x"), mark.get("y")
    if not (_is_number(x) and _is_number(y)):
        return "missing or NaN coordinates", f"mark with x={x!r}, y={y!r}"
    if shape == "rectangle" and not (_is_number(mark.get("width") or 0) and _is_number(mark.get("height") or 0)):
        return "missing or NaN coordinates", f"rectangle with width={mark.get('width')!r}, height={mark.get('height')!r}"
    x, y = mark_centre(mark)
    frame = mark.get("frame") or 0
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        return "bad frame", f"frame {frame!r}"
    if sizes and frame >= len(sizes):
        return "frame that does not exist", f"mark on frame {frame}; the subject has {len(sizes)} frame(s)"
    w, h = sizes[frame] if frame < len(sizes) else (math.nan, math.nan)
    if x < 0 or y < 0 or (math.isfinite(w) and x > w) or (math.isfinite(h) and y > h):
        size = f"the {w:g}x{h:g} image" if math.isfinite(w) and math.isfinite(h) else "the image"
        return "outside the image", f"mark ({x:.1f}, {y:.1f}) outside {size} (frame {frame})"
    return None


def _newest_version(versions: Iterable[str]) -> str:
    def key(v: str) -> tuple:
        parts = []
        for p in v.split("."):
            parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
        return tuple(parts)

    return max(versions, key=key)


def _finish(acc: _Accumulator, report: ReadReport, options: ReadOptions) -> ExportData:
    path = report.path
    if not acc.cls_parts:
        acc.close_chunk()
    cls = _Accumulator.concat(acc.cls_parts)
    marks = _Accumulator.concat(acc.mark_parts)
    # rows sharing a classification_id: copies dropped, conflicts refused (or the last kept); each row's
    # marks follow it in the parsed tables (n_marks of them), so they go with it
    dups = find_duplicate_rows(path, cls["classification_id"].to_numpy(), options.on_conflicting_duplicates)
    if dups.drop.any():
        mark_row = np.repeat(np.arange(len(cls)), cls["n_marks"].to_numpy())
        in_dropped = dups.drop[mark_row]
        if in_dropped.any():
            report.marks_dropped["in dropped duplicate rows"] += int(in_dropped.sum())
        marks = marks[~in_dropped].reset_index(drop=True)
        cls = cls[~dups.drop].reset_index(drop=True)
        report.duplicate_rows_dropped = dups.copies_dropped
        report.conflicting_rows_replaced = int(dups.drop.sum()) - dups.copies_dropped
        for cid, rows in dups.conflicts[:MAX_EXAMPLES]:
            report.examples.append({
                "kind": "row", "classification_id": str(cid), "field": "classification_id",
                "message": f"{where(path, f'classification_id {cid}')}: different rows ({', '.join(map(str, rows))}) "
                           "share this id; the last was kept (--on-conflicting-duplicates keep-last)"})
    versions_by_code = np.array(list(acc.version_code.keys()) or [""], dtype=object)
    seen = report.workflows_seen
    if options.workflow_id is not None:
        if options.workflow_id not in seen:
            raise ClumptoolError(
                f"{path}: workflow id {options.workflow_id} is not in this export (--workflow-id); it holds:\n"
                f"{_inventory_text(path)}\nchoose one of these with --workflow-id"
            )
        wf = options.workflow_id
    else:
        if len(seen) == 0:
            if report.rows_read == 0:
                raise ClumptoolError(f"{path}: no readable classifications: the export has a header but no rows; download the export again "
                                     "once volunteers have classified (Zooniverse project Lab > Data Exports)")
            reasons = "; ".join(f"{n:,} {k}" for k, n in sorted(report.rows_skipped.items()))
            example = f" (e.g. {report.examples[0]['message']})" if report.examples else ""
            raise ClumptoolError(f"{path}: no readable classifications among {report.rows_read:,} rows: "
                                 f"{reasons}{example}; check that this is a Zooniverse classification export")
        if len(seen) > 1:
            raise ClumptoolError(
                f"{path}: several workflows ({', '.join(map(str, sorted(seen)))}); choose one with "
                f"--workflow-id. The export holds:\n{_inventory_text(path)}"
            )
        wf = next(iter(seen))
    versions = seen[wf]
    if options.workflow_version is not None:
        wanted = options.workflow_version
        exact = wanted in versions
        major = "." not in wanted and any(v.split(".")[0] == wanted for v in versions)
        if not (exact or major):
            raise ClumptoolError(
                f"{path}: workflow {wf} has no version {wanted} (--workflow-version); its versions: "
                f"{', '.join(sorted(versions))} (give one of them, or the major number, e.g. 12 for all 12.x)"
            )
        ok_codes = [c for v, c in acc.version_code.items()
                    if v == wanted or ("." not in wanted and v.split(".")[0] == wanted)]
        version_label = wanted
    else:
        version_label = _newest_version(versions)
        ok_codes = [acc.version_code[version_label]] if version_label in acc.version_code else []
    report.workflow_id = wf
    report.workflow_version = version_label
    in_wf = cls["workflow_id"].to_numpy() == wf
    keep_version = np.isin(cls["version"].to_numpy(), ok_codes)
    other_version = int((in_wf & ~keep_version).sum())
    if other_version:
        report.rows_skipped["other workflow version"] += other_version
    cls = cls[in_wf & keep_version]

    # repeat classifications of a subject by one volunteer: keep the first by created_at
    cls = cls.sort_values(["created_ns", "classification_id"], kind="stable")
    dup = cls.duplicated(["user", "subject_id"], keep="first")
    report.duplicates_dropped = int(dup.sum())
    cls = cls[~dup].sort_values("classification_id", kind="stable").reset_index(drop=True)
    report.rows_used = len(cls)

    # volunteers numbered densely in user-code order (what np.unique(..., return_inverse=True) gives, in O(n))
    present = np.zeros(len(acc.user_code), dtype=bool)
    present[cls["user"].to_numpy()] = True
    used_users = np.flatnonzero(present)
    volunteer = (np.cumsum(present) - 1)[cls["user"].to_numpy()]
    keys = np.array(list(acc.user_code.keys()), dtype=object)
    users = pd.DataFrame({
        "volunteer": np.arange(len(used_users), dtype="int64"),
        "user_key": keys[used_users] if len(used_users) else np.array([], dtype=object),
        "user_name": np.array(acc.user_names, dtype=object)[used_users] if len(used_users) else [],
        "anonymous": np.array(acc.user_anon, dtype=bool)[used_users] if len(used_users) else [],
    })
    cls["volunteer"] = volunteer.astype("int64")
    cls["workflow_version"] = versions_by_code[cls["version"].to_numpy()] if len(cls) else []
    created = cls["created_ns"].to_numpy()
    cls["created_at"] = pd.to_datetime(np.where(created == NO_TIME, np.datetime64("NaT", "ns"),
                                                 created.view("datetime64[ns]")), utc=True)
    cls = cls.drop(columns=["user", "version", "created_ns"])

    n_parsed = len(marks)
    marks = marks.merge(cls[["classification_id", "subject_id", "volunteer"]], on="classification_id",
                        how="inner")
    if n_parsed > len(marks):
        report.marks_dropped["in classifications not used (repeats, other workflows/versions)"] += n_parsed - len(marks)
    report.marks_used = len(marks)
    kept_subjects = cls["subject_id"].unique()

    frames = _Accumulator.concat(acc.frame_parts)
    frames = frames[frames["subject_id"].isin(kept_subjects)]
    frames = frames.groupby(["subject_id", "frame"], as_index=False).max()
    subject_data = pd.DataFrame(
        {"subject_id": np.fromiter(acc.subject_data.keys(), dtype="int64", count=len(acc.subject_data)),
         "subject_data": list(acc.subject_data.values())}
    )
    subject_data = subject_data[subject_data["subject_id"].isin(kept_subjects)].reset_index(drop=True)
    return ExportData(classifications=cls, marks=marks, frames=frames, volunteers=users,
                      subject_data=subject_data, report=report)


def _inventory_text(path: str) -> str:
    from clumptool.aggregation.inventory import describe, read_inventory

    return describe(read_inventory(path))


def subject_metadata_from_export(subject_data: pd.DataFrame) -> pd.DataFrame:
    """Subject metadata carried in the export's ``subject_data`` column (one JSON object per subject).

    Used when no subjects export is given: Clump Scout subjects carry ``#fwhmImagePix`` there.
    """
    from clumptool.aggregation.subjects import metadata_key

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
