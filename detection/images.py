"""Reading galaxy images and preparing them for the network (crop, resize), with the inverse geometry.

Images are float32 arrays (C, H, W) in [0, 1]. PNG/JPEG: 8- or 16-bit, converted to RGB (3 channels) or grey
(1 channel). FITS (``.fits``, ``.fit``, ``.fits.gz``): the chosen bands of a 2-D or 3-D (band, y, x) HDU,
each scaled to [0, 1] between its 0.5 and 99.5 percentiles, and flipped vertically because FITS row 1 is the
*bottom* of the displayed image while boxes use the PNG convention (row 0 at the top).

Normalisation (mean/std) is NOT applied here: it lives inside the model (GeneralizedRCNNTransform, from the
ModelSpec) so every caller feeds the same [0, 1] images.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from astropy.io import fits
from PIL import Image

from clumptool.common.errors import ClumptoolError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".fits", ".fit", ".fits.gz", ".fit.gz")


def image_stem(path: Path) -> str | None:
    """Subject id of an image file (its name without the image suffix), or None if not an image."""
    name = path.name
    low = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return None


def index_images(folder: str | Path) -> dict[str, Path]:
    """subject_id -> image path for every image in ``folder`` (PNG preferred over JPEG over FITS)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ClumptoolError(f"{folder}: image folder not found")
    found: dict[str, Path] = {}
    rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}
    for p in folder.iterdir():
        stem = image_stem(p)
        if stem is None or not p.is_file():
            continue
        suffix = p.name[len(stem):].lower()
        if stem not in found or rank[suffix] < rank[found[stem].name[len(stem):].lower()]:
            found[stem] = p
    return found


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header where the format allows (to check truth up front)."""
    path = Path(path)
    low = path.name.lower()
    try:
        if low.endswith((".fits", ".fit", ".fits.gz", ".fit.gz")):
            arr = load_image(path, 1)
            return int(arr.shape[2]), int(arr.shape[1])
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except ClumptoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        raise ClumptoolError(f"{path}: cannot read image ({type(exc).__name__}: {exc}); replace or remove "
                             "the file") from exc


def _load_pil(path: Path, channels: int) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float32) / 65535.0
            arr = np.repeat(arr[None], channels, axis=0) if channels != 1 else arr[None]
            return np.clip(arr, 0, 1)
        if channels == 1:
            arr = np.asarray(im.convert("L"), dtype=np.float32)[None]
        elif channels == 3:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
        else:
            raise ClumptoolError(f"{path}: a PNG/JPEG gives 1 or 3 channels, the model wants {channels}")
    return arr / 255.0


def _load_fits(path: Path, channels: int, bands: list[int] | None) -> np.ndarray:
    with fits.open(path, memmap=False) as hdul:
        data = next((h.data for h in hdul if h.data is not None and h.data.ndim in (2, 3)), None)
        if data is None:
            raise ClumptoolError(f"{path}: no 2-D or 3-D image in any FITS HDU")
        arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if bands is not None:
        if max(bands) >= arr.shape[0] or min(bands) < 0:
            raise ClumptoolError(f"{path}: bands {bands} requested, the file has {arr.shape[0]}")
        arr = arr[list(bands)]
    elif arr.shape[0] != channels:
        if arr.shape[0] == 1:
            arr = np.repeat(arr, channels, axis=0)
        else:
            arr = arr[:channels]
    if arr.shape[0] != channels:
        raise ClumptoolError(f"{path}: {arr.shape[0]} bands, the model wants {channels} (choose with --fits-bands)")
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    out = np.empty_like(arr)
    for i, band in enumerate(arr):
        lo, hi = np.percentile(band, [0.5, 99.5])
        out[i] = np.clip((band - lo) / (hi - lo), 0, 1) if hi > lo else 0.0
    return np.ascontiguousarray(out[:, ::-1, :])


def load_image(path: str | Path, channels: int = 3, fits_bands: list[int] | None = None) -> np.ndarray:
    """float32 (C, H, W) in [0, 1] at the original size."""
    path = Path(path)
    if not path.is_file():
        raise ClumptoolError(f"{path}: image not found")
    low = path.name.lower()
    try:
        if low.endswith((".fits", ".fit", ".fits.gz", ".fit.gz")):
            return _load_fits(path, channels, fits_bands)
        return _load_pil(path, channels)
    except ClumptoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL/astropy raise many types for broken files
        raise ClumptoolError(f"{path}: cannot read image ({type(exc).__name__}: {exc}); replace the file or "
                             "remove it from the folder") from exc


@dataclass
class Geometry:
    """Maps working-pixel coordinates to the original image: original = working / scale + offset."""

    offset_x: float
    offset_y: float
    scale: float
    width: int          # original image size
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes, dtype=float).reshape(-1, 4) / self.scale
        return b + np.array([self.offset_x, self.offset_y, self.offset_x, self.offset_y])

    def to_working(self, boxes: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes, dtype=float).reshape(-1, 4)
        return (b - np.array([self.offset_x, self.offset_y, self.offset_x, self.offset_y])) * self.scale


def working_geometry(width: int, height: int, crop: int | None, image_size: int) -> tuple[Geometry, int, int]:
    """Geometry of the central crop (side ``crop``, or the whole image) resized so its long side is image_size.

    Returns the geometry and the working width/height.
    """
    cw = min(crop, width) if crop else width
    ch = min(crop, height) if crop else height
    ox, oy = (width - cw) // 2, (height - ch) // 2
    scale = image_size / max(cw, ch)
    ww, wh = max(1, round(cw * scale)), max(1, round(ch * scale))
    return Geometry(float(ox), float(oy), float(scale), int(width), int(height)), ww, wh


def prepare(image: np.ndarray | torch.Tensor, crop: int | None, image_size: int) -> tuple[torch.Tensor, Geometry]:
    """Crop + resize (antialiased bilinear); the tensor stays in [0, 1]."""
    t = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image,
                        dtype=torch.float32)
    if t.ndim != 3:
        raise ClumptoolError(f"expected a (C, H, W) image, got shape {tuple(t.shape)}")
    _, h, w = t.shape
    geom, ww, wh = working_geometry(w, h, crop, image_size)
    ox, oy = int(geom.offset_x), int(geom.offset_y)
    cw = min(crop, w) if crop else w
    ch = min(crop, h) if crop else h
    t = t[:, oy:oy + ch, ox:ox + cw]
    if (wh, ww) != (ch, cw):
        t = F.interpolate(t[None], size=(wh, ww), mode="bilinear", align_corners=False, antialias=True)[0]
        t = t.clamp_(0.0, 1.0)
    return t.contiguous(), geom


def to_model_input(image: np.ndarray | torch.Tensor, spec) -> tuple[torch.Tensor, Geometry]:
    """An original image -> the network's [0, 1] input for ``spec`` (crop, resize) and its geometry."""
    if image.shape[0] != spec.in_channels:
        raise ClumptoolError(f"image has {image.shape[0]} channels, the model wants {spec.in_channels}")
    return prepare(image, spec.crop, spec.image_size)


SHOWN_IDS = 5  # missing subject ids named in a message


def looked_for() -> str:
    """The image names searched for, as a user would type them."""
    return "|".join(f"*{s}" for s in IMAGE_SUFFIXES)


def with_galaxy_images(index: dict[str, Path], galaxy_of: dict[str, str] | None) -> dict[str, Path]:
    """``index`` (subject id -> image) plus the subjects without an image of their own whose galaxy has one:
    select-next-batch uploads a galaxy as a new Zooniverse subject, and its marks come back in the galaxy's own
    pixels (aggregation/frames.py), so the galaxy's image is that subject's."""
    if not galaxy_of:
        return index
    out = dict(index)
    for sid, gid in galaxy_of.items():
        if sid not in out and gid in index:
            out[sid] = index[gid]
    return out


def find_subject_images(images_dir: str | os.PathLike, subject_ids: Iterable[str] | None = None,
                        galaxy_of: dict[str, str] | None = None) -> tuple[list[str], list[Path], list[str]]:
    """Subject ids and their image files in ``images_dir``, sorted by id (only those of ``subject_ids`` when
    given; an uploaded subject without its own file takes its galaxy's, ``galaxy_of``), and the listed subject ids
    that have no image there (the caller decides whether that is an error)."""
    images_dir = Path(images_dir)
    own = index_images(images_dir)
    if not own:
        raise ClumptoolError(f"--images {images_dir}: no images found in this folder (looked for {looked_for()}); "
                             "point --images at the folder holding <subject_id>.png files")
    if subject_ids is None:
        return sorted(own), [own[k] for k in sorted(own)], []
    found = with_galaxy_images(own, galaxy_of)
    wanted = list(dict.fromkeys(str(s) for s in subject_ids))
    missing = [s for s in wanted if s not in found]
    present = sorted(s for s in wanted if s in found)
    if not present:
        raise ClumptoolError(
            f"--images {images_dir}: none of the {len(wanted)} listed subjects has an image here (looked for "
            f"<subject_id>.png|.jpg|.fits, e.g. {wanted[0] + '.png' if wanted else '-'}); images here are named "
            f"e.g. {', '.join(sorted(own)[:3])}: check that --images and --subjects belong together")
    return present, [found[k] for k in present], missing


def find_images(images_dir: str | os.PathLike, subject_ids: Iterable[str] | None = None
                ) -> tuple[list[Path], list[str]]:
    """Image files in ``images_dir`` sorted by subject id (only those of ``subject_ids`` when given), and the
    listed subject ids that have no image there (the caller decides whether that is an error)."""
    _, paths, missing = find_subject_images(images_dir, subject_ids)
    return paths, missing


def missing_images_error(missing: list[str], n_listed: int, images_dir: str | os.PathLike,
                         subjects: object) -> ClumptoolError:
    """The error for listed galaxies without an image: how many, which, where we looked, what to do."""
    shown = ", ".join(missing[:SHOWN_IDS]) + (", ..." if len(missing) > SHOWN_IDS else "")
    return ClumptoolError(
        f"{len(missing)} of the {n_listed} subjects listed in {subjects} have no image in {images_dir} "
        f"(looked for <subject_id>.png|.jpg|.fits): {shown}. Put their images there, remove them from "
        f"{subjects}, or pass --allow-missing-images to go on without them (the count is then reported)")
