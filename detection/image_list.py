"""The galaxies to run a detector on: a folder of images, or a survey-sized table of image paths.

* a folder of ``<subject_id>.png|.jpg|.fits``: every image, sorted by id (or those listed in ``--subjects``);
* a table (Parquet or CSV) with an image column (``image_path``, ``image``, ``file``, ``path`` or
  ``filename``; relative paths are taken from the table's folder), an optional id column (``subject_id``,
  ``galaxy_id`` or ``id``; default: the image file's stem) and optional ``ra``, ``dec`` (degrees),
  ``arcsecPerSide`` and FWHM (``fwhmImagePix``, ``FWHM_r_px`` or ``fwhm_px``, in image pixels) columns.
  Rows are run in table order.

Sky metadata are kept as float arrays aligned with the paths (32 bytes per galaxy), not per-row objects, so a
list of millions of galaxies stays small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.subjects import subject_galaxies
from clumptool.common.errors import ClumptoolError, where
from clumptool.common.ids import normalise_subject_ids, read_subject_ids
from clumptool.common.metadata import find_metadata_column
from clumptool.common.tables import read_table
from clumptool.detection.catalogue import SubjectSky, read_subject_sky
from clumptool.detection.images import find_subject_images, image_stem

PATH_COLUMNS = ("image_path", "image", "file", "path", "filename")
ID_COLUMNS = ("subject_id", "galaxy_id", "id")
FWHM_COLUMNS = ("fwhmimagepix", "fwhm_r_px", "fwhm_px", "fwhm")
TABLE_SUFFIXES = (".parquet", ".pq", ".csv")


@dataclass
class ImageList:
    """Galaxies in run order: id, image path and (NaN when unknown) ra, dec, arcsecPerSide, FWHM."""

    ids: list[str]
    paths: list[str]
    sky: np.ndarray | None = None  # (n, 4) float64: ra, dec, arcsec_per_side, fwhm_px; None = no metadata
    missing: list[str] = field(default_factory=list)  # listed subjects without an image

    def __len__(self) -> int:
        return len(self.paths)

    def sky_of(self, i: int) -> SubjectSky | None:
        if self.sky is None:
            return None
        ra, dec, side, fwhm = (float(v) for v in self.sky[i])
        return SubjectSky(ra=ra, dec=dec, arcsec_per_side=side, fwhm_px=fwhm)

    def n_without_sky(self) -> int:
        return 0 if self.sky is None else int((~np.isfinite(self.sky[:, 0])).sum())


def _sky_from_dict(ids: list[str], sky: dict[str, SubjectSky]) -> np.ndarray:
    out = np.full((len(ids), 4), np.nan)
    for i, sid in enumerate(ids):
        s = sky.get(sid)
        if s is not None:
            out[i] = (s.ra, s.dec, s.arcsec_per_side, s.fwhm_px)
    return out


def _table_sky(df: pd.DataFrame, fwhm_column: str) -> np.ndarray | None:
    columns = list(df.columns)
    fwhm = next((c for c in (find_metadata_column(columns, k) for k in (fwhm_column, *FWHM_COLUMNS))
                 if c is not None), None)
    wanted = [find_metadata_column(columns, "ra"), find_metadata_column(columns, "dec"),
              find_metadata_column(columns, "arcsecPerSide"), fwhm]
    if all(c is None for c in wanted):
        return None
    return np.column_stack([pd.to_numeric(df[c], errors="coerce").to_numpy(float) if c is not None
                            else np.full(len(df), np.nan) for c in wanted])


def read_image_table(path: str | os.PathLike, fwhm_column: str = "fwhmImagePix") -> ImageList:
    """A table of image paths (see the module docstring) -> ImageList, every path checked to exist."""
    path = Path(path)
    df = read_table(path)
    path_col = next((c for c in PATH_COLUMNS if c in df.columns), None)
    if path_col is None:
        raise ClumptoolError(f"--images {path}: no image path column ({', '.join(PATH_COLUMNS)}); found "
                             f"{', '.join(map(str, df.columns[:8]))}. Add an image_path column, or pass a folder")
    if df.empty:
        raise ClumptoolError(f"--images {path}: the table lists no images; give a table with one row per galaxy")
    base = path.parent
    paths: list[str] = []
    for i, v in enumerate(df[path_col].tolist()):
        if not isinstance(v, str) or not v.strip():
            raise ClumptoolError(f"{where(path, f'row {i + 2}', path_col)}: empty image path; fill it in or delete the row")
        p = Path(v.strip())
        paths.append(str(p if p.is_absolute() else base / p))
    id_col = next((c for c in ID_COLUMNS if c in df.columns), None)
    if id_col is None:
        ids = [image_stem(Path(p)) or Path(p).stem for p in paths]
    else:
        ids = normalise_subject_ids(df[id_col], where=path, field=id_col).tolist()
    dup = pd.Series(ids).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ClumptoolError(f"{where(path, f'row {i + 2}', id_col or path_col)}: galaxy {ids[i]} is listed twice; "
                             "keep one row per galaxy")
    return ImageList(ids=ids, paths=paths, sky=_table_sky(df, fwhm_column))


def read_image_list(images: str | os.PathLike, subjects: str | os.PathLike | None = None, *,
                    fwhm_column: str = "fwhmImagePix") -> ImageList:
    """The galaxies of ``images`` (folder or table), restricted to ``subjects`` when given (whose ra/dec,
    arcsecPerSide and FWHM then win). ``missing`` lists subjects without an image; the caller decides."""
    images = Path(images)
    wanted = read_subject_ids(subjects) if subjects is not None else None
    if wanted is not None and not wanted:
        raise ClumptoolError(f"--subjects {subjects}: lists no subjects; give the table of galaxies to catalogue")
    if images.is_dir():
        galaxy_of = subject_galaxies(subjects) if subjects is not None else None
        ids, found, missing = find_subject_images(images, wanted, galaxy_of)
        out = ImageList(ids=ids, paths=[str(p) for p in found], missing=missing)
    elif images.suffix.lower() in TABLE_SUFFIXES and images.is_file():
        out = read_image_table(images, fwhm_column)
        if wanted is not None:
            have = set(out.ids)
            order = {s: i for i, s in enumerate(out.ids)}
            keep = sorted(order[s] for s in set(wanted) if s in have)
            out = ImageList(ids=[out.ids[i] for i in keep], paths=[out.paths[i] for i in keep],
                            sky=None if out.sky is None else out.sky[keep],
                            missing=[s for s in dict.fromkeys(wanted) if s not in have])
            if not out.ids:
                raise ClumptoolError(f"--images {images}: none of the {len(wanted)} subjects in --subjects "
                                     f"{subjects} is in this table; check that they belong together")
        absent = [(i, p) for i, p in enumerate(out.paths) if not os.path.isfile(p)]
        out.missing = out.missing + [out.ids[i] for i, _ in absent]
        if absent:
            gone = {i for i, _ in absent}
            keep = [i for i in range(len(out.ids)) if i not in gone]
            first = absent[0][1]
            if not keep:
                raise ClumptoolError(f"--images {images}: none of the {len(out.ids)} image files exists (e.g. "
                                     f"{first}); relative paths are read from the table's folder")
            out = ImageList(ids=[out.ids[i] for i in keep], paths=[out.paths[i] for i in keep],
                            sky=None if out.sky is None else out.sky[keep], missing=out.missing)
    elif images.exists():
        raise ClumptoolError(f"--images {images}: is a file; give a folder of images or a table of image paths "
                             f"({', '.join(TABLE_SUFFIXES)})")
    else:
        raise ClumptoolError(f"--images {images}: not found; give a folder of images or a table of image paths")
    if subjects is not None:
        out.sky = _sky_from_dict(out.ids, read_subject_sky(subjects, fwhm_column=fwhm_column))
    return out
