"""Subject and galaxy ids: the one rule that turns whatever a table holds into the id text clumptool uses.

An id is compared as text everywhere (it is also an image file stem: ``<id>.png``), so the same galaxy must
give the same text whichever table it comes from. Tables disagree on how they store it: a CSV column of
integers becomes float as soon as one row is blank (``101`` -> ``101.0``), a hand-made list may carry
spaces, Zooniverse writes integers, a pool may use names such as ``galaxy_a``. The rule:

* integers (Python, numpy, pandas) -> decimal text: ``101`` -> ``'101'``;
* integral floats and integral float text -> the integer's text: ``101.0`` and ``'101.0'`` -> ``'101'``
  (never ``'101.0'``: that is a CSV round trip, not an id);
* other text -> stripped of surrounding spaces: ``' galaxy_a '`` -> ``'galaxy_a'`` (leading zeros kept);
* blank (NaN, None, ``''``, spaces only) -> not an id: :func:`normalise_subject_ids` raises a
  :class:`ClumptoolError` naming the file, row and field. A fully blank line of a hand-edited list is not a
  row: readers drop those first (:func:`read_subject_ids`), never a row that has other fields filled in.

Row numbers in messages are CSV line numbers (header = line 1), taken from the table's index, so they stay
right after a reader dropped blank lines.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Hashable

import numpy as np
import pandas as pd

from clumptool.common.errors import ClumptoolError
from clumptool.common.errors import where as _where
from clumptool.common.tables import read_table

_INTEGRAL_TEXT = re.compile(r"[+-]?\d+\.0*")


def subject_id_text(value: object) -> str | None:
    """The id text of one value (see the module rule), or None when it is blank."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return None
        return str(int(v)) if v.is_integer() else str(v)
    text = str(value).strip()
    if not text:
        return None
    if _INTEGRAL_TEXT.fullmatch(text):
        return str(int(text.split(".", 1)[0]))
    return text


def _row(label: Hashable, position: int) -> str:
    line = (int(label) if isinstance(label, int | np.integer) else position) + 2
    return f"row {line}"


def normalise_subject_ids(series: pd.Series, *, where: object, field: str | None = None) -> pd.Series:
    """``series`` as id text (same index), by the module rule.

    ``where`` names the table (a path, or e.g. ``"pool table"``) and ``field`` the column (default: the
    series name) for the error raised on a blank id, which says how to fix it.
    """
    field = field if field is not None else (str(series.name) if series.name is not None else "subject_id")
    if pd.api.types.is_integer_dtype(series.dtype) and not series.isna().any():
        return series.astype("int64").astype(str).astype(object)
    out = series.map(subject_id_text).astype(object)
    blank = out.isna().to_numpy()
    if blank.any():
        pos = int(np.flatnonzero(blank)[0])
        raise ClumptoolError(f"{_where(where, _row(series.index[pos], pos), field)}: empty id; fill in the "
                             "galaxy's id or remove the row")
    return out


def subject_ids_int64(series: pd.Series, *, where: object, field: str | None = None) -> pd.Series:
    """Zooniverse subject ids as int64 (for joins with an export), by the same rule as the text ids.

    A non-integer id (e.g. ``galaxy_a``) is an error naming the file, row and field.
    """
    text = normalise_subject_ids(series, where=where, field=field)
    numeric = pd.to_numeric(text, errors="coerce")
    bad = numeric.isna().to_numpy() | ~text.str.fullmatch(r"[+-]?\d+").fillna(False).to_numpy()
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        field = field if field is not None else (str(series.name) if series.name is not None else "subject_id")
        raise ClumptoolError(f"{_where(where, _row(series.index[pos], pos), field)}: {text.iloc[pos]!r} is not "
                             "an integer Zooniverse subject id; give the subject_id column of the subjects "
                             "export")
    return text.astype("int64")


def drop_blank_rows(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without rows whose every field is blank (NaN or spaces), keeping the index (line numbers)."""
    if df.empty:
        return df
    blank = np.ones(len(df), dtype=bool)
    for _, col in df.items():
        empty = col.isna().to_numpy(copy=True)  # a view may be read-only (pandas' copy-on-write)
        if col.dtype == object:
            empty |= (col.astype(str).str.strip() == "").to_numpy()
        blank &= empty
    return df[~blank]


def read_subject_ids(path: str | os.PathLike, column: str = "subject_id") -> list[str]:
    """The ids of a subjects list (CSV/Parquet with ``column``), in file order, each once.

    Fully blank lines are skipped; a row with other fields but no id is an error naming its line.
    """
    df = drop_blank_rows(read_table(path, required=(column,)))
    return list(dict.fromkeys(normalise_subject_ids(df[column], where=path, field=column).tolist()))
