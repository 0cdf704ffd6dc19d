"""``clumptool simulate`` as a plain function: a whole synthetic Clump Scout project on disk, with its truth.

Reproducible: every random choice comes from one seed (one child generator per galaxy for the images, so the
bytes do not depend on how many processes render them; a second stream for the crowd's own behaviours, so every
crowd sees the same galaxies and volunteers). The outputs are one output set (``common.outputs``): built in a
hidden staging folder beside ``--out`` and swapped in with manifest.json last, so a failure or Ctrl-C leaves the
previous project byte-identical, and a rerun never leaves files of an earlier run behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clumptool.aggregation.subjects import read_subjects
from clumptool.common.errors import ClumptoolError
from clumptool.common.outputs import check_output_location, output_set
from clumptool.common.tables import read_table
from clumptool.common.wcs import pixel_to_sky
from clumptool.simulation.config import CROWD_TABLE, SimulationConfig
from clumptool.simulation.export_format import classification_rows, workflow_definition, write_export
from clumptool.simulation.galaxy import (
    Scene,
    add_noise_peaks,
    draw_scene,
    render_bands,
    scene_objects,
    to_rgb,
)
from clumptool.simulation.preview import preview_grid
from clumptool.simulation.volunteers import ClickBatch, make_population, simulate_clicks

RETIRED_AT = "2019-12-31 12:00:00 UTC"  # when the simulated workflow retired its classified galaxies
SUBJECT_COLUMNS = ("subject_id", "project_id", "workflow_id", "subject_set_id", "metadata", "locations",
                   "classifications_count", "retired_at", "retirement_reason", "created_at", "updated_at")


@dataclass
class SimulationResult:
    out_dir: Path
    n_galaxies: int
    n_clumps: int
    n_classifications: int
    n_volunteers: int
    seconds: float
    files: dict = field(default_factory=dict)


def load_layouts() -> pd.DataFrame:
    """Real Clump Scout clump layouts shipped with clumptool (see simulation/data/README.md)."""
    with resources.files("clumptool.simulation").joinpath("data/clump_layouts.csv.gz").open("rb") as fh:
        return pd.read_csv(fh, compression="gzip")


@dataclass
class Galaxy:
    subject_id: int
    scene: Scene
    seed: np.random.SeedSequence
    ra: float
    dec: float
    redshift: float
    seeing: float


def draw_galaxies(config: SimulationConfig, rng: np.random.Generator) -> list[Galaxy]:
    """Scenes of every galaxy (positions, sizes, fluxes), without pixels."""
    layouts = load_layouts()
    groups = {k: g for k, g in layouts.groupby("layout")}
    keys = np.array(sorted(groups))
    child_seeds = np.random.SeedSequence(config.seed).spawn(config.galaxies)
    galaxies = []
    for i in range(config.galaxies):
        g = groups[keys[rng.integers(len(keys))]]
        fwhm = float(g["side"].iloc[0]) / 2.5 * config.scale
        clumpy = rng.random() < config.clumpy_fraction
        seeing = float(np.clip(rng.normal(1.4, 0.25), 0.9, 2.2))
        scene = draw_scene(rng, config.image_size, g if clumpy else None, fwhm, seeing, config.detectable_snr)
        galaxies.append(Galaxy(
            subject_id=config.first_subject_id + i, scene=scene, seed=child_seeds[i],
            ra=round(float(rng.uniform(120, 240)), 6),
            dec=round(float(np.degrees(np.arcsin(rng.uniform(0, np.sin(np.radians(60)))))), 6),
            redshift=float(rng.uniform(0.02, 0.15)), seeing=seeing,
        ))
    return galaxies


def truth_table(galaxies: list[Galaxy], size: int) -> pd.DataFrame:
    rows = []
    for g in galaxies:
        c = g.scene.clumps
        if len(c) == 0:
            continue
        scale = round(g.scene.pixel_scale * size, 4) / size  # exactly what the subjects' #arcsecPerSide says
        ra, dec = pixel_to_sky(c["x"].to_numpy(), c["y"].to_numpy(), g.ra, g.dec, scale, size, size)
        t = c.assign(subject_id=g.subject_id, ra=ra, dec=dec)
        rows.append(t)
    cols = ["subject_id", "clump_id", "x", "y", "label", "odd_kind", "flux", "peak_snr", "fwhm_px", "detectable",
            "ra", "dec"]
    if not rows:
        return pd.DataFrame(columns=cols)
    truth = pd.concat(rows, ignore_index=True)
    truth["clump_id"] = truth.groupby("subject_id").cumcount()
    return truth[cols]


def subjects_table(galaxies: list[Galaxy], config: SimulationConfig, counts: pd.Series | None = None
                   ) -> tuple[pd.DataFrame, dict[int, str]]:
    """The subjects export rows, and each subject's ``subject_data`` JSON for the classification export."""
    rows, subject_data = [], {}
    counts = counts if counts is not None else pd.Series(dtype=int)
    for g in galaxies:
        n = int(counts.get(g.subject_id, config.volunteers_per_subject))
        arcsec_side = g.scene.pixel_scale * config.image_size
        meta = {"ra": round(g.ra, 6), "dec": round(g.dec, 6), "#local_id": f"SIM{g.subject_id}",
                "#fwhmImagePix": round(g.scene.fwhm_px, 4), "#arcsecPerSide": round(arcsec_side, 4),
                "#fwhm": round(g.seeing, 3), "#redshift": round(g.redshift, 4), "origin": "simulated"}
        rows.append({
            "subject_id": g.subject_id, "project_id": config.project_id, "workflow_id": config.workflow_id,
            "subject_set_id": config.subject_set_id, "metadata": json.dumps(meta, separators=(",", ":")),
            "locations": json.dumps({"0": f"https://panoptes-uploads.zooniverse.org/subject_location/sim-{g.subject_id}.png"}),
            # the simulated project has run its course: every classified galaxy had its crowd and was retired
            "classifications_count": n, "retired_at": RETIRED_AT if n else "",
            "retirement_reason": "classification_count" if n else "",
            "created_at": "2019-10-31 12:00:00 UTC", "updated_at": "2019-10-31 12:00:00 UTC",
        })
        subject_data[g.subject_id] = json.dumps({str(g.subject_id): {"retired": None, **meta}}, separators=(",", ":"))
    return pd.DataFrame(rows, columns=list(SUBJECT_COLUMNS)), subject_data


def _render_png(args: tuple[Scene, np.random.SeedSequence, str]) -> None:
    scene, seed, path = args
    rgb = to_rgb(render_bands(scene, np.random.default_rng(seed)))
    Image.fromarray(rgb).save(path, format="PNG", compress_level=3)


def _die_with_parent(parent: int) -> None:
    """Render workers end with ``simulate`` itself: a SIGKILL to it must not leave orphans rendering on
    (they would hold its output streams open and keep writing into a staging folder nobody owns)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def render_images(galaxies: list[Galaxy], folder: Path, workers: int,
                  progress: Callable[[int], None] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(g.scene, g.seed, str(folder / f"{g.subject_id}.png")) for g in galaxies]
    n = workers or os.cpu_count() or 1
    if n <= 1 or len(jobs) < 8:
        for j in jobs:
            _render_png(j)
            if progress:
                progress(1)
        return
    pool = ProcessPoolExecutor(max_workers=n, initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        for _ in pool.map(_render_png, jobs, chunksize=8):
            if progress:
                progress(1)
    except BaseException:  # Ctrl-C or a failure: stop queued work now, let the running images end
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def objects_table(galaxies: list[Galaxy]) -> pd.DataFrame:
    """objects.csv: every scene object a volunteer may click besides clumps (bulge, stars, companions, peaks)."""
    parts = [scene_objects(g.scene).assign(subject_id=g.subject_id) for g in galaxies]
    t = pd.concat(parts, ignore_index=True)
    return t[["subject_id", "object_id", "kind", "x", "y", "brightness", "size_px"]]


def marks_truth_table(batch: ClickBatch, export: pd.DataFrame, pop) -> pd.DataFrame:
    """marks_truth.csv: every mark of the export with what the volunteer clicked (target, object_id).

    ``object_id`` is the clump_id of truth.csv for clump marks, the object_id of objects.csv for bulge, star,
    companion and noise-peak marks, and -1 for spurious marks on nothing in particular.
    """
    cls = batch.classifications
    ids = export.set_index("_row")["classification_id"] if "_row" in export.columns else None
    m = batch.marks
    rows = m["row"].to_numpy()
    out = pd.DataFrame({
        "classification_id": ids.reindex(rows).to_numpy() if ids is not None else rows,
        "subject_id": cls["subject_id"].to_numpy()[rows],
        "user_name": pop.table["user_name"].to_numpy()[cls["volunteer"].to_numpy()[rows]],
        "x": np.round(m["x"].to_numpy(), 3), "y": np.round(m["y"].to_numpy(), 3), "tool": m["tool"].to_numpy(),
        "target": m["target"].to_numpy(), "object_id": m["object_id"].to_numpy(),
    })
    return out.sort_values(["classification_id"], kind="stable").reset_index(drop=True)


def crowd_stream(config: SimulationConfig) -> np.random.Generator:
    """The crowd's own random stream (kept apart so the default behaviour's draws do not move)."""
    return np.random.default_rng([config.seed, 0xC20D])


def simulate_project(out_dir: str | os.PathLike, config: SimulationConfig | None = None,
                     progress: Callable[[int], None] | None = None) -> SimulationResult:
    """Generate a complete simulated project in ``out_dir`` (see the module docstring for what is written)."""
    config = config or SimulationConfig()
    t0 = time.perf_counter()
    out = check_output_location(out_dir)
    rng = np.random.default_rng(config.seed)
    crowd_rng = crowd_stream(config)
    galaxies = draw_galaxies(config, rng)
    if config.crowd.noise_peaks_per_image > 0:
        for g in galaxies:
            add_noise_peaks(g.scene, crowd_rng, config.crowd.noise_peaks_per_image, config.crowd.noise_peak_snr)
    truth = truth_table(galaxies, config.image_size)
    objects = objects_table(galaxies)
    n_vol = max(config.max_viewers * 3, int(config.galaxies * config.mean_viewers / 40))
    pop = make_population(rng, n_vol, config.volunteer_model, config.crowd, crowd_rng, config.scale)
    sub_info = pd.DataFrame({
        "subject_id": [g.subject_id for g in galaxies],
        "galaxy_scale": [g.scene.disc_scale for g in galaxies],
        "stars": [g.scene.stars[:, :2].tolist() for g in galaxies],
    })
    batch = simulate_clicks(rng, sub_info, truth, pop, config, objects, crowd_rng)
    firsts = batch.classifications[~batch.classifications["repeat"]]
    subjects, subject_data = subjects_table(galaxies, config, firsts.groupby("subject_id").size())
    export = classification_rows(batch, pop, subject_data, config, rng)
    marks_truth = marks_truth_table(batch, export, pop)
    export = export.drop(columns="_row")
    counts = batch.classifications.groupby("volunteer").size()
    vt = pop.table.drop(columns=["activity", "user_ip"]).assign(
        n_classifications=pop.table.index.map(counts).fillna(0).astype(int))

    with output_set(out, "simulate") as staged:
        staged.info.update({"galaxies": config.galaxies, "seed": config.seed, "crowd": config.crowd.name,
                            "image_size": config.image_size, "images": config.images})
        tmp = staged.path
        truth.to_csv(tmp / "truth.csv", index=False)
        objects.to_csv(tmp / "objects.csv", index=False)
        subjects.to_csv(tmp / "subjects.csv", index=False)
        write_export(export, tmp / "classifications.csv")
        marks_truth.to_csv(tmp / "marks_truth.csv", index=False)
        vt.to_csv(tmp / "volunteers_truth.csv", index=False)
        (tmp / "workflow.json").write_text(json.dumps(workflow_definition(config), indent=2))
        if config.images:
            render_images(galaxies, tmp / "images", config.workers, progress)
            preview_grid(tmp / "images", truth, tmp / "preview.png")
        (tmp / "README.txt").write_text(readme_text(config, galaxies, truth, export, pop))
        files = {p.stem: str(out / p.name) for p in sorted(tmp.iterdir())}
    return SimulationResult(out_dir=out, n_galaxies=len(galaxies), n_clumps=len(truth),
                            n_classifications=len(export), n_volunteers=pop.n,
                            seconds=time.perf_counter() - t0, files=files)


def readme_text(config: SimulationConfig, galaxies: list[Galaxy], truth: pd.DataFrame, export: pd.DataFrame,
                pop) -> str:
    params = asdict(config)
    n_clumpy = sum(1 for g in galaxies if len(g.scene.clumps))
    kinds = pop.table["kind"].value_counts().to_dict()
    lines = [
        "Simulated Galaxy Zoo: Clump Scout project, made by `clumptool simulate`.",
        "",
        f"{len(galaxies)} galaxies ({n_clumpy} with clumps), {len(truth)} injected clumps "
        f"({int((truth['label'] == 2).sum()) if len(truth) else 0} odd, "
        f"{int(truth['detectable'].sum()) if len(truth) else 0} detectable at peak S/N >= {config.detectable_snr}),",
        f"{len(export)} classifications by {pop.n} volunteers ({kinds}).",
        f"Crowd: {config.crowd.name}: {dict(CROWD_TABLE)[config.crowd.name]}.",
        "",
        "Files:",
        "  images/<subject_id>.png  RGB gri composites (Lupton asinh stretch), "
        f"{config.image_size}x{config.image_size} px" if config.images else "  (no images: --no-images)",
        "  truth.csv                every injected clump: subject_id, clump_id, x, y (pixels, x right, y down),",
        "                           label (1 clump, 2 odd), odd_kind (red = redder than normal clumps,",
        "                           off-disc = far outside the disc), flux, peak_snr, fwhm_px, detectable, ra, dec",
        "  subjects.csv             Zooniverse subjects export (metadata: ra, dec, #fwhmImagePix, #arcsecPerSide,",
        "                           #local_id, #fwhm (seeing, arcsec), #redshift)",
        "  classifications.csv      Zooniverse classification export (14 columns; T0 question, T1 point tools",
        "                           0 'Normal clump', 1 'Odd clump'; older rows old front end, newest new front end)",
        "  volunteers_truth.csv     every simulated volunteer's kind and true skills",
        "  objects.csv              what else is in each image: subject_id, object_id, kind (bulge, star,",
        "                           companion, noise_peak), x, y, brightness (sky sigma), size_px",
        "  marks_truth.csv          every mark with what was clicked: classification_id, subject_id, user_name,",
        "                           x, y, tool, target (clump, spurious, bulge, companion_centre, star, companion,",
        "                           noise_peak), object_id (truth clump_id or objects object_id; -1 none)",
        "  workflow.json            the workflow's tasks and strings",
        "  manifest.json            the run and every file with its size and SHA-256 (written last)",
        "  preview.png              a grid of images with the true clumps circled",
        "",
        "Physics: exponential disc (spiral arms or patchy irregular light) + Sersic bulge; clumps are",
        "point sources seen through a Gaussian PSF (blue; odd ones redder or off-disc); foreground stars and",
        "neighbouring galaxies as distractors; seeing ~ N(1.4, 0.25) arcsec (SDSS-like), FWHM in pixels from the",
        "real Clump Scout box sizes (side = 2.5 FWHM); Gaussian sky noise of unit sigma per band; clump peak S/N",
        "lognormal around 18 so that some are faint; clump layouts from 4,000 real Clump Scout galaxies.",
        "",
        "Parameters:",
        json.dumps(params, indent=2, default=str),
    ]
    return "\n".join(lines) + "\n"


def check_export_target(out_path: str | os.PathLike, what: str = "--out") -> Path:
    """Fail before any work when a classification export cannot be written at ``out_path``."""
    out = Path(out_path)
    if out.is_dir():
        raise ClumptoolError(f"{what} {out}: is a folder; give a file name for the export, e.g. {out / 'round2.csv'}")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClumptoolError(f"{what} {out}: cannot create the folder {parent} ({exc.strerror}); "
                             "choose another location") from exc
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ClumptoolError(f"{what} {out}: not writable; choose another location")
    return out


def read_objects(path: str | os.PathLike | None, truth_path: str | os.PathLike) -> pd.DataFrame | None:
    """objects.csv named by the user, or the one beside truth.csv (a simulated project's), or None."""
    if path is None:
        beside = Path(truth_path).with_name("objects.csv")
        if not beside.is_file():
            return None
        path = beside
    return read_table(path, required=("subject_id", "object_id", "kind", "x", "y", "brightness", "size_px"))


def simulate_volunteer_export(truth_path: str | os.PathLike, subjects_path: str | os.PathLike,
                              out_path: str | os.PathLike, config: SimulationConfig | None = None,
                              objects_path: str | os.PathLike | None = None) -> int:
    """Ask simulated volunteers about the subjects of ``subjects_path`` (truth from ``truth_path``) and write a
    classification export to ``out_path``. Returns the number of classifications.

    This is the volunteer model alone: the active-learning loop uses it to "label" newly selected galaxies
    offline. Use ``config.first_classification_id`` to keep ids distinct from earlier rounds. A crowd that
    clicks scene objects reads them from ``objects_path`` (default: objects.csv beside the truth, if any);
    without objects, bulge clickers mark the image centre and distractor clickers have nothing to click.
    The export is written atomically: a failure leaves an earlier file at ``out_path`` as it was.
    """
    config = config or SimulationConfig()
    check_export_target(out_path)
    truth = read_table(truth_path, required=("subject_id", "x", "y", "label"))
    subjects_raw = read_table(subjects_path, required=("subject_id",))
    subjects = read_subjects(subjects_path)
    objects = read_objects(objects_path, truth_path) if config.crowd.needs_objects else None
    if "peak_snr" not in truth.columns:
        truth = truth.assign(peak_snr=np.inf)
    truth = truth[truth["subject_id"].isin(subjects["subject_id"])]
    rng = np.random.default_rng(config.seed)
    crowd_rng = crowd_stream(config)
    n_vol = max(config.max_viewers * 3, int(len(subjects) * config.mean_viewers / 40))
    pop = make_population(rng, n_vol, config.volunteer_model, config.crowd, crowd_rng, config.scale)
    spread = truth.assign(r=np.hypot(truth["x"] - config.image_size / 2, truth["y"] - config.image_size / 2))
    scale = spread.groupby("subject_id")["r"].max() / 1.8
    info = pd.DataFrame({"subject_id": subjects["subject_id"]})
    info["galaxy_scale"] = info["subject_id"].map(scale).fillna(30.0 * config.scale).clip(lower=14 * config.scale)
    if objects is not None:
        objects = objects[objects["subject_id"].isin(subjects["subject_id"])]
        stars = objects[objects["kind"] == "star"].sort_values(["subject_id", "object_id"])
        by = {k: g[["x", "y"]].to_numpy().tolist() for k, g in stars.groupby("subject_id")}
        info["stars"] = [by.get(sid, []) for sid in info["subject_id"]]
    batch = simulate_clicks(rng, info, truth, pop, config, objects, crowd_rng)
    meta = subjects_raw.drop_duplicates("subject_id").set_index("subject_id")["metadata"] \
        if "metadata" in subjects_raw.columns else pd.Series(dtype=object)
    subject_data = {}
    for sid in subjects["subject_id"]:
        try:
            m = json.loads(meta.get(sid, "{}") or "{}")
        except (TypeError, json.JSONDecodeError):
            m = {}
        subject_data[int(sid)] = json.dumps({str(sid): {"retired": None, **m}}, separators=(",", ":"))
    export = classification_rows(batch, pop, subject_data, config, rng)
    write_export(export, out_path)
    return len(export)
