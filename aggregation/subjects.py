"""Read subject metadata: a Zooniverse subjects export, or any flat table with ``subject_id``.

Zooniverse writes one row per (subject, subject set, workflow) with the metadata as a JSON string; this
returns one row per subject with one column per metadata key. Hidden-key prefixes (``#``, ``!``) are
stripped, so ``#fwhmImagePix`` becomes ``fwhmImagePix``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.csvcheck import (
    check_file_kind,
    explain_parse_error,
    locate_non_utf8,
    wrong_columns_hint,
)
from clumptool.aggregation.galaxies import GALAXY_ID_KEY
from clumptool.common.errors import ClumptoolError
from clumptool.common.ids import drop_blank_rows, subject_id_text, subject_ids_int64
from clumptool.common.metadata import metadata_key, parse_metadata
from clumptool.common.tables import read_table


def _numeric_if_possible(s: pd.Series) -> pd.Series:
    converted = pd.to_numeric(s, errors="coerce")
    # keep text columns as text; convert when every non-missing value is numeric
    return converted if converted.notna().sum() == s.notna().sum() else s


def _read(path: Path) -> pd.DataFrame:
    """The table, or an error that says which row and field is wrong and how to fix it."""
    csv_file = path.suffix.lower() not in (".parquet", ".pq")
    if csv_file:
        check_file_kind(path, "subjects export")
    try:
        df = read_table(path)
    except ClumptoolError as exc:
        cause = exc.__cause__
        if csv_file and isinstance(cause, UnicodeDecodeError):
            raise locate_non_utf8(path) from None
        if csv_file and isinstance(cause, pd.errors.ParserError):
            raise explain_parse_error(path, cause) from None
        if csv_file and isinstance(cause, pd.errors.EmptyDataError):
            raise ClumptoolError(f"{path}: no header line; give the subjects export CSV (--subjects)") from None
        raise
    if "subject_id" not in df.columns:
        raise ClumptoolError(
            f"{path}: no subject_id column, so not a subjects table (--subjects); it has "
            f"{', '.join(map(str, df.columns[:8]))}{wrong_columns_hint([str(c) for c in df.columns], 'subjects export')}")
    return df


def read_subjects(path: str | os.PathLike) -> pd.DataFrame:
    """Subject table: ``subject_id`` plus metadata columns (prefixes stripped), one row per subject."""
    path = Path(path)
    df = drop_blank_rows(_read(path))
    df["subject_id"] = subject_ids_int64(df["subject_id"], where=path, field="subject_id")
    df = df.drop_duplicates("subject_id", keep="first").reset_index(drop=True)
    if "metadata" not in df.columns:
        return df.rename(columns={c: metadata_key(c) for c in df.columns if c != "subject_id"})

    records = [parse_metadata(text, where=path, row=f"subject_id {sid}")
               for sid, text in zip(df["subject_id"], df["metadata"], strict=True)]
    meta_df = pd.DataFrame.from_records(records, index=df.index)
    meta_df = meta_df.apply(_numeric_if_possible)
    keep = [c for c in df.columns if c not in ("metadata",) and c not in meta_df.columns]
    out = pd.concat([df[keep], meta_df], axis=1)
    return out


def subject_galaxies(path: str | os.PathLike) -> dict[str, str]:
    """subject id -> galaxy id for the subjects of a subjects table that carry one (``#galaxy_id`` in a Zooniverse
    subjects export's metadata, ``galaxy_id`` in aggregate's subjects table) other than their own id: the galaxies
    select-next-batch uploaded, whose images keep the galaxy's name. Tables without it give {}."""
    table = read_subjects(path)
    if GALAXY_ID_KEY not in table.columns:
        return {}
    out = {}
    for sid, gid in zip(table["subject_id"], table[GALAXY_ID_KEY], strict=True):
        sid_text, gid_text = subject_id_text(sid), subject_id_text(gid)
        if sid_text is not None and gid_text is not None and gid_text != sid_text:
            out[sid_text] = gid_text
    return out


RETIRED_COLUMN = "retired_on_zooniverse"  # aggregate's subjects table: the workflow retired the subject (--subjects)


def workflow_retired(path: str | os.PathLike, workflow_id: int | None) -> pd.Series | None:
    """subject id (int64) -> whether workflow ``workflow_id`` has retired it: a non-blank ``retired_at`` in its row of
    a Zooniverse subjects export (one row per subject, subject set and workflow; any row without a ``workflow_id``
    column). None when the table has no ``retired_at`` (not a Zooniverse subjects export). Zooniverse's own word
    on whether volunteers still see a galaxy, whatever retirement limit or rule the workflow has."""
    path = Path(path)
    df = drop_blank_rows(_read(path))
    if "retired_at" not in df.columns:
        return None
    ids = subject_ids_int64(df["subject_id"], where=path, field="subject_id")
    rows = np.ones(len(df), bool)
    if workflow_id is not None and "workflow_id" in df.columns:
        rows = (pd.to_numeric(df["workflow_id"], errors="coerce") == workflow_id).to_numpy()
    retired = df["retired_at"].map(lambda v: bool(pd.notna(v) and str(v).strip())).to_numpy(bool)
    return pd.Series(retired[rows], index=ids.to_numpy()[rows]).groupby(level=0).any()
