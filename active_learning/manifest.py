"""Zooniverse-ready outputs of a selected batch: PNG cutouts (each at most 1 MiB) and a manifest CSV.

The manifest follows the ``panoptes`` CLI convention (``panoptes subject-set upload-subjects SET manifest.csv``):
one row per subject, a ``file`` column naming the PNG relative to the manifest, and every other column
becomes subject metadata. Keys starting with ``#`` are hidden from volunteers; ``#priority`` orders
subjects in a prioritized workflow. :func:`subject_metadata` builds the same metadata for the Python
uploader, so a manifest upload and ``--upload`` give identical subjects.

Zooniverse rejects images over 1 MiB (the CLI checks 1,048,576 bytes), so cutouts are re-encoded and, only
if that is not enough, downscaled; the scale used is recorded (``cutout_scale``) because volunteer marks
come back in the pixels of the uploaded image; :func:`cutout_metadata` uploads it as hidden subject metadata
(``#cutout_scale``, keys defined in :mod:`clumptool.common.metadata`) and aggregation maps marks back.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clumptool.common.atomic import write_bytes_atomic, write_text_atomic
from clumptool.common.errors import ClumptoolError, where
from clumptool.common.metadata import CUTOUT_SCALE, CUTOUT_SCALE_Y, CUTOUT_X0, CUTOUT_Y0, hidden_key

MAX_BYTES = 1_048_576
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: selection column -> hidden metadata key, in manifest order.
HIDDEN_KEYS = {
    "galaxy_id": "#galaxy_id",
    "round": "#al_round",
    "strategy": "#acquisition",
    "score": "#al_score",
    "rank": "#priority",
    "control": "#al_control",
    "model_version": "#model_version",
}
DEFAULT_METADATA_COLUMNS = ("ra", "dec")

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ---------------------------------------------------------------------------------------------
# cutouts
# ---------------------------------------------------------------------------------------------


def _encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True, compress_level=9)
    return buf.getvalue()


def _to_savable(img: Image.Image) -> Image.Image:
    """8-bit L/LA/RGB/RGBA; an alpha channel that is fully opaque is dropped (it only costs bytes)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = np.nanpercentile(arr, [0.5, 99.5]) if arr.size else (0.0, 1.0)
        arr = np.clip((arr - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        img = Image.fromarray((arr * 255).round().astype(np.uint8), mode="L")
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGB")
    if img.mode in ("LA", "RGBA") and img.getchannel("A").getextrema() == (255, 255):
        img = img.convert(img.mode[:-1])
    return img


def shrink_png(data: bytes, max_bytes: int = MAX_BYTES, min_side: int = 16) -> tuple[bytes, float]:
    """Return PNG bytes of at most ``max_bytes`` for the image in ``data`` and the linear scale applied.

    Already-small PNGs come back unchanged (scale 1). Otherwise the image is re-encoded losslessly with
    maximum compression, then downscaled (Lanczos) by the factor the byte count suggests until it fits.
    """
    if data.startswith(PNG_SIGNATURE) and len(data) <= max_bytes:
        return data, 1.0
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        img = _to_savable(opened)
    out = _encode_png(img)
    scale = 1.0
    width, height = img.size
    while len(out) > max_bytes:
        # PNG size grows ~ with the pixel count: aim a little below the limit.
        scale *= max(0.25, min(0.95, math.sqrt(max_bytes / len(out)) * 0.95))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if min(size) < min_side:
            raise ClumptoolError(f"cannot fit the image into {max_bytes:,} bytes even at {size[0]}x{size[1]} px")
        out = _encode_png(img.resize(size, Image.Resampling.LANCZOS))
    return out, scale


def cutout_name(galaxy_id: object) -> str:
    """A file-system-safe PNG name for a galaxy id."""
    name = _SAFE.sub("_", str(galaxy_id)).strip("._") or "galaxy"
    return f"{name}.png"


def write_cutouts(selection: pd.DataFrame, out_dir: Path, max_bytes: int = MAX_BYTES,
                  image_column: str = "image_path") -> pd.DataFrame:
    """Write ``out_dir/<galaxy_id>.png`` (≤ ``max_bytes``) for each row from its ``image_column`` image.

    Returns a copy of ``selection`` with ``file`` (path of the written PNG), ``cutout_bytes``,
    ``cutout_scale`` and ``cutout_scale_y`` (cutout pixels per original pixel along x and y: 1.0 unless
    downscaled; exact, from the two sizes, since rounding to whole pixels makes them differ slightly),
    ``cutout_width`` and ``cutout_height``. :func:`subject_metadata` uploads the scales as hidden metadata so
    aggregation maps volunteers' marks back to the original pixels.
    """
    for col in ("galaxy_id", image_column):
        if col not in selection.columns:
            raise ClumptoolError(f"selection has no {col!r} column")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = selection.copy()
    files, sizes, scales, scales_y, widths, heights = [], [], [], [], [], []
    used: dict[str, str] = {}
    for i, (gid, src) in enumerate(zip(selection["galaxy_id"], selection[image_column], strict=True)):
        name = cutout_name(gid)
        if name in used and used[name] != str(gid):
            name = f"{name[:-4]}-{i}.png"
        used[name] = str(gid)
        src_path = Path(str(src))
        try:
            data = src_path.read_bytes()
        except OSError as exc:
            raise ClumptoolError(f"{where(src_path, f'galaxy_id {gid}', image_column)}: cannot read image "
                                 f"({exc.strerror or exc})") from exc
        try:
            png, scale = shrink_png(data, max_bytes)
            with Image.open(io.BytesIO(png)) as im:
                width, height = im.size
            if scale != 1.0:
                with Image.open(io.BytesIO(data)) as original:
                    orig_w, orig_h = original.size
            else:
                orig_w, orig_h = width, height
        except ClumptoolError as exc:
            raise ClumptoolError(f"{where(src_path, f'galaxy_id {gid}')}: {exc}") from exc
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ClumptoolError(f"{where(src_path, f'galaxy_id {gid}', image_column)}: not a readable image "
                                 f"({exc})") from exc
        target = out_dir / name
        write_bytes_atomic(target, png)
        files.append(str(target))
        sizes.append(len(png))
        scales.append(width / orig_w)
        scales_y.append(height / orig_h)
        widths.append(width)
        heights.append(height)
    result["file"] = files
    result["cutout_bytes"] = sizes
    result[CUTOUT_SCALE] = scales
    result[CUTOUT_SCALE_Y] = scales_y
    result["cutout_width"] = widths
    result["cutout_height"] = heights
    return result


# ---------------------------------------------------------------------------------------------
# metadata and manifest
# ---------------------------------------------------------------------------------------------


def _json_value(value):
    """A metadata value with its natural JSON type (numpy scalars unwrapped, NaN dropped as None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def subject_metadata(row: pd.Series | dict, round_name: str | None = None,
                     metadata_columns: Sequence[str] | None = None) -> dict:
    """Zooniverse metadata for one selected galaxy: hidden ``#`` keys for ids, scores, strategy, round,
    priority and model version, then the visible/extra ``metadata_columns`` (default: ra, dec if present)."""
    row = dict(row)
    if round_name is not None:
        row["round"] = round_name
    meta: dict = {}
    for col, key in HIDDEN_KEYS.items():
        value = _json_value(row.get(col))
        if value is None:
            continue
        if col == "galaxy_id":
            value = str(value)
        elif col in ("rank", "control"):
            value = int(value)
        elif col == "score":
            value = float(f"{float(value):.6g}")  # acquisition scores carry no more precision than this
        meta[key] = value
    meta.update(cutout_metadata(row))
    columns = DEFAULT_METADATA_COLUMNS if metadata_columns is None else metadata_columns
    for col in columns:
        if col in row and col not in HIDDEN_KEYS:
            value = _json_value(row[col])
            if value is not None:
                meta[col] = value
    return meta


def cutout_metadata(row: dict) -> dict:
    """The hidden keys mapping the uploaded cutout to the original image (``#cutout_scale``, and
    ``#cutout_scale_y`` / ``#cutout_x0`` / ``#cutout_y0`` when they are not implied); empty for a cutout that
    is the original image. Without them, marks made on a downscaled cutout would land in the wrong pixels."""
    sx = _json_value(row.get(CUTOUT_SCALE))
    sy = _json_value(row.get(CUTOUT_SCALE_Y))
    x0, y0 = _json_value(row.get(CUTOUT_X0)), _json_value(row.get(CUTOUT_Y0))
    sx = 1.0 if sx is None else float(sx)
    sy = sx if sy is None else float(sy)
    meta: dict = {}
    if sx != 1.0 or sy != 1.0:
        meta[hidden_key(CUTOUT_SCALE)] = sx
        if sy != sx:
            meta[hidden_key(CUTOUT_SCALE_Y)] = sy
    for key, value in ((CUTOUT_X0, x0), (CUTOUT_Y0, y0)):
        if value is not None and float(value) != 0.0:
            meta[hidden_key(key)] = float(value)
    return meta


def write_manifest(selection: pd.DataFrame, path: Path, round_name: str | None = None,
                   metadata_columns: Sequence[str] | None = None) -> Path:
    """Write the manifest CSV for ``panoptes subject-set upload-subjects``.

    Columns: ``file`` (relative to the manifest's folder), then ``#galaxy_id``, ``#al_round``,
    ``#acquisition``, ``#al_score``, ``#priority``, ``#al_control``, ``#model_version`` (those available),
    then ``metadata_columns`` (default: ra, dec if present). ``round_name`` fills ``#al_round`` (else the
    selection's ``round`` column). Every file must exist and be a non-empty PNG of at most 1 MiB, as the CLI
    requires.
    """
    if "file" not in selection.columns:
        raise ClumptoolError("selection has no 'file' column: write the cutouts first (write_cutouts)")
    if isinstance(metadata_columns, str) or not (round_name is None or isinstance(round_name, str)):
        raise TypeError("write_manifest(selection, path, round_name: str, metadata_columns: list of names)")
    path = Path(path)
    base = path.parent.resolve()
    records = []
    for i, (_, row) in enumerate(selection.iterrows()):
        file = Path(str(row["file"]))
        check_png(file, f"row {i + 1}")
        meta = subject_metadata(row, round_name, metadata_columns)
        records.append({"file": os.path.relpath(file.resolve(), base), **meta})
    order = ["file"] + [k for k in HIDDEN_KEYS.values() if any(k in r for r in records)]
    extra = [k for r in records for k in r if k not in order]
    order += list(dict.fromkeys(extra))
    table = pd.DataFrame.from_records(records, columns=order)
    write_text_atomic(path, table.to_csv(index=False))  # floats as shortest round-trip repr (RA/Dec intact)
    return path


def check_png(file: Path, row: str, max_bytes: int = MAX_BYTES) -> int:
    """Size of ``file`` after checking it is a non-empty PNG of at most ``max_bytes`` (else ClumptoolError)."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ClumptoolError(f"{where(file, row, 'file')}: cannot read ({exc.strerror or exc})") from exc
    if size == 0 or head != PNG_SIGNATURE:
        raise ClumptoolError(f"{where(file, row, 'file')}: not a PNG file")
    if size > max_bytes:
        raise ClumptoolError(f"{where(file, row, 'file')}: {size:,} bytes is over Zooniverse's limit of "
                             f"{max_bytes:,} bytes (write it with write_cutouts)")
    return size

