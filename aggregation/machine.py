"""The detector as one more, modelled annotator of the consensus (issue 12, part 2).

A ``predict`` catalogue (or any table of subject_id, x, y, score) is turned into the marks of pseudo-volunteers,
one per *score band* (``detector:0.50-0.70`` ...), each of which viewed every galaxy of the export. The consensus
then learns each band's false-positive rate, miss rate and scatter jointly with the volunteers' skills: the
detector's reliability as a function of its score, judged against what the humans agree on. How far the machine
may move a clump's verdict is capped (:data:`MAX_MACHINE_LOG_ODDS`) and a clump needs at least one human mark
(consensus.py), so it can neither outvote a clear human consensus nor make a clump alone.

The detector is taken to have looked at every galaxy of the export: a galaxy with no row in the catalogue is
one where it found nothing (``predict`` writes one row per detection), within the field it looked at
(:class:`FieldOfView`, from the catalogue's metadata: the model's central crop, less predict's
``--drop-central`` disc): outside it, its silence is no evidence. Catalogue galaxies absent from the export
are counted, never invented. Pure functions over tables plus one reader; no import of the detection layer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.export import ExportData
from clumptool.aggregation.frames import cutout_frames
from clumptool.aggregation.galaxies import merge_subjects, newest_by_shown
from clumptool.common.catalogue import GALAXIES_FILE, META_KEY
from clumptool.common.errors import ClumptoolError, where
from clumptool.common.ids import subject_id_text

# score band edges: a detection scoring in [edge_i, edge_i+1) is a mark of band i; below the first, ignored
DEFAULT_BANDS = (0.05, 0.3, 0.5, 0.7, 0.9, 1.0)
# the machine's whole contribution to a candidate's log odds of being real is clipped to +-this (odds x 100 at
# most): enough to settle a galaxy where a few humans half agree, never enough to reverse a unanimous crowd
# (3 of 3 typical volunteers marking a spot give it ~ +9)
MAX_MACHINE_LOG_ODDS = 4.6
MACHINE_PREFIX = "detector:"
# the detector's miss rate is measured on the clumps the humans alone call real with P(false) below this
HUMAN_CONFIDENT = 0.1
# detections closer than this (px) are one spot: Faster R-CNN's per-class NMS keeps a "clump" and an "odd clump"
# box on the same clump, and the bands are modelled as exclusive outcomes of one look. Unmerged, a trained
# detector's learned band detection rates summed to 1.19 (bench/lean.py), so its silence counted as x0.01 on the
# odds of a spot being real (the cap) where its recall says ~x0.1. One clump FWHM (~5-7 px on 400 px images):
# two spots closer than that are not two resolved clumps
DEFAULT_MERGE_PX = 5.0
# predict's column names -> ours; a plain table may use ours directly
CATALOGUE_ALIASES = {"clump_centre_px_x": "x", "clump_centre_px_y": "y", "clump_score": "score",
                     "clump_label_id": "label"}
REQUIRED = ("subject_id", "x", "y", "score")
# the FITS/ECSV/VOTable cards of the field of view (detection/catalogue.py META_KEYS; aggregation never imports
# detection: the Parquet key and the galaxies file are common/catalogue.py's)
FIELD_CARDS = {"crop": "CROP", "drop_central": "DROPCEN"}


@dataclass(frozen=True)
class FieldOfView:
    """The part of each image the detector looked at: the central ``crop`` x ``crop`` px square (None: the whole
    image), less the disc of radius ``drop_central`` px about the centre whose detections predict dropped.

    Its silence says something only there: the bench's detector saw the central 192 px of 400, and counted as a
    miss outside it, its silence pushed a clump that two of six volunteers marked at 120 px out (S/N 25) below
    acceptance (bulge crowd, bench/lean.py)."""

    crop: float | None = None
    drop_central: float = 0.0

    def sees(self, x: np.ndarray, y: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
        """Per point (original pixels, image ``width`` x ``height``): inside the field."""
        dx = np.asarray(x, float) - np.asarray(width, float) / 2
        dy = np.asarray(y, float) - np.asarray(height, float) / 2
        inside = np.ones(np.broadcast(dx, dy).shape, bool)
        if self.crop:
            inside &= (np.abs(dx) <= self.crop / 2) & (np.abs(dy) <= self.crop / 2)
        if self.drop_central > 0:
            inside &= np.hypot(dx, dy) > self.drop_central
        return inside

    @property
    def whole_image(self) -> bool:
        return not self.crop and self.drop_central <= 0


@dataclass(frozen=True)
class Detections:
    """The detector's marks, checked: subject_id (int64), x, y (original pixels), score in [0, 1], label; and
    the field it looked at (a ``predict`` catalogue's metadata; a plain table: the whole image)."""

    table: pd.DataFrame
    source: str
    n_rows: int
    field: FieldOfView = FieldOfView()
    looked_at: np.ndarray | None = None  # the galaxies predict looked at (GALAXIES_FILE); None: not recorded
    n_images: int | None = None  # how many galaxies predict looked at (its metadata), when recorded
    missing: np.ndarray | None = None  # the subject ids predict had no image for (its metadata), when recorded


def read_detections(path: str | os.PathLike) -> Detections:
    """Read a ``predict`` catalogue (Parquet, CSV, FITS/ECSV/VOTable) or a table of subject_id, x, y, score
    [, label]; every problem names the file, the row and the field and says how to fix it."""
    path = Path(path)
    if not path.is_file():
        raise ClumptoolError(f"--detections {path}: file not found (give the catalogue written by "
                             "`clumptool predict`, e.g. catalogue/catalogue.parquet)")
    suffix = path.suffix.lower()
    meta: dict = {}
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq  # pandas' Parquet engine

            df = pd.read_parquet(path)
            raw = (pq.read_schema(path).metadata or {}).get(META_KEY.encode())
            meta = json.loads(raw) if raw else {}
        elif suffix in (".csv", ".txt"):
            df = pd.read_csv(path, dtype={"subject_id": str})
        elif suffix in (".fits", ".fit", ".ecsv", ".vot", ".xml"):
            from astropy.table import Table  # only FITS/VOTable catalogues need it (slow to import, and
            # aggregate forks consensus workers: every module imported early is in each of them)

            table = Table.read(path)
            meta = {key: table.meta.get(card) for key, card in FIELD_CARDS.items()}
            meta["n_images"] = table.meta.get("NIMAGES")
            df = table.to_pandas()
        else:
            raise ClumptoolError(f"--detections {path}: unknown table format '{suffix}' (use .parquet, .csv, .fits, "
                                 ".ecsv or .vot)")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ClumptoolError(f"--detections {path}: cannot read the table ({exc}); give a predict catalogue") from exc
    n_images = pd.to_numeric(pd.Series([meta.get("n_images")]), errors="coerce").iloc[0]
    missing = meta.get("missing_images")
    return Detections(check_detections(df, str(path)), str(path), len(df), field_of_view(meta, str(path)),
                      galaxies_looked_at(path), None if pd.isna(n_images) else int(n_images),
                      None if not isinstance(missing, list) else _integral_ids(pd.Series(missing, dtype=object)))


def _integral_ids(ids: pd.Series) -> np.ndarray:
    """Subject ids as int64 (galaxy names, which no export subject has, dropped)."""
    numeric = pd.to_numeric(ids.map(subject_id_text), errors="coerce")
    return np.unique(numeric.dropna().astype("int64").to_numpy())


def galaxies_looked_at(catalogue: Path) -> np.ndarray | None:
    """The subject ids predict looked at, from the ``galaxies.parquet`` of the catalogue's folder (None: a
    catalogue without one, e.g. a plain table or one written before predict recorded them)."""
    path = catalogue.parent / GALAXIES_FILE
    if not path.is_file():
        return None
    try:
        ids = pd.read_parquet(path, columns=["subject_id"])["subject_id"]
    except (OSError, ValueError, KeyError) as exc:
        raise ClumptoolError(f"--detections {catalogue}: {path} is not predict's list of the galaxies it looked at "
                             f"({exc}); run predict again, or give the catalogue without it") from exc
    return _integral_ids(ids)


def field_of_view(meta: dict, source: str) -> FieldOfView:
    """The detector's field from a catalogue's run settings (``crop``, ``drop_central``; missing or empty: the
    whole image, as in catalogues written before predict recorded its crop)."""
    def number(key: str) -> float:
        value = meta.get(key)
        if value is None or value == "":
            return 0.0
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v) or v < 0:
            raise ClumptoolError(f"--detections {source}: its metadata {key}={value!r} is not a size in px >= 0; "
                                 "give the catalogue as predict wrote it")
        return v

    return FieldOfView(crop=number("crop") or None, drop_central=number("drop_central"))


def check_detections(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """The table in our columns with types checked (raises on the first bad row, naming it)."""
    df = df.rename(columns={k: v for k, v in CATALOGUE_ALIASES.items() if k in df.columns and v not in df.columns})
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ClumptoolError(f"--detections {source}: missing column(s) {', '.join(missing)} (found "
                             f"{', '.join(map(str, df.columns))}); give a `clumptool predict` catalogue "
                             "(clump_centre_px_x/y, clump_score) or a table of subject_id, x, y, score")
    out = pd.DataFrame(index=df.index)
    sid = pd.to_numeric(df["subject_id"].astype(str).str.strip(), errors="coerce")
    _first_bad(source, ~np.isfinite(sid.to_numpy(float)) | (sid.to_numpy(float) % 1 != 0), df, "subject_id",
               "a Zooniverse subject id (a whole number, the image file stem)")
    out["subject_id"] = sid.astype("int64")
    for col in ("x", "y", "score"):
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(v)
        if col == "score":
            bad |= (v < 0) | (v > 1)
        _first_bad(source, bad, df, col, "a score in [0, 1]" if col == "score" else "a finite pixel position")
        out[col] = v
    label = pd.to_numeric(df["label"], errors="coerce") if "label" in df.columns else pd.Series(1, index=df.index)
    _first_bad(source, ~label.isin([1, 2]).to_numpy(), df, "label", "1 (clump) or 2 (odd clump)")
    out["label"] = label.astype("int64")
    return out.reset_index(drop=True)


def _row_name(source: str, i: int) -> str:
    """Row ``i`` (from 0) of a table as a person finds it: a CSV's line (the header is line 1), else row i + 1."""
    return f"line {i + 2}" if source.lower().endswith((".csv", ".txt")) else f"row {i + 1}"


def _first_bad(source: str, bad: np.ndarray, df: pd.DataFrame, field: str, want: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = df[field].iloc[i]
        value = value.item() if isinstance(value, np.generic) else value
        raise ClumptoolError(f"--detections {where(source, _row_name(source, i), field)}: {value!r} is not {want} "
                             f"({int(bad.sum())} such row(s)); fix or drop them")


def looked_at_in_export(looked_at: np.ndarray, data: ExportData) -> np.ndarray:
    """The export's galaxies (newest subject ids) among those predict looked at (by any subject of the galaxy)."""
    proto = data.classifications
    ids = pd.Series(looked_at, dtype="int64")
    if "shown_subject_id" in proto:
        ids = merge_subjects(ids, newest_by_shown(proto))
    return np.intersect1d(ids.to_numpy(), proto["subject_id"].unique())


def detector_galaxies(detections: Detections, data: ExportData) -> np.ndarray | None:
    """The export's galaxies the detector looked at: those of predict's ``galaxies.parquet``; without it, those
    the catalogue's metadata does not list as missing an image; None when nothing says (a plain table), read as
    every galaxy. A predict catalogue that looked at fewer galaxies than the export holds, with no record of
    which, is refused: its silence would count on galaxies it never saw."""
    source, export_ids = detections.source, np.sort(data.classifications["subject_id"].unique())
    if detections.looked_at is not None:
        stray = np.setdiff1d(_integral_ids(detections.table["subject_id"]), detections.looked_at)
        if len(stray):
            raise ClumptoolError(
                f"--detections {source}: detections of {len(stray):,} galaxies its {GALAXIES_FILE} does not list "
                f"(e.g. {', '.join(map(str, stray[:3]))}): that file is not this catalogue's; give the folder as "
                "predict wrote it")
        return looked_at_in_export(detections.looked_at, data)
    if detections.missing is not None and len(detections.missing):
        return np.setdiff1d(export_ids, looked_at_in_export(detections.missing, data))
    if detections.n_images is not None and detections.n_images < len(export_ids):
        raise ClumptoolError(
            f"--detections {source}: predict looked at {detections.n_images:,} galaxies, fewer than this export's "
            f"{len(export_ids):,}, and which ones is not recorded ({GALAXIES_FILE}, which predict writes beside the "
            "catalogue, is not there): its silence would count on galaxies it never saw. Give the catalogue in the "
            "folder predict wrote, or run predict on every subject of the export")
    return None


def check_detections_fit_export(detections: Detections, data: ExportData) -> np.ndarray | None:
    """Refuse a catalogue that cannot be of this export's galaxies: none of its detections is of one, or it
    looked at none of them (another project's or a stale catalogue: the detector would be taken to have looked
    at every galaxy and seen nothing), or a detection outside its galaxy's image (another pixel frame, e.g. a
    downscaled cutout's). Each would move the stopping rule silently. Returns :func:`detector_galaxies`."""
    det, source = detections.table, detections.source
    proto = data.classifications
    n_export = proto["subject_id"].nunique()
    looked = detector_galaxies(detections, data)
    if looked is not None and n_export and not len(looked):
        raise ClumptoolError(
            f"--detections {source}: predict looked at none of this export's {n_export:,} galaxies: a catalogue "
            "of other galaxies? Run predict on this export's subjects")
    newest = newest_by_shown(proto) if "shown_subject_id" in proto else pd.Series(dtype="int64")
    sid = merge_subjects(det["subject_id"], newest)
    known = np.isin(sid.to_numpy(), proto["subject_id"].unique())
    if len(det) and not known.any():
        first = ", ".join(map(str, pd.unique(det["subject_id"])[:3]))
        raise ClumptoolError(
            f"--detections {source}: none of its {len(det):,} detections is of a galaxy in this export (its subject "
            f"ids start {first}; the export's {', '.join(map(str, np.sort(proto['subject_id'].unique())[:3]))}): a "
            "catalogue of other galaxies? Give the catalogue `clumptool predict` wrote for this export's subjects")
    cut = merge_subjects(pd.Series(cutout_frames(data.subject_data)["subject_id"], dtype="int64"), newest)
    # a cutout's frame is the cropped region's extent, not the original image's: only whole images are checked
    sizes = data.frames[~data.frames["subject_id"].isin(cut)].groupby("subject_id")[["image_width", "image_height"]].max()
    if not len(sizes):
        return looked
    width = sid.map(sizes["image_width"]).to_numpy(float)
    height = sid.map(sizes["image_height"]).to_numpy(float)
    x, y = det["x"].to_numpy(float), det["y"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        outside = known & ((x < -1) | (y < -1) | (x > width + 1) | (y > height + 1))  # unknown size: NaN, never
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ClumptoolError(
            f"--detections {where(source, _row_name(source, i))}: the detection at ({x[i]:g}, {y[i]:g}) px lies "
            f"outside the {width[i]:g} x {height[i]:g} px image of subject {int(sid.iloc[i])} "
            f"({int(outside.sum())} such row(s)): the catalogue is in another pixel frame (positions must be the "
            "original image's pixels, as `clumptool predict` writes them)")
    return looked


def check_bands(bands: tuple[float, ...]) -> None:
    """Band edges must rise strictly within [0, 1]."""
    b = np.asarray(bands, float)
    if len(b) < 2 or np.any(np.diff(b) <= 0) or b[0] < 0 or b[-1] > 1:
        raise ClumptoolError(f"detector score bands {bands}: give at least two rising edges in [0, 1]")


def band_of(score: np.ndarray, bands: tuple[float, ...] = DEFAULT_BANDS) -> np.ndarray:
    """Index of each score's band (-1 below the first edge); the top edge belongs to the top band."""
    idx = np.searchsorted(np.asarray(bands, float), score, side="right") - 1
    idx = np.where(np.asarray(score) >= bands[-1], len(bands) - 2, idx)
    return np.where(np.asarray(score) < bands[0], -1, idx)


def band_names(bands: tuple[float, ...] = DEFAULT_BANDS) -> list[str]:
    return [f"{MACHINE_PREFIX}{lo:.2f}-{hi:.2f}" for lo, hi in zip(bands[:-1], bands[1:], strict=True)]


@dataclass(frozen=True)
class MachineAnnotator:
    """The export with the detector's bands added, and what was left out."""

    data: ExportData
    is_machine: np.ndarray  # per volunteer of ``data``
    n_detections_used: int
    n_outside_export: int  # catalogue rows of galaxies that are not in the export (reported, not invented)
    n_below_bands: int  # rows scoring under the first band edge
    subjects_outside_export: list
    n_merged: int = 0  # detections absorbed by a higher-scoring one within merge_px (one spot, one detection)


def merge_close_detections(detections: pd.DataFrame, radius: float = DEFAULT_MERGE_PX) -> pd.DataFrame:
    """One detection per spot: greedily, per galaxy, the highest-scoring detection absorbs those within
    ``radius`` px (its position, score and label are kept). ``radius <= 0``: the table unchanged."""
    if radius <= 0 or len(detections) < 2:
        return detections
    det = detections.sort_values(["subject_id", "score"], ascending=[True, False], kind="stable")
    sid, x, y = (det[c].to_numpy() for c in ("subject_id", "x", "y"))
    keep = np.ones(len(det), bool)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(det)], strict=True):
        for i in range(lo, hi - 1):
            if keep[i]:
                near = np.hypot(x[i + 1:hi] - x[i], y[i + 1:hi] - y[i]) < radius
                keep[i + 1:hi] &= ~near
    return det[keep].sort_index()


def add_machine_annotator(data: ExportData, detections: pd.DataFrame,
                          bands: tuple[float, ...] = DEFAULT_BANDS,
                          merge_px: float = DEFAULT_MERGE_PX, looked_at: np.ndarray | None = None) -> MachineAnnotator:
    """``data`` plus one pseudo-volunteer per score band that classified every galaxy of the export (of those
    ``looked_at``, when predict recorded them: elsewhere its silence is no evidence) and marked the detections of
    its band (tool 1 for odd clumps when the detector says so, else 0), after merging the detections within
    ``merge_px`` of a higher-scoring one (:func:`merge_close_detections`)."""
    check_bands(bands)
    proto = data.classifications
    if "shown_subject_id" in proto:  # detections on a galaxy's earlier subject are its newest's (galaxies.py)
        detections = detections.assign(subject_id=merge_subjects(detections["subject_id"], newest_by_shown(proto)))
    subjects = (np.sort(proto["subject_id"].unique()) if looked_at is None
                else looked_at_in_export(looked_at, data))
    known = np.isin(detections["subject_id"].to_numpy(), subjects)
    outside = sorted(set(detections.loc[~known, "subject_id"].tolist()))
    det = merge_close_detections(detections[known], merge_px)
    n_merged = int(known.sum()) - len(det)
    band = band_of(det["score"].to_numpy(float), bands)
    below = int((band < 0).sum())
    det, band = det[band >= 0], band[band >= 0]
    names = band_names(bands)
    n_h = len(data.volunteers)
    vols = pd.DataFrame({"volunteer": np.arange(n_h, n_h + len(names), dtype="int64"), "user_key": names,
                         "user_name": names, "anonymous": False})
    # one classification per (band, galaxy); ids below every real one (negative), so they never collide
    n_s = len(subjects)
    cls_band = np.repeat(np.arange(len(names)), n_s)
    cls_id = -(1 + np.arange(len(cls_band), dtype="int64"))
    cls_subject = np.tile(subjects, len(names))
    cls = pd.DataFrame({"classification_id": cls_id, "subject_id": cls_subject, "volunteer": n_h + cls_band,
                        "shown_subject_id": cls_subject})
    for col in proto.columns.difference(cls.columns):
        cls[col] = proto[col].iloc[0] if len(proto) else None
    pos = pd.Series(np.arange(n_s), index=subjects)
    mark_cls = cls_id[band * n_s + pos.reindex(det["subject_id"].to_numpy()).to_numpy()]
    cls["n_marks"] = np.bincount(-(mark_cls + 1), minlength=len(cls)).astype(proto["n_marks"].dtype
                                                                              if "n_marks" in proto else "int64")
    marks = pd.DataFrame({"classification_id": mark_cls, "subject_id": det["subject_id"].to_numpy(),
                          "volunteer": n_h + band, "frame": 0, "tool": np.where(det["label"].to_numpy() == 2, 1, 0),
                          "x": det["x"].to_numpy(float), "y": det["y"].to_numpy(float)})
    all_marks = pd.concat([data.marks, marks.astype({c: data.marks[c].dtype for c in marks.columns
                                                      if c in data.marks.columns})], ignore_index=True)
    all_vols = pd.concat([data.volunteers, vols], ignore_index=True)
    new = replace(data, classifications=pd.concat([proto, cls[proto.columns]], ignore_index=True),
                  marks=all_marks[data.marks.columns], volunteers=all_vols)
    is_machine = np.r_[np.zeros(n_h, bool), np.ones(len(names), bool)]
    return MachineAnnotator(new, is_machine, len(det), int((~known).sum()), below, outside, n_merged)


def measured_silence(p_false_human: np.ndarray, n_human: np.ndarray, silent: np.ndarray,
                     confident: float = HUMAN_CONFIDENT) -> float:
    """P(the detector marks nothing | a real clump), measured on the clumps the humans alone are sure of.

    Counted on the candidates that at least two volunteers marked and the humans alone call real (P(false) <
    ``confident``); ``silent``: no detector mark linked to it. Laplace-smoothed, floored at
    exp(-MAX_MACHINE_LOG_ODDS). The bands' own detection rates are learned one band at a time, each shrunk by
    its prior, and on a trained detector (recall 0.70 held out) they summed to 1.07: its silence on a real clump
    read as x0.01 on the odds where it missed about one clump in eight. Single clicks are left out of the count:
    the humans-only model calls most of them real (0.8 where 5-30% are)."""
    sure = (np.asarray(n_human) >= 2) & (np.asarray(p_false_human, float) < confident)
    rate = (np.count_nonzero(np.asarray(silent, bool) & sure) + 1.0) / (np.count_nonzero(sure) + 2.0)
    return max(float(rate), float(np.exp(-MAX_MACHINE_LOG_ODDS)))


def machine_log_odds_real(p_fp: np.ndarray, p_fn: np.ndarray, n_candidates: int, marker_cand: np.ndarray,
                          marker_band: np.ndarray, silent_real: float) -> np.ndarray:
    """The detector's evidence on each candidate, as log odds of being real (before the cap).

    The bands are exclusive outcomes of ONE annotator, not independent viewers: band ``b`` marks a real clump
    with probability ``d_b = 1 - p_fn_b`` and a false spot with ``f_b = p_fp_b d_b`` (the volunteers' model,
    visibility.py). A mark of band ``b`` multiplies the odds by ``d_b / f_b = 1 / p_fp_b``; no mark at all by
    ``silent_real / (1 - sum f)`` (``silent_real``: :func:`measured_silence`), so a detector that finds most
    clumps says a lot when it finds nothing. ``marker_cand`` / ``marker_band``: one entry per detector mark
    linked to a candidate (band = index into ``p_fp``)."""
    p_fp = np.clip(p_fp, 1e-6, 1 - 1e-6)
    d = np.clip(1.0 - p_fn, 1e-6, 1.0)
    silent = np.log(silent_real) - np.log(max(1.0 - (p_fp * d).sum(), 1e-3))
    marked = np.bincount(marker_cand, weights=-np.log(p_fp[marker_band]), minlength=n_candidates)
    n_marked = np.bincount(marker_cand, minlength=n_candidates)
    return np.where(n_marked > 0, marked, silent)
