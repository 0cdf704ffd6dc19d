"""Rows of an export that share one ``classification_id``: copies are dropped, conflicts are refused.

A classification id names one classification, so two rows with the same id are either a copy (an export
concatenated with itself, a download appended twice) or a corrupted file. Copies are harmless once dropped
(and counted); two *different* rows with one id cannot both be right, and keeping either silently would
credit marks to the wrong volunteer, so they are an error naming both rows unless the user chose
``--on-conflicting-duplicates keep-last``.

Finding the rows is free on the reader's hot path: the ids are compared as integers after reading, and
only when some id repeats is the file read a second time to compare those rows byte for byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clumptool.common.errors import ClumptoolError

ON_CONFLICT = ("error", "keep-last")


@dataclass
class DuplicateRows:
    """What was found: rows to drop (positions in the parsed table), copies dropped, conflicts seen."""

    drop: np.ndarray
    copies_dropped: int = 0
    conflicts: list[tuple[int, list[int]]] = field(default_factory=list)  # (classification id, data rows)


def _raw_rows(path: str | os.PathLike, ids: set[int], chunksize: int = 50_000) -> pd.DataFrame:
    """Data row number (1 = first row after the header), classification id and a digest of every field,
    for the rows whose id is in ``ids``."""
    parts = []
    start = 1
    with pd.read_csv(path, dtype=object, keep_default_na=False, chunksize=chunksize, encoding="utf-8") as reader:
        for chunk in reader:
            cid = pd.to_numeric(chunk["classification_id"], errors="coerce")
            hit = cid.isin(ids).to_numpy()
            if hit.any():
                rows = chunk[hit]
                parts.append(pd.DataFrame({
                    "data_row": np.flatnonzero(hit) + start,
                    "classification_id": cid[hit].astype("int64").to_numpy(),
                    "digest": pd.util.hash_pandas_object(rows, index=False).to_numpy(),
                }))
            start += len(chunk)
    if not parts:
        return pd.DataFrame({"data_row": [], "classification_id": [], "digest": []})
    return pd.concat(parts, ignore_index=True)


def find_duplicate_rows(path: str | os.PathLike, classification_ids: np.ndarray, on_conflict: str = "error") -> DuplicateRows:
    """Rows of the parsed table (``classification_ids`` in file order) to drop, and why.

    Byte-identical copies: all but the first are dropped. Different rows with one id: a
    :class:`ClumptoolError` naming them, or (``on_conflict="keep-last"``) all but the last are dropped.
    """
    if on_conflict not in ON_CONFLICT:
        raise ClumptoolError(f"--on-conflicting-duplicates {on_conflict!r}: use one of {', '.join(ON_CONFLICT)}")
    ids = pd.Series(classification_ids)
    repeated = ids.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return DuplicateRows(drop=np.zeros(len(ids), bool))
    raw = _raw_rows(path, set(ids[repeated].tolist()))
    distinct = raw.groupby("classification_id")["digest"].nunique()
    conflicting = set(distinct.index[distinct.to_numpy() > 1].tolist())
    rows_of = raw.groupby("classification_id")["data_row"].apply(list)
    conflicts = [(int(c), rows_of[c]) for c in sorted(conflicting)]
    if conflicts and on_conflict == "error":
        shown = "; ".join(f"classification_id {c} in data rows {', '.join(map(str, rows[:4]))}"
                          for c, rows in conflicts[:3])
        more = f" (and {len(conflicts) - 3} more ids)" if len(conflicts) > 3 else ""
        raise ClumptoolError(
            f"{path}: {len(conflicts)} classification id(s) appear in rows that differ: {shown}{more} "
            "(data rows counted from 1 after the header). One id is one classification, so the file is "
            "corrupted or two exports were merged wrongly: download the export again, or rerun with "
            "--on-conflicting-duplicates keep-last to keep the last row of each such id"
        )
    keep_last = ids.isin(conflicting).to_numpy()
    drop = np.where(keep_last, ids.duplicated(keep="last").to_numpy(), ids.duplicated(keep="first").to_numpy())
    return DuplicateRows(drop=drop, copies_dropped=int((drop & ~keep_last).sum()), conflicts=conflicts)
