"""Read and write the tables that flow between layers (Parquet by default, CSV too)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from clumptool.common.atomic import atomic_path
from clumptool.common.errors import ClumptoolError

TABLE_FORMATS = ("parquet", "csv")


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
