"""The unlabelled pool: which galaxies ``select-next-batch`` may choose from, with their images and metadata.

A pool is either

* a folder of images: galaxy id = file stem (``<galaxy_id>.png|.jpg|.fits``), no metadata; or
* a table (CSV/Parquet) with an id column (``galaxy_id``, else ``subject_id``) and an image column
  (``image_path``, ``image``, ``file``, ``path`` or ``filename``; relative paths are taken from the table's
  folder), or no image column and ``images=FOLDER`` holding ``<id>.png``. Every other column is carried into
  the selection (ra, dec, redshift ...); a Zooniverse-style ``metadata`` JSON column is expanded into
  columns (``#``/``!`` prefixes stripped).

Galaxies are removed when already labelled (``labelled`` tables: anything with ``galaxy_id`` or
``subject_id``, e.g. aggregate's boxes/subjects tables or a subjects export, or a classification export,
whose ``subject_ids`` and any ``#galaxy_id`` in ``subject_data`` count) or already taken by an earlier
active-learning round (the ledger's ``already_taken()``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.galaxies import galaxy_id_in_metadata
from clumptool.common.errors import ClumptoolError, where
from clumptool.common.ids import normalise_subject_ids, subject_id_text
from clumptool.common.metadata import parse_metadata
from clumptool.common.tables import read_table
from clumptool.detection.data import unclassified_dropped
from clumptool.detection.images import index_images

ID_COLUMNS = ("galaxy_id", "subject_id")
IMAGE_COLUMNS = ("image_path", "image", "file", "path", "filename")


def _metadata_columns(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The ``metadata`` JSON column expanded into columns (plain key names); existing columns win."""
    records = [parse_metadata(text, where=path, row=f"row {i + 2}") for i, text in enumerate(df["metadata"])]
    meta = pd.DataFrame.from_records(records, index=df.index)
    meta = meta[[c for c in meta.columns if c not in df.columns]]
    return pd.concat([df.drop(columns=["metadata"]), meta], axis=1)


def _table_pool(path: Path, images: Path | None) -> pd.DataFrame:
    df = read_table(path)
    id_col = next((c for c in ID_COLUMNS if c in df.columns), None)
    if id_col is None:
        raise ClumptoolError(f"{path}: pool table needs a 'galaxy_id' or 'subject_id' column; "
                             f"found {', '.join(map(str, df.columns))}")
    df = df.copy()
    ids = normalise_subject_ids(df[id_col], where=path, field=id_col)
    if id_col == "galaxy_id":
        df["galaxy_id"] = ids
    else:
        df.insert(0, "galaxy_id", ids)
    df, n_dup = _drop_duplicate_rows(df, path, id_col)
    if "metadata" in df.columns:
        df = _metadata_columns(df, path)
    img_col = next((c for c in IMAGE_COLUMNS if c in df.columns), None)
    if img_col is not None:
        base = path.parent
        paths = [str(p if Path(str(p)).is_absolute() else base / str(p)) if isinstance(p, str) and p else ""
                 for p in df[img_col]]
        if img_col != "image_path":
            df = df.drop(columns=[img_col])
        df["image_path"] = paths
    elif images is not None:
        index = index_images(images)
        df["image_path"] = [str(index[g]) if g in index else "" for g in df["galaxy_id"]]
    else:
        raise ClumptoolError(f"{path}: no image column ({', '.join(IMAGE_COLUMNS)}); add one or pass the image "
                             "folder (--images) holding <galaxy_id>.png")
    exists = np.array([bool(p) and os.path.isfile(p) for p in df["image_path"]])
    if not exists.all():
        bad = np.flatnonzero(~exists)
        eg = ", ".join(f"{df['galaxy_id'].iloc[i]} ({df['image_path'].iloc[i] or 'no path'})" for i in bad[:3])
        raise ClumptoolError(f"{path}: {len(bad)} of {len(df)} pool galaxies have no image file, e.g. {eg}; fix "
                             "the image paths (relative paths are read from the table's folder) or remove those "
                             "rows")
    df.attrs["duplicate_rows"] = n_dup
    return df


def _drop_duplicate_rows(df: pd.DataFrame, path: Path, id_col: str) -> tuple[pd.DataFrame, int]:
    """Rows repeated exactly are dropped (and counted); two different rows for one galaxy are an error
    that names both, since either could be the right one."""
    exact = df.duplicated(keep="first").to_numpy()
    kept = df[~exact]
    clash = kept["galaxy_id"].duplicated(keep=False).to_numpy()
    if clash.any():
        gid = kept["galaxy_id"].to_numpy()[clash][0]
        rows = [int(i) + 2 for i in np.flatnonzero(df["galaxy_id"].to_numpy() == gid)[:2]]
        raise ClumptoolError(f"{where(path, f'rows {rows[0]} and {rows[1]}', id_col)}: two different rows for "
                             f"galaxy {gid}; keep one row per galaxy")
    return kept.reset_index(drop=True), int(exact.sum())


def read_pool(pool: str | os.PathLike, images: str | os.PathLike | None = None) -> pd.DataFrame:
    """The whole pool (before exclusions): ``galaxy_id`` (str), ``image_path`` (str) and carried metadata."""
    pool = Path(pool)
    if not pool.exists():
        raise ClumptoolError(f"{pool}: pool not found (give a folder of images or a table)")
    if pool.is_dir():
        index = index_images(pool)
        if not index:
            raise ClumptoolError(f"{pool}: no images (.png, .jpg, .fits) in the pool folder")
        ids = sorted(index)
        df = pd.DataFrame({"galaxy_id": ids, "image_path": [str(index[i]) for i in ids]})
    else:
        df = _table_pool(pool, Path(images) if images is not None else None)
    if df.empty:
        raise ClumptoolError(f"{pool}: the pool is empty; give a folder of images or a table with one row per "
                             "galaxy")
    n_dup = df.attrs.get("duplicate_rows", 0)
    df = df.reset_index(drop=True)
    df.attrs["duplicate_rows"] = n_dup
    return df


def _galaxy_ids_in_subject_data(series: pd.Series) -> set[str]:
    out: set[str] = set()
    for text in series.dropna().unique():
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            continue
        for meta in data.values() if isinstance(data, dict) else ():
            gid = galaxy_id_in_metadata(meta)
            if gid is not None:
                out.add(gid)
    return out


def _ids_of(series: pd.Series, path: Path) -> set[str]:
    """The ids of a labelled table's column; blank cells are rows without an id there, skipped."""
    present = series[series.map(subject_id_text).notna()]
    return set(normalise_subject_ids(present, where=path))


def read_labelled_ids(paths: Iterable[str | os.PathLike]) -> set[str]:
    """Galaxy ids already labelled, from boxes/subjects tables or classification exports (see module doc)."""
    ids: set[str] = set()
    for p in paths:
        p = Path(p)
        df = unclassified_dropped(read_table(p))  # aggregate's subjects table also lists unclassified ones
        found = False
        if "subject_ids" in df.columns:  # Zooniverse classification export
            ids |= _ids_of(df["subject_ids"], p)
            if "subject_data" in df.columns:
                ids |= _galaxy_ids_in_subject_data(df["subject_data"])
            found = True
        for col in ID_COLUMNS:
            if col in df.columns:
                ids |= _ids_of(df[col], p)
                found = True
        if "metadata" in df.columns:
            for text in df["metadata"].dropna().unique():
                try:
                    meta = json.loads(text)
                except (TypeError, json.JSONDecodeError):
                    continue
                gid = galaxy_id_in_metadata(meta)
                if gid is not None:
                    ids.add(gid)
        if not found:
            raise ClumptoolError(f"{p}: a labelled table needs 'galaxy_id', 'subject_id' or 'subject_ids' "
                                 f"(classification export); found {', '.join(map(str, df.columns))}")
    return ids


@dataclass
class Pool:
    """The pool after exclusions, and how many galaxies each exclusion removed."""

    table: pd.DataFrame
    n_total: int
    n_labelled: int = 0
    n_taken: int = 0
    excluded: set[str] = field(default_factory=set)
    n_duplicates: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        dup = f" ({self.n_duplicates:,} repeated rows dropped)" if self.n_duplicates else ""
        return (f"pool: {self.n_total:,} galaxies{dup}, {self.n_labelled:,} already labelled, "
                f"{self.n_taken:,} taken by earlier rounds -> {len(self.table):,} to score")


def build_pool(pool: str | os.PathLike, images: str | os.PathLike | None = None,
               labelled: Iterable[str | os.PathLike] = (), taken: set[str] | None = None) -> Pool:
    """Read the pool and remove labelled galaxies and those taken by earlier rounds."""
    df = read_pool(pool, images)
    notes = []
    lab: set[str] = set()
    for path in labelled:  # one file at a time, to name a file whose ids match no pool galaxy
        ids = read_labelled_ids([path])
        if ids and not df["galaxy_id"].isin(ids).any():
            notes.append(f"note: none of the {len(ids):,} ids in --labelled {path} is a pool galaxy id (pool "
                         f"ids look like {df['galaxy_id'].iloc[0]!r}, that file's like {sorted(ids)[0]!r}); if "
                         "they should match, both must use the same ids")
        lab |= ids
    taken = set(taken or ())
    is_lab = df["galaxy_id"].isin(lab).to_numpy()
    is_taken = df["galaxy_id"].isin(taken).to_numpy() & ~is_lab
    keep = ~(is_lab | is_taken)
    return Pool(table=df[keep].reset_index(drop=True), n_total=len(df), n_labelled=int(is_lab.sum()),
                n_taken=int(is_taken.sum()), excluded=set(df["galaxy_id"][~keep]),
                n_duplicates=int(df.attrs.get("duplicate_rows", 0)), notes=notes)
