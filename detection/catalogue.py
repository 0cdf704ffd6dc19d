"""Detections -> rows of a clump catalogue in the column convention of Popp et al. (2024)'s published one.

Pixel columns are in the ORIGINAL image (x right, y down, 0-based corner origin). Sky positions come from a
tangent-plane WCS centred on the galaxy (the subject's ra/dec at the image centre, north up, east left) at a
pixel scale of ``arcsecPerSide / width`` (:mod:`clumptool.common.wcs`, the same WCS the simulator uses), so
the galaxy centre pixel maps exactly to galaxy_ra/galaxy_dec. Subjects without ra/dec or arcsecPerSide get
NaN sky columns. ``subject_id`` is kept as text (the image file stem).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from astropy.io.votable import from_table
from astropy.io.votable.tree import Info
from astropy.table import Table

from clumptool.aggregation.subjects import read_subjects
from clumptool.common.atomic import atomic_path
from clumptool.common.errors import ClumptoolError, where
from clumptool.common.ids import normalise_subject_ids
from clumptool.common.metadata import find_metadata_column
from clumptool.common.wcs import pixel_to_sky
from clumptool.detection.options import CATALOGUE_FORMATS as FORMATS

CATALOGUE_SCHEMA = pa.schema([
    ("subject_id", pa.string()),
    ("clump_id", pa.int64()),            # unique within the catalogue, in write order
    ("clump_label_id", pa.int64()),      # 1 = clump, 2 = odd clump
    ("clump_label_name", pa.string()),
    ("clump_score", pa.float64()),
    ("clump_centre_px_x", pa.float64()),
    ("clump_centre_px_y", pa.float64()),
    ("clump_px_x1", pa.float64()),
    ("clump_px_x2", pa.float64()),
    ("clump_px_y1", pa.float64()),
    ("clump_px_y2", pa.float64()),
    ("clump_centre_ra", pa.float64()),
    ("clump_centre_dec", pa.float64()),
    ("galaxy_ra", pa.float64()),
    ("galaxy_dec", pa.float64()),
    ("FWHM_r_px", pa.float64()),         # PSF FWHM in image pixels (subject metadata fwhmImagePix)
    ("image_width", pa.int64()),
    ("image_height", pa.int64()),
    ("pixel_scale_arcsec", pa.float64()),
    ("model_version", pa.string()),
])
CATALOGUE_COLUMNS = tuple(CATALOGUE_SCHEMA.names)


@dataclass(frozen=True)
class SubjectSky:
    """What the catalogue needs of a subject: its sky centre, angular size and PSF FWHM (NaN when unknown)."""

    ra: float = float("nan")
    dec: float = float("nan")
    arcsec_per_side: float = float("nan")
    fwhm_px: float = float("nan")


def _float(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def subject_sky_table(subjects: pd.DataFrame, source: str = "subjects",
                      fwhm_column: str = "fwhmImagePix") -> dict[str, SubjectSky]:
    """Subject metadata (as from :func:`~clumptool.aggregation.subjects.read_subjects`) -> SubjectSky by id.

    Reads ``ra``/``dec`` (any case), or Clump Scout's combined ``'ra, dec'`` text field, ``arcsecPerSide``
    and ``fwhm_column``. Missing fields become NaN.
    """
    columns = list(subjects.columns)
    ra_col, dec_col = find_metadata_column(columns, "ra"), find_metadata_column(columns, "dec")
    both_col = find_metadata_column(columns, "ra, dec")
    side_col = find_metadata_column(columns, "arcsecPerSide")
    fwhm_col = find_metadata_column(columns, fwhm_column)
    sids = normalise_subject_ids(subjects["subject_id"], where=source, field="subject_id")
    out: dict[str, SubjectSky] = {}
    for i, row in enumerate(subjects.itertuples(index=False)):
        rec = dict(zip(subjects.columns, row, strict=True))
        sid = sids.iloc[i]
        ra = _float(rec[ra_col]) if ra_col is not None else float("nan")
        dec = _float(rec[dec_col]) if dec_col is not None else float("nan")
        if both_col is not None and not (np.isfinite(ra) and np.isfinite(dec)):
            text = rec[both_col]
            if isinstance(text, str) and text.strip():
                parts = text.replace(",", " ").split()
                if len(parts) != 2:
                    raise ClumptoolError(f"{where(source, f'subject_id {sid} (row {i + 1})', 'ra, dec')}: "
                                         f"expected 'ra, dec' in degrees, got {text!r}")
                ra, dec = _float(parts[0]), _float(parts[1])
        out[sid] = SubjectSky(ra=ra, dec=dec,
                              arcsec_per_side=_float(rec[side_col]) if side_col is not None else float("nan"),
                              fwhm_px=_float(rec[fwhm_col]) if fwhm_col is not None else float("nan"))
    return out


def read_subject_sky(path: str | os.PathLike, fwhm_column: str = "fwhmImagePix") -> dict[str, SubjectSky]:
    """Read a subjects export (or any table with subject_id) into SubjectSky records keyed by text id."""
    return subject_sky_table(read_subjects(Path(path)), source=str(path), fwhm_column=fwhm_column)


def empty_catalogue() -> pd.DataFrame:
    """A catalogue with no rows and the right column types."""
    return CATALOGUE_SCHEMA.empty_table().to_pandas()


def catalogue_rows(subject_id: str, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, width: int,
                   height: int, classes: list[str], sky: SubjectSky | None = None, first_id: int = 0,
                   model_version: str = "") -> pd.DataFrame:
    """One catalogue row per detected box of one galaxy, highest score first.

    ``boxes`` are ``[x1, y1, x2, y2]`` in original image pixels; ``classes`` maps label ids to names
    (``classes[0]`` is the background).
    """
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    n = len(boxes)
    sky = sky or SubjectSky()
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    scale = sky.arcsec_per_side / width if width else float("nan")
    if n and np.isfinite(sky.ra) and np.isfinite(sky.dec) and np.isfinite(scale) and scale > 0:
        ra, dec = pixel_to_sky(cx, cy, sky.ra, sky.dec, scale, width, height)
    else:
        ra, dec = np.full(n, np.nan), np.full(n, np.nan)
    names = [classes[k] if 0 <= k < len(classes) else f"class_{k}" for k in labels]
    data = {
        "subject_id": [str(subject_id)] * n,
        "clump_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "clump_label_id": labels,
        "clump_label_name": names,
        "clump_score": scores,
        "clump_centre_px_x": cx,
        "clump_centre_px_y": cy,
        "clump_px_x1": boxes[:, 0],
        "clump_px_x2": boxes[:, 2],
        "clump_px_y1": boxes[:, 1],
        "clump_px_y2": boxes[:, 3],
        "clump_centre_ra": np.asarray(ra, dtype=float),
        "clump_centre_dec": np.asarray(dec, dtype=float),
        "galaxy_ra": np.full(n, sky.ra),
        "galaxy_dec": np.full(n, sky.dec),
        "FWHM_r_px": np.full(n, sky.fwhm_px),
        "image_width": np.full(n, int(width), dtype=np.int64),
        "image_height": np.full(n, int(height), dtype=np.int64),
        "pixel_scale_arcsec": np.full(n, scale),
        "model_version": [model_version] * n,
    }
    return pd.DataFrame(data, columns=list(CATALOGUE_COLUMNS))


def to_arrow(df: pd.DataFrame) -> pa.Table:
    """A catalogue frame as an Arrow table with the fixed schema (for row-group streaming)."""
    return pa.Table.from_pandas(df, schema=CATALOGUE_SCHEMA, preserve_index=False)


# ------------------------------------------------------------------------------------------------ formats

UNITS = {  # astropy unit strings of the catalogue columns (the rest are dimensionless or text)
    "clump_centre_px_x": "pix", "clump_centre_px_y": "pix", "clump_px_x1": "pix", "clump_px_x2": "pix",
    "clump_px_y1": "pix", "clump_px_y2": "pix", "clump_centre_ra": "deg", "clump_centre_dec": "deg",
    "galaxy_ra": "deg", "galaxy_dec": "deg", "FWHM_r_px": "pix", "image_width": "pix", "image_height": "pix",
    "pixel_scale_arcsec": "arcsec / pix",
}
ASTROPY_FORMAT = {"fits": "fits", "ecsv": "ascii.ecsv", "votable": "votable"}
# FITS header keywords (8 characters) of the run settings kept in every format's table metadata
META_KEYS = {"model_version": "MODELVER", "score_threshold": "SCORETHR", "score_threshold_source": "THRSRC",
             "nms_iou": "NMSIOU", "drop_central": "DROPCEN", "n_images": "NIMAGES", "n_missing_images": "NMISSING",
             "images": "IMAGES", "subjects": "SUBJECTS", "model": "MODEL", "pixels": "PIXELS",
             "crop": "CROP"}


def format_of(name: str) -> str | None:
    """The catalogue format a file name's suffix asks for (None: no known suffix)."""
    low = name.lower()
    return next((fmt for fmt, sufs in FORMATS.items() if low.endswith(sufs)), None)


def with_units(schema: pa.Schema = CATALOGUE_SCHEMA) -> pa.Schema:
    """The catalogue schema with each column's unit in its Parquet field metadata (key ``unit``)."""
    fields = [f.with_metadata({b"unit": UNITS[f.name].encode()}) if f.name in UNITS else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def astropy_table(table: pa.Table, metadata: dict):
    """An astropy Table of the catalogue: units on the columns, run settings (``META_KEYS``) in ``meta``."""
    def column(name: str) -> np.ndarray:
        col = table.column(name)
        if pa.types.is_string(col.type):  # FITS needs fixed-width text, not Python objects
            return np.array(col.to_pylist(), dtype=str)
        return col.to_numpy(zero_copy_only=False)

    t = Table({name: column(name) for name in table.column_names})
    for name, unit in UNITS.items():
        if name in t.colnames:
            t[name].unit = unit
    for key, card in META_KEYS.items():
        value = metadata.get(key)
        t.meta[card] = "" if value is None else value
    t.meta["COMMENT"] = ["clumptool predict catalogue: one row per detected clump",
                         "pixels: original image, x right, y down, origin at the top-left corner"]
    return t


def write_astropy(table: pa.Table, target: str | os.PathLike, fmt: str, metadata: dict) -> Path:
    """Write the catalogue as FITS, ECSV or VOTable (atomically)."""
    t = astropy_table(table, metadata)
    target = Path(target)
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy: long FITS strings need CONTINUE cards, said as a warning
        if fmt == "votable":  # astropy's VOTable writer drops Table.meta: keep the settings as INFO elements
            vot = from_table(t)
            infos = vot.get_first_table().infos
            for key, value in t.meta.items():
                if key != "COMMENT":
                    infos.append(Info(name=key, value=str(value)))
            vot.to_xml(str(tmp))
        else:
            t.write(tmp, format=ASTROPY_FORMAT[fmt], overwrite=True)
    return target
