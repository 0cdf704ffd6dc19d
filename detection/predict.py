"""``clumptool predict`` as a plain function: a trained detector over a folder of galaxies -> a clump catalogue.

One row per detected clump (columns: :data:`clumptool.detection.catalogue.CATALOGUE_COLUMNS`). Images are
streamed through the model in batches (:func:`clumptool.detection.inference.iter_detections`) and rows are
written to Parquet in row groups as they come: memory stays bounded for any number of images.

Devices: ``"auto"`` uses every visible GPU, else the CPU. With several devices the image list is split into
one contiguous-by-stride shard per device and each shard runs in its own process (``spawn``), each writing a
shard file that the parent then concatenates (renumbering clump_id). This is the plain one-process-per-GPU
data-parallel pattern (no inter-process communication during inference); it is exercised in the tests with
two CPU "devices", not on real GPUs here.

Post-processing as in Popp et al. (2024): a score threshold, class-agnostic NMS (IoU 0.2 by default) and
optionally removal of detections within ``drop_central`` px of the image centre (the bulge). The threshold is
the model's operating threshold (chosen by ``train`` on its validation galaxies) unless given; it is recorded
in the catalogue's Parquet metadata (key ``clumptool``) and in ``manifest.json``.

Outputs are one set: the catalogue, ``predictions.png`` and ``manifest.json`` are staged in a hidden sibling
folder and swapped in together (:func:`clumptool.common.outputs.output_set`), so Ctrl-C or a failure leaves the
previous outputs byte-identical and a rerun never mixes files of two runs. Every row's ``model_version`` is the
version of the weights that ran (model.json and the weights' own stamp must agree).
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
    from clumptool.detection.evaluate import check_device

    out = list(devices)
    if not out:
        raise ClumptoolError("--devices: no device given; use auto, cpu, cuda or a list such as cuda:0,cuda:1")
    for d in out:
        check_device(d, "--devices")
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
    score_threshold: float = 0.5
    n_missing_images: int = 0

    def summary(self) -> str:
        lines = [f"{self.n_clumps} clumps in {self.n_images} galaxies at score >= {self.score_threshold:g} -> "
                 f"{self.catalogue_path} (devices: {', '.join(self.devices)})"]
        if self.plot_path is not None:
            lines.append(f"overlay: {self.plot_path}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


CATALOGUE_NAME = "catalogue.parquet"
PLOT_NAME = "predictions.png"


def resolve_out(out: str | os.PathLike) -> tuple[Path, str]:
    """``--out`` -> (the folder published as one output set, the catalogue's file name in it).

    A folder gives ``folder/catalogue.parquet``; ``path/name.parquet`` gives ``path/name.parquet`` with
    ``path`` as the set's folder (it must be new, empty or a previous predict output).
    """
    out = Path(out)
    if out.suffix.lower() in (".parquet", ".pq"):
        return (out.parent if str(out.parent) else Path(".")), out.name
    if out.suffix and not out.is_dir():
        raise ClumptoolError(f"--out {out}: the catalogue is written as Parquet; give a folder (e.g. --out "
                             f"{out.with_suffix('')}/) or a file name ending in .parquet")
    return out, CATALOGUE_NAME


def check_out(out: str | os.PathLike) -> tuple[Path, str]:
    """Validate ``--out`` before any work (see :func:`resolve_out`)."""
    from clumptool.detection.evaluate import check_output_folder

    folder, name = resolve_out(out)
    try:
        check_output_folder(folder, "predict")
    except ClumptoolError as exc:
        if folder == Path(out):
            raise
        reason = str(exc).removeprefix(f"--out {folder}: ")
        raise ClumptoolError(
            f"--out {out}: predict publishes the catalogue with {PLOT_NAME} and manifest.json as one folder, "
            f"{folder}, but that folder {reason.removeprefix('folder ')}. Give a new folder, e.g. --out {folder / Path(name).stem}/ (the catalogue is then "
            f"{folder / Path(name).stem / CATALOGUE_NAME})") from exc
    return folder, name


def weights_version(model_path: str | os.PathLike) -> str | None:
    """The version stamped inside model.safetensors when it was saved (None for a checkpoint or no stamp)."""
    from clumptool.detection.io import WEIGHTS_NAME

    path = Path(model_path)
    path = path / WEIGHTS_NAME if path.is_dir() else path
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get("version")
    except Exception:  # noqa: BLE001 - read_weights reports a broken file properly
        return None


def check_model_version(model_path: str | os.PathLike, spec) -> None:
    """model.json and the weights must come from one training run, so that ``model_version`` names what ran."""
    stamped = weights_version(model_path)
    if stamped is not None and stamped != spec.version:
        raise ClumptoolError(
            f"--model {model_path}: model.json says version {spec.version} but the weights were saved as version "
            f"{stamped}: model.json was edited or belongs to another training run. Restore the model folder "
            "written by 'clumptool train' (or retrain) so the settings match the weights")


def predict_catalogue(model_path: str | os.PathLike, images_dir: str | os.PathLike, out_path: str | os.PathLike,
                      *, subjects: str | os.PathLike | None = None, score_threshold: float | None = None,
                      nms_iou: float | None = PAPER_NMS_IOU, drop_central: float = 0.0, batch_size: int = 8,
                      devices: str | Sequence[str] | None = "auto", num_workers: int = 0, n_overlay: int = 8,
                      fwhm_column: str = "fwhmImagePix", progress: bool = True,
                      allow_missing_images: bool = False) -> PredictResult:
    """Detect clumps on every image (of ``subjects``, if given) and write the catalogue (see module docstring).

    ``score_threshold``: None uses the operating threshold train recorded in the model (0.5 for older
    models, said in the notes). ``subjects`` (a Zooniverse subjects export or a table with subject_id, ra, dec,
    arcsecPerSide, fwhmImagePix) both restricts the galaxies and gives sky positions; without it the sky
    columns are NaN; a listed subject without an image is an error unless ``allow_missing_images``.
    ``out_path``: a folder, or ``folder/name.parquet``; the catalogue, ``predictions.png`` (the ``n_overlay``
    galaxies with most detections; ``n_overlay=0`` skips it) and ``manifest.json`` are published together as
    that folder, or not at all: a failure or Ctrl-C leaves the previous outputs as they were.
    """
    from clumptool.common.outputs import output_set, read_manifest
    from clumptool.detection.evaluate import (
        check_unit,
        find_images,
        missing_images_error,
        operating_threshold,
        read_subject_ids,
    )
    from clumptool.detection.io import read_weights

    if score_threshold is not None:
        check_unit("--score-threshold", score_threshold)
    check_unit("--nms-iou", nms_iou)
    if batch_size < 1:
        raise ClumptoolError(f"--batch-size must be >= 1, got {batch_size}")
    if num_workers < 0 or n_overlay < 0 or not drop_central >= 0:
        raise ClumptoolError("--num-workers, --overlay and --drop-central must be >= 0")
    folder, name = check_out(out_path)
    _, spec = read_weights(model_path)  # fails fast on a missing/broken model before touching images
    check_model_version(model_path, spec)
    threshold, threshold_source = operating_threshold(spec, score_threshold)
    wanted = read_subject_ids(subjects) if subjects is not None else None
    if wanted is not None and not wanted:
        raise ClumptoolError(f"--subjects {subjects}: lists no subjects; give the table of galaxies to catalogue")
    sky = read_subject_sky(subjects, fwhm_column=fwhm_column) if subjects is not None else None
    devs = resolve_devices(devices)
    paths, missing = find_images(images_dir, wanted)
    if missing and not allow_missing_images:
        raise missing_images_error(missing, len(wanted or []), images_dir, subjects)
    if len(devs) > len(paths):
        devs = devs[: len(paths)]
    notes: list[str] = []
    previous = read_manifest(folder) if folder.is_dir() else None
    if previous is not None and name not in previous.get("files", {}):
        notes.append(f"the previous predict outputs in {folder} ({', '.join(sorted(previous['files']))}) were "
                     "replaced by this run's")
    if score_threshold is None:
        notes.append(f"score threshold {threshold:g}: {threshold_source}")
    if sky is None:
        notes.append("no --subjects table: clump_centre_ra/dec, galaxy_ra/dec and FWHM_r_px are NaN")
    if missing:
        notes.append(f"{len(missing)} of the {len(wanted or [])} subjects in {subjects} have no image in {images_dir} "
                     f"and are NOT in the catalogue (--allow-missing-images): {', '.join(missing[:5])}"
                     + (", ..." if len(missing) > 5 else ""))
    metadata = {"model": str(model_path), "model_version": spec.version, "score_threshold": threshold,
                "score_threshold_source": threshold_source, "nms_iou": nms_iou, "drop_central": drop_central,
                "subjects": None if subjects is None else str(subjects), "images": str(images_dir),
                "n_images": len(paths), "n_missing_images": len(missing), "missing_images": missing,
                "pixels": "original image, x right, y down, origin top-left corner"}
    base = dict(model_path=str(model_path), sky=sky, score_threshold=threshold,
                nms_iou=nms_iou or None, drop_central=drop_central, batch_size=batch_size, num_workers=num_workers,
                n_overlay=n_overlay, metadata=metadata)
    str_paths = [str(p) for p in paths]

    with output_set(folder, "predict") as staged:
        tmp = staged.path / name
        if len(devs) == 1:
            results = [run_shard(ShardTask(paths=str_paths, out_file=str(tmp), device=devs[0], progress=progress,
                                           **base))]
        else:
            results = _run_parallel(base, str_paths, devs, tmp, progress)
        ran = {r.spec_dict.get("version") for r in results if r.spec_dict is not None}
        if ran != {spec.version}:  # the weights changed under us between the check and the run
            raise ClumptoolError(f"--model {model_path}: changed while predicting (versions {sorted(ran)}); rerun")
        overlays = sorted((ov for r in results for ov in r.overlays), key=Overlay.key, reverse=True)[:n_overlay]
        n_no_sky = sum(r.n_without_sky for r in results)
        if sky is not None and n_no_sky:
            notes.append(f"{n_no_sky} galaxies have no ra/dec in {subjects}: their sky columns are NaN")
        if n_overlay > 0:
            _plot_overlays(overlays, paths, spec, staged.path / PLOT_NAME)
        if not sum(r.n_clumps for r in results):
            notes.append(f"no clump scored >= {threshold:g} in any of the {len(paths)} galaxies: the catalogue has "
                         "no rows (a lower --score-threshold, or a better-trained model, may find some)")
        staged.info = {**metadata, "catalogue": name, "n_clumps": sum(r.n_clumps for r in results)}
    return PredictResult(catalogue_path=folder / name, plot_path=folder / PLOT_NAME if n_overlay > 0 else None,
                         n_images=sum(r.n_images for r in results), n_clumps=sum(r.n_clumps for r in results),
                         devices=devs, notes=notes, score_threshold=threshold, n_missing_images=len(missing))


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
