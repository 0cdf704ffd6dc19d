"""Read and write the tables that flow between layers (Parquet by default, CSV too)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.common.atomic import atomic_path
from clumptool.common.errors import ClumptoolError, where

TABLE_FORMATS = ("parquet", "csv")
_TRUE = {"true", "1", "yes", "t", "y", "1.0"}
_BLANK = {"", "nan", "none", "<na>"}
_FALSE = {"false", "0", "no", "f", "n", "0.0"} | _BLANK


def write_table(df: pd.DataFrame, target: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``df`` atomically; the format comes from ``fmt`` or the file suffix."""
    target = Path(target)
    fmt = (fmt or target.suffix.lstrip(".") or "parquet").lower()
    if fmt not in TABLE_FORMATS:
        raise ClumptoolError(f"{target}: unknown table format '{fmt}' (use one of {', '.join(TABLE_FORMATS)})")
    with atomic_path(target) as tmp:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return target


def read_table(path: str | os.PathLike, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a Parquet or CSV table and check that the ``required`` columns are present."""
    path = Path(path)
    if not path.exists():
        raise ClumptoolError(f"{path}: file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ClumptoolError(f"{path}: cannot read table ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ClumptoolError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}"
        )
    return df


def true_false_column(values: pd.Series, ids: pd.Series, path: str | os.PathLike, column: str,
                      blank_is_false: bool = True) -> np.ndarray:
    """A true/false column (``is_finished``, ``is_stalled``) as booleans, as Parquet or CSV stores it; blank means
    false, or (``blank_is_false=False``, where false is the unsafe reading, e.g. ``in_progress``) is an error;
    anything unreadable is an error naming the file, the row's ``ids`` value and the column."""
    if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
        return values.to_numpy(dtype=bool)
    text = values.map(lambda v: "" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
                      else str(v).strip().lower())
    allowed = _TRUE | _FALSE if blank_is_false else _TRUE | (_FALSE - _BLANK)
    good = text.isin(allowed).to_numpy()
    if not good.all():
        pos = int(np.flatnonzero(~good)[0])
        value = values.iloc[pos]
        value = value.item() if isinstance(value, np.generic) else value
        shown = "blank" if text.iloc[pos] in _BLANK else f"{value!r} is not true or false"
        raise ClumptoolError(f"{where(path, f'subject_id {ids.iloc[pos]}', column)}: {shown}; give the subjects "
                             "table written by clumptool aggregate")
    return text.isin(_TRUE).to_numpy()
