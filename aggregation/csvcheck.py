"""Why an export file cannot be read, said so a person can fix it (which file, row and field; what to do).

The CSV parsers report a failure as a byte offset in a buffer or a tokenizer state. These functions run
only after such a failure (or on the first bytes and the last line, which costs nothing) and turn it into
the row, the ``classification_id`` and the field, with the likely cause and the fix.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from clumptool.common.errors import ClumptoolError
from clumptool.common.ids import subject_id_text

DOWNLOAD_HINT = "download the export again (Zooniverse project Lab > Data Exports)"
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_EOF_IN_STRING = re.compile(r"EOF inside string starting at row (\d+)")
_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def check_file_kind(path: Path, what: str = "classification export") -> None:
    """A missing, empty or compressed file, refused before any parsing."""
    if not path.exists():
        raise ClumptoolError(f"{path}: file not found; check the path (the {what} CSV that "
                             "Zooniverse's Lab > Data Exports gives)")
    if path.is_dir():
        raise ClumptoolError(f"{path}: is a folder; give the {what} CSV file")
    size = path.stat().st_size
    if size == 0:
        raise ClumptoolError(f"{path}: empty file (0 bytes), not a Zooniverse {what}; the "
                             f"download or copy probably failed: {DOWNLOAD_HINT}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        raise ClumptoolError(f"{path}: is gzip-compressed; decompress it first (gunzip -k {path}) and pass the "
                             ".csv file")
    if magic == b"PK\x03\x04":
        raise ClumptoolError(f"{path}: is a zip archive; unzip it first and pass the classification .csv inside")


def _row_id(row: list[str], header: list[str]) -> str:
    for key in ("classification_id", "subject_id"):
        if key in header:
            i = header.index(key)
            return f"{key} {row[i] if i < len(row) else 'unknown'}"
    return "no id column"


def locate_non_utf8(path: Path) -> ClumptoolError:
    """The first byte that is not UTF-8: its line, row, classification id and field, and how to fix it."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header: list[str] = []
        line = 1
        for n, row in enumerate(reader):
            joined = "\x00".join(row)
            bad = _NOT_UTF8.search(joined)
            if bad is not None:
                i = joined.count("\x00", 0, bad.start())
                byte = ord(bad.group()) - 0xDC00
                where = "the header" if n == 0 else (
                    f"line {line} (data row {n}, {_row_id(row, header)}), field "
                    f"'{header[i] if i < len(header) else i + 1}'")
                return ClumptoolError(
                    f"{path}: {where}: byte 0x{byte:02X} is not UTF-8 (Zooniverse exports are UTF-8; the file was "
                    "probably re-saved in another encoding, e.g. Latin-1 by a spreadsheet). Re-save it as UTF-8 "
                    f"(e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.csv) or {DOWNLOAD_HINT}")
            if n == 0:
                header = row
            line = reader.line_num + 1
    return ClumptoolError(f"{path}: not UTF-8 text; re-save it as UTF-8 or {DOWNLOAD_HINT}")


def explain_parse_error(path: Path, exc: Exception) -> ClumptoolError:
    """A tokenizer or decoding failure as a message with the row and the fix."""
    if isinstance(exc, UnicodeDecodeError):
        return locate_non_utf8(path)
    text = str(exc)
    m = _EOF_IN_STRING.search(text)
    if m:
        return ClumptoolError(
            f"{path}: the CSV structure is broken: data row {m.group(1)} (counted from 1 after the header) opens a quoted field that never "
            "closes: the file ends inside it, so the last row is cut short (an interrupted download or copy?). "
            f"{DOWNLOAD_HINT[0].upper() + DOWNLOAD_HINT[1:]}, or delete the incomplete last row")
    m = _FIELDS.search(text)
    if m:
        return ClumptoolError(
            f"{path}: the CSV structure is broken: line {m.group(2)} has {m.group(3)} fields where the header has {m.group(1)} (a stray comma "
            f"or quote, or rows of another file pasted in); fix that line or {DOWNLOAD_HINT}")
    return ClumptoolError(f"{path}: the CSV structure is broken ({text}); {DOWNLOAD_HINT}")


def check_last_row(path: Path, n_fields: int, tail_bytes: int = 1 << 16,
                   header: list[str] | None = None) -> None:
    """A file that ends without a newline in a row with too few fields, or (given the ``header``) whose
    ``subject_ids`` is not the id its ``subject_data`` is keyed by, was cut short: refuse it.

    (Pandas would fill the missing fields with empty strings and read the row as a broken classification.)
    """
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - tail_bytes))
        tail = fh.read()
    if not tail or tail.endswith(b"\n"):
        return
    last = tail[tail.rfind(b"\n") + 1:]
    if last.count(b'"') % 2:
        return  # inside a quoted field: the tokenizer reports it (EOF inside string)
    try:
        row = next(csv.reader([last.decode("utf-8", errors="replace")]))
    except (csv.Error, StopIteration):
        return
    cid = row[0] if row else "?"
    if len(row) < n_fields:
        raise ClumptoolError(
            f"{path}: the last row (classification_id {cid}) has {len(row)} of {n_fields} fields and no line end: "
            f"the file is cut short (an interrupted download or copy?). {DOWNLOAD_HINT[0].upper()}"
            f"{DOWNLOAD_HINT[1:]}, or delete the incomplete last row")
    if header is not None and len(row) == len(header):
        cut = _cut_subject_ids(dict(zip(header, row, strict=True)))
        if cut:
            raise ClumptoolError(
                f"{path}: the last row (classification_id {cid}) has no line end and {cut}: the file is cut short "
                f"in its last field (an interrupted download or copy?). {DOWNLOAD_HINT[0].upper()}"
                f"{DOWNLOAD_HINT[1:]}, or delete the incomplete last row")


def _cut_subject_ids(fields: dict[str, str]) -> str | None:
    """Why a row's ``subject_ids`` cannot be whole: Zooniverse's ``subject_data`` is keyed by the same ids, so
    an id that is not among its keys (e.g. ``9000`` of ``90000018``) was cut; None when it matches or the row
    says too little to tell (no subject_data, or not JSON)."""
    sids, data = fields.get("subject_ids", ""), fields.get("subject_data", "")
    try:
        keys = set(json.loads(data)) if data else None
    except (ValueError, TypeError):
        return None
    if not keys or not sids:
        return None
    keys = {subject_id_text(k) for k in keys}
    if all(subject_id_text(i) in keys for i in sids.split(";")):
        return None
    return (f"its subject_ids {sids!r} is not the subject of its subject_data "
            f"({', '.join(sorted(k for k in keys if k)[:3])})")


SUBJECTS_EXPORT_COLUMNS = {"subject_id", "locations", "metadata", "subject_set_id"}


def wrong_columns_hint(header: list[str], expected: str = "classification export") -> str:
    """What the file looks like instead, when it lacks the columns of the ``expected`` kind of file
    (``"classification export"`` or ``"subjects export"``)."""
    cols = set(header)
    if SUBJECTS_EXPORT_COLUMNS <= cols or {"subject_id", "locations"} <= cols:
        return ("; this looks like a Zooniverse *subjects* export: pass it with --subjects, and give the "
                "classifications export as the argument")
    if {"classification_id", "annotations", "subject_ids"} <= cols:
        if expected == "classification export":
            return ("; it looks like a Zooniverse classification export with columns removed or renamed (edited in a "
                    f"spreadsheet?): {DOWNLOAD_HINT}")
        return ("; this looks like a Zooniverse *classification* export: give it as the argument, and the "
                "subjects export with --subjects")
    if {"subject_id", "x1", "y1", "x2", "y2"} <= cols or {"subject_id", "x", "y"} <= cols:
        return "; this looks like a table of boxes or clumps, not a classification export"
    if len(header) == 1:
        return ("; only one column was found: is the file comma-separated? (a spreadsheet may have re-saved it "
                f"with ';' or tabs): {DOWNLOAD_HINT}")
    return f"; {DOWNLOAD_HINT}"
