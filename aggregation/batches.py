"""Cut a classification export into record-aligned pieces, and map a function over them on several cores.

This process only cuts the file at record ends (quote parity, :func:`record_ranges`); each worker reads its
own pieces with Arrow's CSV parser (RFC 4180 with newlines inside quoted JSON fields), the ``metadata`` JSON with
Arrow's JSON reader (only ``subject_dimensions`` is kept), and applies what remains in Python (the annotations
JSON and the row rules). Results are merged back in file order with a bounded number in flight, so memory stays
flat whatever the file size. A file Arrow refuses is handed to the pandas tokenizer only to name the broken row.
"""

from __future__ import annotations

import gc
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from clumptool.aggregation.csvcheck import DOWNLOAD_HINT, explain_parse_error, locate_non_utf8
from clumptool.common.errors import ClumptoolError


@dataclass
class ShortRows:
    """Rows with fewer fields than the header (a row cut short), seen by the CSV reader and skipped."""

    texts: list[str] = field(default_factory=list)
    broken: bool = False  # a row with too many fields, or a quoted field still open: the file is broken

    def __call__(self, row: pa_csv.InvalidRow) -> str:
        if row.actual_columns > row.expected_columns or row.text.count('"') % 2:
            self.broken = True
        self.texts.append(row.text)
        return "skip"


def record_ranges(path: Path, block_bytes: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of consecutive pieces of the file, each about ``block_bytes`` and ending at a record end;
    the first piece is the header record alone.

    RFC 4180 doubles the quotes inside quoted fields, so a newline ends a record iff the quotes before it (from
    a record start) are even in number: ``bytes.count`` at C speed, the file read once in this process, so the
    CSV parse can run in the workers. A record longer than a block makes its piece longer."""
    offset, carry = 0, b""
    with open(path, "rb") as fh:
        while block := fh.read(block_bytes):
            buf = carry + block
            cut = _first_record_end(buf) if offset == 0 else _last_record_end(buf)
            if cut:
                yield offset, cut
                offset += cut
            carry = buf[cut:]
    if carry:
        yield offset, len(carry)


def _last_record_end(buf: bytes) -> int:
    """Index just past the last newline of ``buf`` (which starts at a record start) with even quotes before it."""
    end = buf.rfind(b"\n")
    quotes = buf.count(b'"', 0, max(end, 0))
    while end >= 0 and quotes % 2:
        prev = buf.rfind(b"\n", 0, end)
        quotes -= buf.count(b'"', max(prev, 0), end)
        end = prev
    return end + 1


def _first_record_end(buf: bytes) -> int:
    """Index just past the first newline of ``buf`` (which starts at a record start) with even quotes before it."""
    start = quotes = 0
    while (end := buf.find(b"\n", start)) >= 0:
        quotes += buf.count(b'"', start, end)
        if quotes % 2 == 0:
            return end + 1
        start = end + 1
    return 0


def read_range(path: str, header: list[str], columns: list[str], piece: tuple[int, int]
               ) -> tuple[pa.Table, ShortRows]:
    """The export's ``columns`` (all as exact strings) in one piece of :func:`record_ranges`, by Arrow's CSV parser
    (RFC 4180, newlines inside quoted JSON fields), and the rows it found cut short."""
    with open(path, "rb") as fh:
        fh.seek(piece[0])
        data = fh.read(piece[1])
    short = ShortRows()
    if not data.strip(b"\r\n"):  # blank lines only: Arrow calls that an empty file
        return pa.table({c: pa.array([], pa.string()) for c in columns}), short
    table = pa_csv.read_csv(
        pa.py_buffer(data),
        read_options=pa_csv.ReadOptions(column_names=header, use_threads=False, block_size=max(len(data), 1 << 20)),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=short),
        convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in columns}, include_columns=columns,
                                              strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    return table, short


def raise_csv_error(path: Path, exc: Exception | None) -> None:
    """The file is not valid CSV (or not UTF-8): say where, as the pandas tokenizer locates it."""
    if exc is not None and "UTF8" in str(exc):
        raise locate_non_utf8(path) from None
    try:
        with pd.read_csv(path, dtype=object, keep_default_na=False, chunksize=50_000, encoding="utf-8") as reader:
            for _ in reader:
                pass
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise explain_parse_error(path, error) from None
    raise ClumptoolError(f"{path}: the CSV structure is broken ({exc or 'a row with too many fields'}); "
                         f"{DOWNLOAD_HINT}")


_DIMENSIONS = pa.schema([("subject_dimensions", pa.list_(pa.struct([("naturalWidth", pa.float64()),
                                                                    ("naturalHeight", pa.float64())])))])


@dataclass
class FrameSizes:
    """Natural image size of each frame of each row: ``counts[i]`` frames for row ``i``, sizes in row order."""

    counts: np.ndarray
    width: np.ndarray
    height: np.ndarray

    def per_row(self) -> list[list[tuple[float, float]]]:
        pairs = list(zip(self.width.tolist(), self.height.tolist(), strict=True))
        ends = np.cumsum(self.counts).tolist()
        return [pairs[end - n:end] for end, n in zip(ends, self.counts.tolist(), strict=True)]


def frame_sizes(metadata: pa.Array | pa.ChunkedArray) -> FrameSizes | None:
    """``subject_dimensions`` of every row's ``metadata`` JSON, parsed by Arrow's JSON reader in one call.

    The rows' objects are read straight from the column's buffer. ``None`` when Arrow cannot stand in for
    reading each row on its own (a row that is empty, not one object, broken, or with unusual values):
    then the row rules parse each row's metadata and name the broken one.
    """
    metadata = metadata.combine_chunks() if isinstance(metadata, pa.ChunkedArray) else metadata
    if len(metadata) == 0 or not pc.all(pc.and_(pc.starts_with(metadata, "{"), pc.ends_with(metadata, "}"))).as_py():
        return None
    offsets = np.frombuffer(metadata.buffers()[1], dtype=np.int32)[metadata.offset:metadata.offset + len(metadata) + 1]
    data = metadata.buffers()[2][int(offsets[0]):int(offsets[-1])]  # the objects back to back
    try:
        table = pa_json.read_json(pa.BufferReader(data),
                                  read_options=pa_json.ReadOptions(block_size=len(data) + 1, use_threads=False),
                                  parse_options=pa_json.ParseOptions(explicit_schema=_DIMENSIONS,
                                                                     unexpected_field_behavior="ignore"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(metadata):  # one object per row, no more, no less
        return None
    dims = table.column(0).combine_chunks()
    flat = pc.list_flatten(dims)
    valid = flat.is_valid()  # a null entry in the list: no size for that frame
    return FrameSizes(counts=pc.list_value_length(dims).fill_null(0).to_numpy(zero_copy_only=False),
                      width=pc.if_else(valid, pc.struct_field(flat, "naturalWidth"), None).to_numpy(zero_copy_only=False),
                      height=pc.if_else(valid, pc.struct_field(flat, "naturalHeight"), None).to_numpy(zero_copy_only=False))


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a while (also a decorator): a batch's rows allocate a million small
    containers without cycles, and the collections walking them took a quarter of the row rules' time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def map_in_order(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)`` in order, in ``workers`` processes (or this one), with at most 2 per worker in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    pending: deque = deque()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                while len(pending) >= 2 * workers or (pending and pending[0].done()):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def default_workers(path: Path, min_bytes: int) -> int:
    """Two processes for big files (the machine permitting), one below ``min_bytes`` (start-up costs more)."""
    return min(2, os.cpu_count() or 1) if path.stat().st_size >= min_bytes else 1
