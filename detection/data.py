"""Training data: which galaxies are labelled, their boxes in working pixels, the split, the augmentations.

Which galaxies are labelled (galaxies without clumps are kept as negatives, as in the paper):

* with ``subjects`` (the ``subjects`` table written by ``clumptool aggregate``, or a Zooniverse subjects
  export: any table with ``subject_id``): every subject listed there, with or without boxes, but those nobody
  classified yet and, in aggregate's table, those still being classified (``in_progress``). Its image must
  exist in the image folder;
* without it: every image in the folder. The aggregate ``boxes`` table only lists galaxies that have
  clumps, so a galaxy without boxes is taken as "looked at, no clumps". Put only classified images in the
  folder, or pass ``subjects``.

Either way every subject in the boxes table must have an image (a missing image is an error, not a silently
smaller training set), the table must hold at least one box (nothing to learn from otherwise), and every
box must be centred inside its image (a box elsewhere means another pixel convention or a wrong image, so
it is an error naming the row, never a box quietly clipped away). Boxes are mapped to working pixels
(central crop, resize); boxes cut by the image edge or the crop are clipped and dropped when less than half
of them is left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from clumptool.aggregation.stopping import IN_PROGRESS_COLUMN
from clumptool.aggregation.subjects import subject_galaxies
from clumptool.common.errors import ClumptoolError
from clumptool.common.ids import drop_blank_rows, normalise_subject_ids
from clumptool.common.tables import read_table, true_false_column
from clumptool.detection.images import index_images, load_image, prepare, with_galaxy_images, working_geometry
from clumptool.detection.spec import ModelSpec
from clumptool.detection.symmetry import apply_to_boxes, apply_to_image

BOX_REQUIRED = ("subject_id", "x1", "y1", "x2", "y2", "label")
MIN_KEPT_FRACTION = 0.5


@dataclass(frozen=True)
class Item:
    """One labelled galaxy: its image and its boxes/labels in ORIGINAL pixels."""

    subject_id: str
    path: Path
    boxes: np.ndarray   # (n, 4) float
    labels: np.ndarray  # (n,) int64, 1 = clump, 2 = odd clump


def read_boxes(path: str | os.PathLike, num_classes: int = 3) -> pd.DataFrame:
    """The boxes table, checked: finite coordinates, x2 > x1, y2 > y1, labels in 1..num_classes-1."""
    return check_boxes(read_table(path), path, num_classes)  # check_boxes names missing columns with a hint


def check_boxes(df: pd.DataFrame, path: object = "boxes table", num_classes: int = 3) -> pd.DataFrame:
    """A copy of a boxes table with string subject ids and checked numbers (see :func:`read_boxes`)."""
    missing = [c for c in BOX_REQUIRED if c not in df.columns]
    if missing:
        raise ClumptoolError(f"{path}: missing column(s) {', '.join(missing)} (a boxes table needs "
                             f"{', '.join(BOX_REQUIRED)}, e.g. the boxes table written by 'clumptool aggregate')")
    df = df.copy()
    df["subject_id"] = normalise_subject_ids(df["subject_id"], where=path, field="subject_id")
    for col in ("x1", "y1", "x2", "y2", "label"):
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(vals.to_numpy(dtype=float))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ClumptoolError(f"{path}, row {row + 2}, field '{col}': not a finite number "
                                 f"({df[col].iloc[row]!r}); fix or remove the row")
        df[col] = vals
    bad = (df["x2"] <= df["x1"]) | (df["y2"] <= df["y1"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        r = df.iloc[row]
        fld = "x2" if r["x2"] <= r["x1"] else "y2"
        raise ClumptoolError(f"{path}, row {row + 2}, field '{fld}': box has x2 <= x1 or y2 <= y1 "
                             f"(x1={r['x1']}, y1={r['y1']}, x2={r['x2']}, y2={r['y2']}); fix or remove the row")
    labels = df["label"].to_numpy()
    bad = (labels != np.round(labels)) | (labels < 1) | (labels >= num_classes)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ClumptoolError(
            f"{path}, row {row + 2}, field 'label': {labels[row]!r} is not a known class (expected 1 = clump"
            f" .. {num_classes - 1}); fix or remove the row")
    df["label"] = df["label"].astype("int64")
    return df


VIEWERS_COLUMN = "n_viewers"  # aggregate's subjects table: how many volunteers classified each galaxy


def unclassified_dropped(subjects: pd.DataFrame) -> pd.DataFrame:
    """The rows of a subjects table that volunteers classified.

    aggregate's subjects table lists every subject of its ``--subjects`` export, including those nobody
    classified (``n_viewers`` 0). Those are not labelled: as negatives they would teach the detector that
    their clumps are background (and a held-out test galaxy would leak into training). Tables without
    the column (a Zooniverse subjects export, a plain list) are taken as they are.
    """
    if VIEWERS_COLUMN not in subjects.columns:
        return subjects
    viewers = pd.to_numeric(subjects[VIEWERS_COLUMN], errors="coerce").fillna(0)
    return subjects[viewers > 0]


def count_unclassified(subjects: str | os.PathLike | None) -> int:
    """How many rows of a subjects table :func:`unclassified_dropped` leaves out (0 without a table)."""
    if subjects is None:
        return 0
    st = read_table(subjects, ("subject_id",))
    return len(st) - len(unclassified_dropped(st))


def in_progress_dropped(subjects: pd.DataFrame, where: str | os.PathLike) -> pd.DataFrame:
    """The rows of a subjects table whose consensus is a label: not ``in_progress`` in aggregate's table.

    In a lean project (or an export of a live one) many galaxies have had one or two volunteers so far: their
    consensus is not finished and they have not had half the retirement limit (aggregation/stopping.py). As
    labels they would teach the detector that the clumps their first volunteers missed are background (a galaxy
    one volunteer saw without marking trains as "no clumps"). Tables without the column are taken as they are."""
    if IN_PROGRESS_COLUMN not in subjects.columns:
        return subjects
    flags = true_false_column(subjects[IN_PROGRESS_COLUMN], subjects["subject_id"], where, IN_PROGRESS_COLUMN,
                              blank_is_false=False)  # blank read as "not in progress" would train on it
    return subjects[~flags]


def count_in_progress(subjects: str | os.PathLike | None) -> int:
    """How many classified rows of a subjects table :func:`in_progress_dropped` leaves out (0 without a table)."""
    if subjects is None:
        return 0
    st = unclassified_dropped(read_table(subjects, ("subject_id",)))
    return len(st) - len(in_progress_dropped(st, subjects))


def _repeated_galaxies(kept: pd.DataFrame, where: str | os.PathLike, index: dict[str, Path]) -> list[str]:
    """Subjects showing the same image as another labelled subject with more classifications (a galaxy sent back
    by ``select-next-batch --include-unfinished`` is a second subject; ``aggregate`` merges their classifications
    under the newest, but not with ``--per-subject`` or in an older table), which training leaves out: one image, one
    label, and never in both the training and the validation galaxies."""
    ids = normalise_subject_ids(kept["subject_id"], where=where, field="subject_id")
    viewers = (pd.to_numeric(kept[VIEWERS_COLUMN], errors="coerce").fillna(0).to_numpy() if VIEWERS_COLUMN in kept
               else np.zeros(len(kept)))
    frame = pd.DataFrame({"sid": ids.to_numpy(), "viewers": viewers})
    frame["image"] = frame["sid"].map(lambda sid: str(index.get(sid, "")))
    frame = frame[frame["image"] != ""].sort_values(["image", "viewers", "sid"], ascending=[True, False, True])
    return frame.loc[frame.duplicated("image"), "sid"].tolist()


def count_repeated_galaxies(subjects: str | os.PathLike | None, images: str | os.PathLike,
                            include_in_progress: bool = False) -> int:
    """How many labelled subjects :func:`labelled_items` leaves out as a second subject of the same galaxy."""
    if subjects is None:
        return 0
    st = drop_blank_rows(unclassified_dropped(read_table(subjects, ("subject_id",))))
    kept = st if include_in_progress else in_progress_dropped(st, subjects)
    return len(_repeated_galaxies(kept, subjects, with_galaxy_images(index_images(images),
                                                                      subject_galaxies(subjects))))


@dataclass(frozen=True)
class LabelledGalaxies:
    """The labelled galaxies, and how many subjects of ``subjects`` were left out and why (counted as read)."""

    items: list[Item]
    n_unclassified: int = 0   # nobody classified them yet
    n_in_progress: int = 0    # still being classified (``in_progress``)
    n_repeated: int = 0       # a second subject of a galaxy another labelled subject shows


def labelled_items(boxes: str | os.PathLike | pd.DataFrame, images: str | os.PathLike,
                   subjects: str | os.PathLike | None = None, num_classes: int = 3,
                   include_in_progress: bool = False) -> list[Item]:
    """The labelled galaxies (see the module docstring for which), sorted by subject id; galaxies still being
    classified (``in_progress`` in aggregate's subjects table) and their boxes are left out unless
    ``include_in_progress``."""
    return labelled_galaxies(boxes, images, subjects, num_classes, include_in_progress).items


def labelled_galaxies(boxes: str | os.PathLike | pd.DataFrame, images: str | os.PathLike,
                      subjects: str | os.PathLike | None = None, num_classes: int = 3,
                      include_in_progress: bool = False) -> LabelledGalaxies:
    """:func:`labelled_items` with the counts of what it left out (one reading of every table)."""
    if isinstance(boxes, pd.DataFrame):
        table = check_boxes(boxes, "boxes table", num_classes)
    else:
        table = read_boxes(boxes, num_classes)
    index = index_images(images)
    if not index:
        raise ClumptoolError(f"{images}: no images (.png, .jpg, .fits) found")
    in_progress: set[str] = set()
    repeated: set[str] = set()
    n_unclassified = 0
    if subjects is not None:
        index = with_galaxy_images(index, subject_galaxies(subjects))
        listed = read_table(subjects, ("subject_id",))
        st = drop_blank_rows(unclassified_dropped(listed))
        n_unclassified = len(listed) - len(unclassified_dropped(listed))
        kept = st if include_in_progress else in_progress_dropped(st, subjects)
        ids = sorted(set(normalise_subject_ids(kept["subject_id"], where=subjects, field="subject_id")))
        in_progress = set(normalise_subject_ids(st["subject_id"], where=subjects, field="subject_id")) - set(ids)
        repeated = set(_repeated_galaxies(kept, subjects, index))
        ids = [sid for sid in ids if sid not in repeated]
        table = table[~table["subject_id"].isin(in_progress | repeated)]
        source = f"{subjects}"
    else:
        ids = sorted(index)
        source = f"{images}"
    if not ids and in_progress:
        raise ClumptoolError(f"{subjects}: all {len(in_progress)} classified galaxies are still being classified "
                             "(in_progress: not finished, fewer than half the retirement limit's classifications); "
                             "wait for more classifications, give aggregate the Zooniverse subjects export "
                             "(--subjects: it says which galaxies the workflow retired) or the workflow's own "
                             "--retirement-limit if it retires galaxies before 20, or pass --include-in-progress to "
                             "train on them anyway")
    if table.empty:
        raise ClumptoolError(
            f"{boxes if not isinstance(boxes, pd.DataFrame) else 'boxes table'}: no box at all"
            + (f" outside the {len(in_progress)} galaxies still being classified" if in_progress else "")
            + ", so there is nothing to learn from; check that 'clumptool aggregate' found clumps (its summary, "
            "--task and --clump-tools) and pass its boxes table")
    missing = sorted(set(ids) - set(index))
    if missing:
        raise ClumptoolError(
            f"{len(missing)} labelled subject(s) from {source} have no image in {images} "
            f"(e.g. {', '.join(missing[:5])}); add files named <subject_id>.png|.jpg|.fits or pass --subjects "
            "listing only the galaxies you have images of")
    orphans = sorted(set(table["subject_id"]) - set(index))
    if orphans:
        raise ClumptoolError(
            f"{len(orphans)} subject(s) in the boxes table have no image in {images} "
            f"(e.g. {', '.join(orphans[:5])}); add their images (<subject_id>.png|.jpg|.fits) or remove their "
            "rows from the boxes table")
    outside = sorted(set(table["subject_id"]) - set(ids))
    if outside:
        raise ClumptoolError(
            f"{len(outside)} subject(s) have boxes but are not in {source} (e.g. {', '.join(outside[:5])}); "
            "pass the subjects table that belongs to these boxes")
    check_boxes_inside(table, index, boxes if not isinstance(boxes, pd.DataFrame) else "boxes table")
    groups = {sid: g for sid, g in table.groupby("subject_id", sort=False)}
    items = []
    for sid in ids:
        g = groups.get(sid)
        if g is None:
            b, lab = np.zeros((0, 4)), np.zeros(0, np.int64)
        else:
            b = g[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float)
            lab = g["label"].to_numpy(dtype=np.int64)
        items.append(Item(sid, index[sid], b, lab))
    return LabelledGalaxies(items, n_unclassified, len(in_progress), len(repeated))


def image_dimensions(path: Path) -> tuple[int, int]:
    """(width, height) of an image, from the header when the format allows."""
    low = path.name.lower()
    if low.endswith((".png", ".jpg", ".jpeg")):
        try:
            with Image.open(path) as im:
                return im.size
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
            raise ClumptoolError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    arr = load_image(path, 1)
    return arr.shape[2], arr.shape[1]


def check_boxes_inside(table: pd.DataFrame, index: dict[str, Path], path: object) -> None:
    """Every box centred inside its image (boxes may reach over the edge: they are clipped later)."""
    for sid, g in table.groupby("subject_id", sort=True):
        w, h = image_dimensions(index[sid])
        cx = (g["x1"] + g["x2"]).to_numpy() / 2
        cy = (g["y1"] + g["y2"]).to_numpy() / 2
        bad = (cx < 0) | (cx > w) | (cy < 0) | (cy > h)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            row = g.index[k]
            fld = "x1" if not 0 <= cx[k] <= w else "y1"
            r = g.iloc[k]
            raise ClumptoolError(
                f"{path}, row {row + 2}, field '{fld}': box ({r['x1']}, {r['y1']}, {r['x2']}, {r['y2']}) of "
                f"subject {sid} lies outside its {w}x{h} image {index[sid].name} ({int(bad.sum())} such box(es) "
                f"for this subject); boxes are in the image's pixels (x right, y down, from 0): fix or remove "
                "the row, or check that the images are the ones the boxes were drawn on")


def split_items(items: list[Item], val_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Train/validation split by galaxy, the same for the same ids and seed (independent of input order)."""
    if not 0 <= val_fraction < 1:
        raise ClumptoolError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(items, key=lambda it: it.subject_id)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_val = int(round(val_fraction * len(ordered)))
    if val_fraction > 0 and len(ordered) >= 2:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    val = sorted((ordered[i] for i in perm[:n_val]), key=lambda it: it.subject_id)
    train = sorted((ordered[i] for i in perm[n_val:]), key=lambda it: it.subject_id)
    return train, val


def boxes_to_working(boxes: np.ndarray, labels: np.ndarray, geom, width: int, height: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Original boxes -> working pixels, clipped to the working image; mostly-outside boxes dropped."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    w = geom.to_working(boxes)
    area = (w[:, 2] - w[:, 0]) * (w[:, 3] - w[:, 1])
    c = w.copy()
    c[:, [0, 2]] = c[:, [0, 2]].clip(0, width)
    c[:, [1, 3]] = c[:, [1, 3]].clip(0, height)
    kept = np.clip(c[:, 2] - c[:, 0], 0, None) * np.clip(c[:, 3] - c[:, 1], 0, None)
    keep = (kept >= MIN_KEPT_FRACTION * area) & (c[:, 2] - c[:, 0] >= 1) & (c[:, 3] - c[:, 1] >= 1)
    return c[keep].astype(np.float32), np.asarray(labels)[keep].astype(np.int64)


def count_trained_boxes(items: list[Item], spec: ModelSpec) -> tuple[int, int]:
    """(boxes the network trains on, boxes in the table) after the central crop: reported, never silent."""
    kept = total = 0
    for it in items:
        if len(it.boxes) == 0:
            continue
        w, h = image_dimensions(it.path)
        geom, ww, wh = working_geometry(w, h, spec.crop, spec.image_size)
        kept += len(boxes_to_working(it.boxes, it.labels, geom, ww, wh)[0])
        total += len(it.boxes)
    return kept, total


@dataclass(frozen=True)
class Augment:
    """Physically harmless changes: the 8 flips/rotations, a mild stretch (gamma, gain) and noise."""

    symmetries: bool = True
    gamma: tuple[float, float] = (0.8, 1.25)
    gain: tuple[float, float] = (0.9, 1.1)
    noise: float = 0.02  # maximum Gaussian sigma (image units)

    def __call__(self, image: torch.Tensor, boxes: np.ndarray, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, np.ndarray]:
        _, h, w = image.shape
        if self.symmetries:
            k = int(rng.integers(8))
            image = apply_to_image(image, k).contiguous()
            boxes = apply_to_boxes(boxes, k, w, h).astype(np.float32) if len(boxes) else boxes
        g = float(np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        image = image.clamp(0, 1).pow(g) * float(rng.uniform(*self.gain))
        if self.noise > 0:
            sigma = float(rng.uniform(0, self.noise))
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            image = image + sigma * torch.randn(image.shape, generator=gen)
        return image.clamp_(0, 1), boxes


class DetectionDataset(Dataset):
    """(image [0, 1] working size, target {boxes, labels} working px, subject_id) for each labelled galaxy.

    ``cache=True`` decodes every image once up front (float16 in memory; shared with DataLoader workers by
    fork) so that PNG decoding and resizing are not repeated every epoch.
    """

    def __init__(self, items: list[Item], spec: ModelSpec, augment: Augment | None = None, cache: bool = False,
                 seed: int = 0, progress: bool = False):
        self.items, self.spec, self.augment, self.seed = items, spec, augment, seed
        self._cache: list[tuple[torch.Tensor, np.ndarray, np.ndarray]] | None = None
        if cache:
            self._cache = []
            for i in tqdm(range(len(items)), desc="caching images", unit="img", disable=not progress,
                          leave=False):
                im, b, lab = self._decode(i)
                self._cache.append((im.to(torch.float16), b, lab))

    def __len__(self) -> int:
        return len(self.items)

    def _decode(self, i: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        it = self.items[i]
        img = load_image(it.path, self.spec.in_channels, self.spec.fits_bands)
        tensor, geom = prepare(img, self.spec.crop, self.spec.image_size)
        b, lab = boxes_to_working(it.boxes, it.labels, geom, tensor.shape[2], tensor.shape[1])
        return tensor, b, lab

    def __getitem__(self, key: int | tuple[int, int]):
        """``key`` is an index, or (epoch, index) from the training sampler: augmentations draw from
        (seed, epoch, index) only, so an epoch repeats exactly whatever ran before it (exact resume)."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        if self._cache is not None:
            im, b, lab = self._cache[i]
            im = im.float()
        else:
            im, b, lab = self._decode(i)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, i])
            im, b = self.augment(im, b, rng)
        target = {"boxes": torch.as_tensor(np.asarray(b, np.float32).reshape(-1, 4)),
                  "labels": torch.as_tensor(lab, dtype=torch.int64)}
        return im, target, self.items[i].subject_id


def collate(batch):
    """Lists of images, targets, subject ids (detection images may differ in size)."""
    images, targets, ids = zip(*batch, strict=True)
    return list(images), list(targets), list(ids)
