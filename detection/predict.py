"""``clumptool predict`` as a plain function: a trained detector over a folder of galaxies -> a clump catalogue.

One row per detected clump (columns: :data:`clumptool.detection.catalogue.CATALOGUE_COLUMNS`). Images are
streamed through the model in batches (:func:`clumptool.detection.inference.iter_detections`) and rows are
written to Parquet in row groups as they come, into a temporary file renamed onto the target only when
everything (catalogue and ``predictions.png``) succeeded: memory stays bounded for any number of images and a
failure never leaves a half-written catalogue.

Devices: ``"auto"`` uses every visible GPU, else the CPU. With several devices the image list is split into
one contiguous-by-stride shard per device and each shard runs in its own process (``spawn``), each writing a
shard file that the parent then concatenates (renumbering clump_id). This is the plain one-process-per-GPU
data-parallel pattern (no inter-process communication during inference); it is exercised in the tests with
two CPU "devices", not on real GPUs here.

Post-processing as in Popp et al. (2024): a score threshold, class-agnostic NMS (IoU 0.2 by default) and
optionally removal of detections within ``drop_central`` px of the image centre (the bulge).
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.common.atomic import atomic_path
from clumptool.common.errors import ClumptoolError
from clumptool.detection.catalogue import (
    CATALOGUE_SCHEMA,
    SubjectSky,
    catalogue_rows,
    read_subject_sky,
    to_arrow,
)
from clumptool.detection.postprocess import PAPER_NMS_IOU, postprocess

ROW_GROUP_ROWS = 50_000


def resolve_devices(devices: str | Sequence[str] | None = "auto") -> list[str]:
    """``"auto"`` -> every CUDA device (``cuda:0``, ...) or ``["cpu"]``; ``"cuda"`` -> every CUDA device;
    a comma-separated string or a list -> those devices."""
    import torch

    if devices is None or devices == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    if isinstance(devices, str):
        if devices == "cuda":
            if not torch.cuda.is_available():
                raise ClumptoolError("--devices cuda: no CUDA device is available (use cpu or auto)")
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    out = list(devices)
    if not out:
        raise ClumptoolError("no device given")
    for d in out:
        if d.startswith("cuda") and not torch.cuda.is_available():
            raise ClumptoolError(f"device {d}: CUDA is not available here")
    return out


@dataclass
class Overlay:
    """A galaxy kept for predictions.png (the clumpiest few are drawn)."""

    n: int
    subject_id: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def key(self) -> tuple:
        return (self.n, float(self.scores.sum()) if len(self.scores) else 0.0, self.subject_id)


@dataclass
class ShardTask:
    model_path: str
    paths: list[str]
    out_file: str
    device: str
    sky: dict[str, SubjectSky] | None
    score_threshold: float
    nms_iou: float | None
    drop_central: float
    batch_size: int
    num_workers: int
    n_overlay: int
    progress: bool
    metadata: dict
    threads: int | None = None


@dataclass
class ShardResult:
    n_images: int = 0
    n_clumps: int = 0
    n_without_sky: int = 0
    overlays: list[Overlay] = field(default_factory=list)
    spec_dict: dict | None = None


def _schema(metadata: dict):
    return CATALOGUE_SCHEMA.with_metadata({b"clumptool": json.dumps(metadata).encode()})


def run_shard(task: ShardTask) -> ShardResult:
    """Detect on ``task.paths`` and stream the catalogue rows into ``task.out_file`` (clump_id from 0)."""
    import pyarrow.parquet as pq
    import torch

    from clumptool.detection.inference import iter_detections
    from clumptool.detection.io import load_model

    if task.threads:
        torch.set_num_threads(task.threads)  # only in a worker process of a multi-device run
    model, spec = load_model(task.model_path, device=task.device)
    result = ShardResult(spec_dict=spec.to_dict())
    heap: list[tuple] = []
    pending: list[pd.DataFrame] = []
    n_pending = 0
    with pq.ParquetWriter(task.out_file, _schema(task.metadata)) as writer:
        for det in iter_detections(model, spec, [Path(p) for p in task.paths], batch_size=task.batch_size,
                                   score_thresh=task.score_threshold, num_workers=task.num_workers, device=task.device,
                                   progress=task.progress):
            det = postprocess(det, min_score=task.score_threshold, nms_iou=task.nms_iou,
                              drop_central=task.drop_central)
            sid = str(det.subject_id)
            sky = task.sky.get(sid) if task.sky is not None else None
            if task.sky is not None and (sky is None or not np.isfinite(sky.ra)):
                result.n_without_sky += 1
            rows = catalogue_rows(sid, det.boxes, det.scores, det.labels, det.width, det.height, spec.classes, sky,
                                  first_id=result.n_clumps, model_version=spec.version)
            result.n_images += 1
            result.n_clumps += len(rows)
            if len(rows):
                pending.append(rows)
                n_pending += len(rows)
            if n_pending >= ROW_GROUP_ROWS:
                writer.write_table(to_arrow(pd.concat(pending, ignore_index=True)))
                pending, n_pending = [], 0
            if task.n_overlay > 0:
                ov = Overlay(len(det.boxes), sid, det.boxes, det.scores, det.labels)
                item = (ov.key(), ov)
                if len(heap) < task.n_overlay:
                    heapq.heappush(heap, item)
                elif item[0] > heap[0][0]:
                    heapq.heapreplace(heap, item)
        if pending:
            writer.write_table(to_arrow(pd.concat(pending, ignore_index=True)))
    result.overlays = [ov for _, ov in sorted(heap, key=lambda t: t[0], reverse=True)]
    return result


@dataclass
class PredictResult:
    """What :func:`predict_catalogue` wrote."""

    catalogue_path: Path
    plot_path: Path | None
    n_images: int
    n_clumps: int
    devices: list[str]
    notes: list[str]

    def summary(self) -> str:
        lines = [f"{self.n_clumps} clumps in {self.n_images} galaxies -> {self.catalogue_path}"
                 f" (devices: {', '.join(self.devices)})"]
        if self.plot_path is not None:
            lines.append(f"overlay: {self.plot_path}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def predict_catalogue(model_path: str | os.PathLike, images_dir: str | os.PathLike, out_path: str | os.PathLike,
                      *, subjects: str | os.PathLike | None = None, score_threshold: float = 0.5,
                      nms_iou: float | None = PAPER_NMS_IOU, drop_central: float = 0.0, batch_size: int = 8,
                      devices: str | Sequence[str] | None = "auto", num_workers: int = 0, n_overlay: int = 8,
                      fwhm_column: str = "fwhmImagePix", progress: bool = True) -> PredictResult:
    """Detect clumps on every image (of ``subjects``, if given) and write the catalogue (see module docstring).

    ``subjects`` (a Zooniverse subjects export or a table with subject_id, ra, dec, arcsecPerSide,
    fwhmImagePix) both restricts the galaxies and gives sky positions; without it the sky columns are NaN.
    ``predictions.png`` (the ``n_overlay`` galaxies with most detections, boxes drawn) is written beside
    the catalogue; ``n_overlay=0`` skips it.
    """
    from clumptool.detection.evaluate import list_images
    from clumptool.detection.io import read_weights

    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".parquet", ".pq"):
        raise ClumptoolError(f"{out_path}: the catalogue is written as Parquet; name it *.parquet")
    if not 0.0 <= score_threshold <= 1.0:
        raise ClumptoolError(f"score threshold must be in [0, 1], got {score_threshold}")
    if nms_iou is not None and not 0.0 <= nms_iou <= 1.0:
        raise ClumptoolError(f"NMS IoU must be in [0, 1], got {nms_iou}")
    if batch_size < 1:
        raise ClumptoolError(f"batch size must be >= 1, got {batch_size}")
    _, spec = read_weights(model_path)  # fails fast on a missing/broken model before touching images
    sky = read_subject_sky(subjects, fwhm_column=fwhm_column) if subjects is not None else None
    paths = list_images(images_dir, list(sky) if sky is not None else None)
    devs = resolve_devices(devices)
    if len(devs) > len(paths):
        devs = devs[: len(paths)]
    notes: list[str] = []
    if sky is None:
        notes.append("no --subjects table: clump_centre_ra/dec, galaxy_ra/dec and FWHM_r_px are NaN")
    elif len(sky) > len(paths):
        notes.append(f"{len(sky) - len(paths)} of the {len(sky)} subjects in {subjects} have no image in "
                     f"{images_dir} and are not in the catalogue")
    metadata = {"model": str(model_path), "model_version": spec.version, "score_threshold": score_threshold,
                "nms_iou": nms_iou, "drop_central": drop_central, "subjects": None if subjects is None else str(subjects),
                "images": str(images_dir), "pixels": "original image, x right, y down, origin top-left corner"}
    plot_path = out_path.with_name("predictions.png") if n_overlay > 0 else None
    base = dict(model_path=str(model_path), sky=sky, score_threshold=score_threshold,
                nms_iou=nms_iou or None, drop_central=drop_central, batch_size=batch_size, num_workers=num_workers,
                n_overlay=n_overlay, metadata=metadata)
    str_paths = [str(p) for p in paths]

    with atomic_path(out_path, suffix=".parquet") as tmp:
        if len(devs) == 1:
            results = [run_shard(ShardTask(paths=str_paths, out_file=str(tmp), device=devs[0], progress=progress,
                                           **base))]
        else:
            results = _run_parallel(base, str_paths, devs, tmp, progress)
        overlays = sorted((ov for r in results for ov in r.overlays), key=Overlay.key, reverse=True)[:n_overlay]
        n_no_sky = sum(r.n_without_sky for r in results)
        if sky is not None and n_no_sky:
            notes.append(f"{n_no_sky} galaxies have no ra/dec in {subjects}: their sky columns are NaN")
        if plot_path is not None:
            _plot_overlays(overlays, paths, spec, plot_path)
    return PredictResult(catalogue_path=out_path, plot_path=plot_path, n_images=sum(r.n_images for r in results),
                         n_clumps=sum(r.n_clumps for r in results), devices=devs, notes=notes)


def _run_parallel(base: dict, paths: list[str], devs: list[str], target: Path, progress: bool) -> list[ShardResult]:
    """One process per device over strided shards, then the shards concatenated into ``target``."""
    import multiprocessing as mp

    import pyarrow.parquet as pq

    n = len(devs)
    threads = max(1, (os.cpu_count() or 1) // n) if all(d == "cpu" for d in devs) else None
    shard_dir = Path(tempfile.mkdtemp(prefix=".predict-shards-", dir=target.parent))
    try:
        tasks = [ShardTask(paths=paths[i::n], out_file=str(shard_dir / f"part-{i}.parquet"), device=d,
                           progress=progress and i == 0, threads=threads, **base) for i, d in enumerate(devs)]
        with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(run_shard, tasks))
        offset = 0
        with pq.ParquetWriter(str(target), _schema(base["metadata"])) as writer:
            for task, res in zip(tasks, results, strict=True):
                for batch in pq.ParquetFile(task.out_file).iter_batches(batch_size=ROW_GROUP_ROWS):
                    df = batch.to_pandas()
                    df["clump_id"] += offset
                    writer.write_table(to_arrow(df))
                offset += res.n_clumps
        return results
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)


def _plot_overlays(overlays: list[Overlay], paths: list[Path], spec, target: Path) -> None:
    from clumptool.detection.evaluate import model_region
    from clumptool.detection.images import image_stem, load_image
    from clumptool.detection.plots import Panel, plot_detections

    by_sid = {image_stem(p): p for p in paths}
    panels = []
    for ov in overlays:
        img = load_image(by_sid[ov.subject_id], spec.in_channels, spec.fits_bands)
        region = model_region(spec, img.shape[2], img.shape[1]) if spec.crop else None
        panels.append(Panel(ov.subject_id, img, ov.boxes, ov.labels, ov.scores, region=region))
    plot_detections(panels, target, title=f"detections above the score threshold, model {spec.version}")
