"""``clumptool simulate`` as a plain function: a whole synthetic Clump Scout project on disk, with its truth.

Reproducible: every random choice comes from one seed (one child generator per galaxy for the images, so the
bytes do not depend on how many processes render them). Everything is built in a temporary folder beside the
output and moved into place at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.common.errors import ClumptoolError
from clumptool.common.wcs import pixel_to_sky
from clumptool.simulation.config import SimulationConfig
from clumptool.simulation.export_format import classification_rows, workflow_definition, write_export
from clumptool.simulation.galaxy import Scene, draw_scene, render_bands, to_rgb
from clumptool.simulation.volunteers import make_population, simulate_clicks

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


def subjects_table(galaxies: list[Galaxy], config: SimulationConfig) -> tuple[pd.DataFrame, dict[int, str]]:
    """The subjects export rows, and each subject's ``subject_data`` JSON for the classification export."""
    rows, subject_data = [], {}
    for g in galaxies:
        arcsec_side = g.scene.pixel_scale * config.image_size
        meta = {"ra": round(g.ra, 6), "dec": round(g.dec, 6), "#local_id": f"SIM{g.subject_id}",
                "#fwhmImagePix": round(g.scene.fwhm_px, 4), "#arcsecPerSide": round(arcsec_side, 4),
                "#fwhm": round(g.seeing, 3), "#redshift": round(g.redshift, 4), "origin": "simulated"}
        rows.append({
            "subject_id": g.subject_id, "project_id": config.project_id, "workflow_id": config.workflow_id,
            "subject_set_id": config.subject_set_id, "metadata": json.dumps(meta, separators=(",", ":")),
            "locations": json.dumps({"0": f"https://panoptes-uploads.zooniverse.org/subject_location/sim-{g.subject_id}.png"}),
            "classifications_count": config.volunteers_per_subject, "retired_at": "", "retirement_reason": "",
            "created_at": "2019-10-31 12:00:00 UTC", "updated_at": "2019-10-31 12:00:00 UTC",
        })
        subject_data[g.subject_id] = json.dumps({str(g.subject_id): {"retired": None, **meta}}, separators=(",", ":"))
    return pd.DataFrame(rows, columns=list(SUBJECT_COLUMNS)), subject_data


def _render_png(args: tuple[Scene, np.random.SeedSequence, str]) -> None:
    from PIL import Image

    scene, seed, path = args
    rgb = to_rgb(render_bands(scene, np.random.default_rng(seed)))
    Image.fromarray(rgb).save(path, format="PNG", compress_level=3)


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
    with ProcessPoolExecutor(max_workers=n) as pool:
        for _ in pool.map(_render_png, jobs, chunksize=8):
            if progress:
                progress(1)


def simulate_project(out_dir: str | os.PathLike, config: SimulationConfig | None = None,
                     progress: Callable[[int], None] | None = None) -> SimulationResult:
    """Generate a complete simulated project in ``out_dir`` (see the module docstring for what is written)."""
    config = config or SimulationConfig()
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ClumptoolError(f"{out}: exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    galaxies = draw_galaxies(config, rng)
    truth = truth_table(galaxies, config.image_size)
    subjects, subject_data = subjects_table(galaxies, config)
    n_vol = max(config.volunteers_per_subject * 3, int(config.galaxies * config.volunteers_per_subject / 40))
    pop = make_population(rng, n_vol, config.volunteer_model)
    sub_info = pd.DataFrame({
        "subject_id": [g.subject_id for g in galaxies],
        "galaxy_scale": [g.scene.disc_scale for g in galaxies],
        "stars": [g.scene.stars[:, :2].tolist() for g in galaxies],
    })
    batch = simulate_clicks(rng, sub_info, truth, pop, config)
    export = classification_rows(batch, pop, subject_data, config, rng)
    counts = batch.classifications.groupby("volunteer").size()
    vt = pop.table.drop(columns=["activity", "user_ip"]).assign(
        n_classifications=pop.table.index.map(counts).fillna(0).astype(int))

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = {}
        truth.to_csv(tmp / "truth.csv", index=False)
        subjects.to_csv(tmp / "subjects.csv", index=False)
        write_export(export, tmp / "classifications.csv")
        vt.to_csv(tmp / "volunteers_truth.csv", index=False)
        (tmp / "workflow.json").write_text(json.dumps(workflow_definition(config), indent=2))
        if config.images:
            render_images(galaxies, tmp / "images", config.workers, progress)
            from clumptool.simulation.preview import preview_grid

            preview_grid(tmp / "images", truth, tmp / "preview.png")
        (tmp / "README.txt").write_text(readme_text(config, galaxies, truth, export, pop))
        out.mkdir(parents=True, exist_ok=True)
        for item in sorted(tmp.iterdir()):
            dest = out / item.name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(item, dest)
            files[item.stem] = str(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
        "  workflow.json            the workflow's tasks and strings",
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


def simulate_volunteer_export(truth_path: str | os.PathLike, subjects_path: str | os.PathLike,
                              out_path: str | os.PathLike, config: SimulationConfig | None = None) -> int:
    """Ask simulated volunteers about the subjects of ``subjects_path`` (truth from ``truth_path``) and write a
    classification export to ``out_path``. Returns the number of classifications.

    This is the volunteer model alone: the active-learning loop uses it to "label" newly selected galaxies
    offline. Use ``config.first_classification_id`` to keep ids distinct from earlier rounds.
    """
    from clumptool.aggregation.subjects import read_subjects
    from clumptool.common.tables import read_table

    config = config or SimulationConfig()
    truth = read_table(truth_path, required=("subject_id", "x", "y", "label"))
    subjects_raw = read_table(subjects_path, required=("subject_id",))
    subjects = read_subjects(subjects_path)
    if "peak_snr" not in truth.columns:
        truth = truth.assign(peak_snr=np.inf)
    truth = truth[truth["subject_id"].isin(subjects["subject_id"])]
    rng = np.random.default_rng(config.seed)
    n_vol = max(config.volunteers_per_subject * 3, int(len(subjects) * config.volunteers_per_subject / 40))
    pop = make_population(rng, n_vol, config.volunteer_model)
    spread = truth.assign(r=np.hypot(truth["x"] - config.image_size / 2, truth["y"] - config.image_size / 2))
    scale = spread.groupby("subject_id")["r"].max() / 1.8
    info = pd.DataFrame({"subject_id": subjects["subject_id"]})
    info["galaxy_scale"] = info["subject_id"].map(scale).fillna(30.0 * config.scale).clip(lower=14 * config.scale)
    batch = simulate_clicks(rng, info, truth, pop, config)
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
