"""``clumptool predict`` as a plain function: a trained detector over many galaxies -> a clump catalogue.

One row per detected clump (columns: :data:`clumptool.detection.catalogue.CATALOGUE_COLUMNS`, units in the
Parquet field metadata and in the FITS/ECSV/VOTable columns). The galaxies are a folder of images or a table
of image paths with optional ra/dec/FWHM (:mod:`clumptool.detection.image_list`).

Inference runs on Lightning (:mod:`clumptool.detection.predicting`): ``Trainer.predict`` on one CPU, N CPU
processes (``--devices N`` without a GPU: DDP over gloo), one or many GPUs, or many nodes launched by torchrun
or SLURM as for ``train``. The input list is cut into shards (:mod:`clumptool.detection.shards`, a plan fixed
by the inputs and settings, not by the number of processes); each rank writes each finished shard as one
Parquet file; rank 0 then merges them in plan order (clump_id renumbered), so the catalogue is the same on 1 or
N processes. Memory does not grow with the number of galaxies (nothing is kept per image).

Post-processing as in Popp et al. (2024): a score threshold, class-agnostic NMS (IoU 0.2 by default) and
optionally removal of detections within ``drop_central`` px of the image centre (the bulge). The threshold is
the model's operating threshold (chosen by ``train`` on its validation galaxies) unless given; it is recorded
in the catalogue's metadata (Parquet key ``clumptool``; FITS/ECSV/VOTable keys of ``catalogue.META_KEYS``) and
in ``manifest.json``.

Outputs are one set: the catalogue, ``galaxies.parquet`` (every galaxy looked at, detections or not: ``aggregate
--detections`` counts the detector's silence only there), ``predictions.png`` and ``manifest.json`` are staged in a
hidden sibling folder ``.OUT.partial`` and swapped in together (:func:`clumptool.common.outputs.output_set`), so Ctrl-C, a kill
or a failure leaves the previous outputs byte-identical. The finished shards live in ``.OUT.partial/shards``:
an interrupted or killed run keeps them and the same command resumes, computing only the missing shards; an
error (a broken image, a bad option) removes them. Every row's ``model_version`` is the version of the
weights that ran (model.json and the weights' own stamp must agree).
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors import safe_open

from clumptool.common.catalogue import GALAXIES_FILE, META_KEY
from clumptool.common.errors import ClumptoolError
from clumptool.common.options import options_from
from clumptool.common.outputs import output_set, read_manifest, staging_path
from clumptool.detection.catalogue import (
    CATALOGUE_SCHEMA,
    FORMATS,
    catalogue_rows,
    format_of,
    with_units,
    write_astropy,
)
from clumptool.detection.evaluate import (
    SHOWN_IDS,
    check_output_folder,
    missing_images_error,
    model_region,
    operating_threshold,
)
from clumptool.detection.image_list import read_image_list
from clumptool.detection.images import load_image
from clumptool.detection.io import WEIGHTS_NAME, load_model, read_weights
from clumptool.detection.options import PredictOptions
from clumptool.detection.plots import Panel, plot_detections
from clumptool.detection.predicting import (
    DetectorPredictor,
    PostProcessed,
    ShardedImages,
    ShardWriter,
    check_precision,
    make_trainer,
    parse_devices,
    run_detection,
)
from clumptool.detection.shards import ShardStore, plan_shards
from clumptool.detection.train import quiet_lightning

ROW_GROUP_ROWS = 50_000
SHARDS_DIR = "shards"
MAX_SHARD_SIZE = 1000
MIN_SHARDS = 64  # small inputs are still cut into enough shards to keep many processes busy

__all__ = ["PredictResult", "catalogue_rows", "check_out", "predict_catalogue", "resolve_out"]


def default_shard_size(n_images: int, batch_size: int = 1) -> int:
    """Images per shard: whole batches, up to ~1000 images (a lost shard costs little), and at least 64 shards
    when the input allows (so many processes get work)."""
    per = -(-n_images // MIN_SHARDS)
    per = -(-per // batch_size) * batch_size  # batches never straddle shards: keep them full
    return max(batch_size, min(per, max(batch_size, MAX_SHARD_SIZE // batch_size * batch_size)))


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
class PredictResult:
    """What :func:`predict_catalogue` wrote (on DDP ranks other than 0 only the counters are filled)."""

    catalogue_path: Path
    plot_path: Path | None
    n_images: int
    n_clumps: int
    devices: list[str]
    notes: list[str]
    score_threshold: float = 0.5
    n_missing_images: int = 0
    is_global_zero: bool = True
    world_size: int = 1
    n_shards: int = 0
    n_shards_resumed: int = 0
    shards_computed: list[int] = field(default_factory=list)
    n_images_computed: int = 0  # by this process (the images of the shards it wrote)

    def summary(self) -> str:
        resumed = f", {self.n_shards_resumed} resumed from an interrupted run" if self.n_shards_resumed else ""
        lines = [f"{self.n_clumps} clumps in {self.n_images} galaxies at score >= {self.score_threshold:g} -> "
                 f"{self.catalogue_path} (devices: {', '.join(self.devices)}; {self.n_shards} shards{resumed})"]
        if self.plot_path is not None:
            lines.append(f"overlay: {self.plot_path}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


CATALOGUE_STEM = "catalogue"
CATALOGUE_NAME = "catalogue.parquet"
PLOT_NAME = "predictions.png"


def _suffixes() -> str:
    return ", ".join(sufs[0] for sufs in FORMATS.values())


def resolve_out(out: str | os.PathLike, fmt: str | None = None) -> tuple[Path, str]:
    """``--out`` (and ``--format``) -> (the folder published as one output set, the catalogue's file name in it).

    A folder gives ``folder/catalogue.<format>`` (Parquet unless ``fmt``); ``path/name.fits`` (or .parquet,
    .ecsv, .vot) gives ``path/name.fits`` with ``path`` as the set's folder (new, empty or a previous predict
    output), the format from the suffix.
    """
    out = Path(out)
    if fmt is not None and fmt not in FORMATS:
        raise ClumptoolError(f"--format {fmt}: unknown; use one of {', '.join(FORMATS)}")
    by_suffix = format_of(out.name)
    if by_suffix is not None and not out.is_dir():
        if fmt is not None and fmt != by_suffix:
            raise ClumptoolError(f"--out {out} asks for {by_suffix} but --format is {fmt}; drop one of them or "
                                 "make them agree")
        return (out.parent if str(out.parent) else Path(".")), out.name
    if out.suffix and not out.is_dir():
        raise ClumptoolError(f"--out {out}: the catalogue is written as Parquet, FITS, ECSV or VOTable; give a "
                             f"folder (e.g. --out {out.with_suffix('')}/) or a file name ending in .parquet, "
                             f".fits, .ecsv or .vot ({_suffixes()})")
    return out, CATALOGUE_STEM + FORMATS[fmt or "parquet"][0]


def check_out(out: str | os.PathLike, fmt: str | None = None) -> tuple[Path, str]:
    """Validate ``--out`` before any work (see :func:`resolve_out`)."""
    folder, name = resolve_out(out, fmt)
    try:
        check_output_folder(folder, "predict")
    except ClumptoolError as exc:
        if folder == Path(out):
            raise
        reason = str(exc).removeprefix(f"--out {folder}: ")
        stem = Path(name).stem
        raise ClumptoolError(
            f"--out {out}: predict publishes the catalogue with {PLOT_NAME} and manifest.json as one folder, "
            f"{folder}, but that folder {reason.removeprefix('folder ')}. Give a new folder, e.g. --out "
            f"{folder / stem}/ (the catalogue is then {folder / stem / (CATALOGUE_STEM + Path(name).suffix)})"
        ) from exc
    return folder, name


def weights_version(model_path: str | os.PathLike) -> str | None:
    """The version stamped inside model.safetensors when it was saved (None for a checkpoint or no stamp)."""
    path = Path(model_path)
    path = path / WEIGHTS_NAME if path.is_dir() else path
    if path.suffix != ".safetensors" or not path.is_file():
        return None

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


def _missing_error(images, missing: list[str], n_listed: int, images_dir, subjects) -> ClumptoolError:
    if subjects is not None:
        return missing_images_error(missing, n_listed, images_dir, subjects)
    shown = ", ".join(missing[:SHOWN_IDS]) + (", ..." if len(missing) > SHOWN_IDS else "")
    return ClumptoolError(f"{len(missing)} of the {n_listed} images listed in {images_dir} do not exist: {shown}. "
                          "Fix their paths (relative paths are read from the table's folder), remove the rows, or "
                          "pass --allow-missing-images to go on without them (the count is then reported)")


def predict_catalogue(model_path: str | os.PathLike, images_dir: str | os.PathLike, out_path: str | os.PathLike,
                      options: PredictOptions | None = None, *, subjects: str | os.PathLike | None = None,
                      progress: bool = True, callbacks: list | None = None, **fields: Any) -> PredictResult:
    """Detect clumps on every galaxy and write the catalogue (see the module docstring).

    ``images_dir``: a folder of images or a table of image paths. ``score_threshold``: None uses the operating
    threshold train recorded in the model (0.5 for older models, said in the notes). ``subjects`` (a Zooniverse
    subjects export or a table with subject_id, ra, dec, arcsecPerSide, fwhmImagePix) both restricts the
    galaxies and gives sky positions; without it (and without such columns in an image table) the sky columns
    are NaN; a listed subject without an image is an error unless ``allow_missing_images``.
    ``out_path``: a folder, or ``folder/name.<parquet|fits|ecsv|vot>``; ``fmt`` picks the format for a folder.
    The catalogue, ``galaxies.parquet`` (every galaxy looked at), ``predictions.png`` (the ``n_overlay`` galaxies
    with most detections; 0 skips it) and ``manifest.json`` are published together as that folder, or not at all.
    ``devices``, ``num_nodes``, ``strategy``, ``precision``: as for ``train`` (Lightning). ``shard_size``: images per resumable shard
    [default: :func:`default_shard_size`]. ``options`` (a :class:`~clumptool.detection.options.PredictOptions`,
    checked when made) or keyword ``fields`` of it (``batch_size=4``, ...) hold all of these.
    """
    o = options_from(PredictOptions, options, fields)
    score_threshold, nms_iou, drop_central, batch_size = o.score_threshold, o.nms_iou, o.drop_central, o.batch_size
    devices, num_nodes, strategy, precision, shard_size = o.devices, o.num_nodes, o.strategy, o.precision, o.shard_size
    num_workers, n_overlay, fmt, fwhm_column = o.num_workers, o.n_overlay, o.fmt, o.fwhm_column
    allow_missing_images = o.allow_missing_images
    if not isinstance(devices, (str, int)) and devices is not None:
        devices = ",".join(map(str, devices))
    devs = parse_devices(devices)
    check_precision(precision, devs)
    folder, name = check_out(out_path, fmt)
    fmt = format_of(name)
    _, spec = read_weights(model_path)  # fails fast on a missing/broken model before touching images
    check_model_version(model_path, spec)
    threshold, threshold_source = operating_threshold(spec, score_threshold)
    images = read_image_list(images_dir, subjects, fwhm_column=fwhm_column)
    missing = images.missing
    if missing and not allow_missing_images:
        raise _missing_error(images, missing, len(images) + len(missing), images_dir, subjects)
    notes: list[str] = []
    previous = read_manifest(folder) if folder.is_dir() else None
    if previous is not None and name not in previous.get("files", {}):
        notes.append(f"the previous predict outputs in {folder} ({', '.join(sorted(previous['files']))}) were "
                     "replaced by this run's")
    if score_threshold is None:
        notes.append(f"score threshold {threshold:g}: {threshold_source}")
    if images.sky is None:
        notes.append("no --subjects table and no ra/dec columns: clump_centre_ra/dec, galaxy_ra/dec and FWHM_r_px "
                     "are NaN")
    elif images.n_without_sky():
        notes.append(f"{images.n_without_sky()} galaxies have no ra/dec in {subjects or images_dir}: their sky "
                     "columns are NaN")
    if missing:
        listed = "subjects in " + str(subjects) if subjects is not None else "images listed in " + str(images_dir)
        notes.append(f"{len(missing)} of the {len(images) + len(missing)} {listed} have no image"
                     f"{' in ' + str(images_dir) if subjects is not None else ''} "
                     f"and are NOT in the catalogue (--allow-missing-images): {', '.join(missing[:5])}"
                     + (", ..." if len(missing) > 5 else ""))
    metadata = {"model": str(model_path), "model_version": spec.version, "score_threshold": threshold,
                "score_threshold_source": threshold_source, "nms_iou": nms_iou, "drop_central": drop_central,
                "subjects": None if subjects is None else str(subjects), "images": str(images_dir),
                "n_images": len(images), "n_missing_images": len(missing), "missing_images": missing,
                "pixels": "original image, x right, y down, origin top-left corner",
                "crop": spec.crop}  # the detector's field: its central crop (aggregate --detections reads it)

    model, ran = load_model(model_path, device="cpu")
    if ran.version != spec.version:  # the weights changed under us between the check and the load
        raise ClumptoolError(f"--model {model_path}: changed while predicting (versions {spec.version}, "
                             f"{ran.version}); rerun")
    settings = {"model_version": spec.version, "score_threshold": threshold, "nms_iou": nms_iou or None,
                "drop_central": drop_central, "batch_size": batch_size, "precision": str(precision),
                "classes": list(spec.classes)}
    sky_bytes = [] if images.sky is None else [np.ascontiguousarray(images.sky).tobytes()]
    plan = plan_shards((f"{i}\t{p}" for i, p in zip(images.ids, images.paths, strict=True)), settings,
                       shard_size or default_shard_size(len(images), batch_size), extra=sky_bytes)
    store = ShardStore(staging_path(folder) / SHARDS_DIR, plan)
    writer = ShardWriter(store, images, list(spec.classes), spec.version, rows=catalogue_rows)
    module = DetectorPredictor(model, PostProcessed(threshold, nms_iou or None, drop_central))
    data = ShardedImages(images, store, spec, batch_size=batch_size, num_workers=num_workers)
    with quiet_lightning():
        trainer = make_trainer(devs, num_nodes=num_nodes, strategy=strategy, precision=precision,
                               progress=progress, callbacks=[writer, *(callbacks or [])])
    world = [devs.accelerator] * int(trainer.world_size) if trainer.world_size > 1 else [devs.label]

    def result(**kw) -> PredictResult:
        kw["n_images_computed"] = sum(plan.bounds(k)[1] - plan.bounds(k)[0] for k in kw["shards_computed"])
        return PredictResult(catalogue_path=folder / name, n_images=len(images), devices=world, notes=notes,
                             score_threshold=threshold, n_missing_images=len(missing),
                             world_size=int(trainer.world_size), n_shards=plan.n_shards, **kw)

    if not trainer.is_global_zero:  # another DDP rank: compute its shards; rank 0 publishes
        with quiet_lightning():
            run = run_detection(trainer, module, data, writer)
        return result(plot_path=None, n_clumps=0, is_global_zero=False, shards_computed=run.written,
                      n_shards_resumed=plan.n_shards - len(run.pending))

    with output_set(folder, "predict", keep_staging_on_error=True, reuse_staging=True) as staged:
        try:
            for p in staged.path.iterdir():  # a resumed staging folder: only the shards are reused
                if p.name != SHARDS_DIR:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            with quiet_lightning():
                run = run_detection(trainer, module, data, writer)
            n_clumps, overlays = merge_shards(store, staged.path / name, fmt, metadata, n_overlay, images.ids)
            write_galaxies(images.ids, staged.path / GALAXIES_FILE)
            if n_overlay > 0:
                _plot_overlays(overlays, images, spec, staged.path / PLOT_NAME)
            shutil.rmtree(store.folder)
        except Exception:
            shutil.rmtree(staged.path, ignore_errors=True)  # an error: nothing to resume (interrupts keep shards)
            raise
        if not n_clumps:
            notes.append(f"no clump scored >= {threshold:g} in any of the {len(images)} galaxies: the catalogue has "
                         "no rows (a lower --score-threshold, or a better-trained model, may find some)")
        staged.info = {**metadata, "catalogue": name, "format": fmt, "n_clumps": n_clumps,
                       "shards": plan.to_dict(), "world_size": int(trainer.world_size)}
    return result(plot_path=folder / PLOT_NAME if n_overlay > 0 else None, n_clumps=n_clumps,
                  shards_computed=sorted(run.written), n_shards_resumed=plan.n_shards - len(run.pending))


def write_galaxies(ids: list[str], target: Path) -> None:
    """Every galaxy this run looked at, detections or not (``aggregate --detections`` counts the detector's
    silence only on these)."""
    pq.write_table(pa.table({"subject_id": pa.array([str(i) for i in ids], pa.string())}), str(target))


def merge_shards(store, target: Path, fmt: str, metadata: dict, n_overlay: int, ids: list[str]
                 ) -> tuple[int, list[Overlay]]:
    """Concatenate the shards in plan order into the catalogue (clump_id renumbered from 0), streaming; the
    ``n_overlay`` galaxies with most detections (then fewest-first galaxies without any) for the plot."""
    schema = with_units(CATALOGUE_SCHEMA).with_metadata({META_KEY.encode(): json.dumps(metadata).encode()})
    parquet = target if fmt == "parquet" else store.folder / "merged.parquet"
    heap: list[tuple] = []
    offset = 0
    pending: list[pa.Table] = []
    n_pending = 0
    with pq.ParquetWriter(str(parquet), schema) as writer:
        for table in store.tables():
            n = table.num_rows
            if not n:
                continue
            table = table.set_column(table.schema.get_field_index("clump_id"), "clump_id",
                                     pa.array(np.arange(offset, offset + n, dtype=np.int64)))
            offset += n
            pending.append(table.cast(schema))
            n_pending += n
            if n_pending >= ROW_GROUP_ROWS:
                writer.write_table(pa.concat_tables(pending))
                pending, n_pending = [], 0
            if n_overlay:
                _keep_clumpiest(heap, table, n_overlay)
        if pending:
            writer.write_table(pa.concat_tables(pending))
    overlays = [ov for _, ov in sorted(heap, key=lambda t: t[0], reverse=True)]
    if len(overlays) < n_overlay:  # fewer galaxies with detections than panels: show some without
        shown = {ov.subject_id for ov in overlays}
        empty = np.zeros((0, 4))
        for sid in ids:
            if len(overlays) >= n_overlay:
                break
            if sid not in shown:
                overlays.append(Overlay(0, sid, empty, np.zeros(0), np.zeros(0, dtype=np.int64)))
    if fmt != "parquet":
        write_astropy(pq.read_table(parquet), target, fmt, metadata)
        parquet.unlink()
    return offset, overlays


def _keep_clumpiest(heap: list[tuple], table, n_overlay: int) -> None:
    cols = ["subject_id", "clump_score", "clump_label_id", "clump_px_x1", "clump_px_y1", "clump_px_x2", "clump_px_y2"]
    df = table.select(cols).to_pandas()
    for sid, g in df.groupby("subject_id", sort=False):
        ov = Overlay(len(g), str(sid), g[cols[3:]].to_numpy(float), g["clump_score"].to_numpy(float),
                     g["clump_label_id"].to_numpy(np.int64))
        item = (ov.key(), ov)
        if len(heap) < n_overlay:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)


def _plot_overlays(overlays: list[Overlay], images, spec, target: Path) -> None:
    """predictions.png from the catalogue's own rows (the detector is not run again to draw)."""
    wanted = {ov.subject_id for ov in overlays}
    by_sid = {sid: p for sid, p in zip(images.ids, images.paths, strict=True) if sid in wanted}
    panels = []
    for ov in overlays:
        img = load_image(by_sid[ov.subject_id], spec.in_channels, spec.fits_bands)
        region = model_region(spec, img.shape[2], img.shape[1]) if spec.crop else None
        panels.append(Panel(ov.subject_id, img, ov.boxes, ov.labels, ov.scores, region=region))
    plot_detections(panels, target, title=f"detections above the score threshold, model {spec.version}")
