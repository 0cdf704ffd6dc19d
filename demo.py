"""``clumptool demo``: the whole pipeline on a built-in simulated project, as one plain function.

simulate -> aggregate (consensus labels from simulated volunteers, checked against the truth) -> train a small
detector on CPU -> evaluate it against the truth on held-out galaxies -> predict a clump catalogue ->
select-next-batch from an unlabelled pool and upload it to a local fake Zooniverse (started by the demo).

The project's galaxies are split three ways by subject id: ``labelled`` (volunteers classified them; the
detector trains on their consensus boxes), ``test`` (held out; scored against the truth) and ``pool``
(unlabelled; active learning picks from them). Each stage writes into its own folder under ``out``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.common.atomic import write_text_atomic
from clumptool.common.tables import write_table


@dataclass
class DemoConfig:
    """Sizes of the demo: small enough for a few minutes on 2 CPU cores."""

    galaxies: int = 300
    seed: int = 7
    sim_image_size: int = 200      # half the Clump Scout 400 px scale: everything 2x cheaper per clump
    test_fraction: float = 0.2
    pool_fraction: float = 0.2
    backbone: str = "resnet18"
    crop: int = 64                 # the central 64 px, where most clumps are ...
    image_size: int = 64           # ... at native resolution (no resampling of ~3 px clumps)
    epochs: int = 15               # fixed, not a wall-clock cap: the same seed gives the same detector anywhere
    batch_size: int = 4
    lr: float = 1e-3
    select_n: int = 12
    random_control: int = 4


@dataclass
class DemoResult:
    out_dir: Path
    figures: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def _ratio(value: float | None) -> str:
    """A completeness/purity/F1 for the log: undefined ratios (nothing to divide by) say so."""
    return "undefined" if value is None or value != value else f"{value:.3f}"


def split_subjects(subject_ids: list[int], test_fraction: float, pool_fraction: float,
                   seed: int) -> dict[str, list[int]]:
    """Labelled / test / pool split of the subjects, reproducible by seed."""
    rng = np.random.default_rng(seed)
    ids = np.array(sorted(subject_ids))
    rng.shuffle(ids)
    n_test = max(1, int(round(len(ids) * test_fraction)))
    n_pool = max(1, int(round(len(ids) * pool_fraction)))
    return {"test": sorted(ids[:n_test].tolist()), "pool": sorted(ids[n_test:n_test + n_pool].tolist()),
            "labelled": sorted(ids[n_test + n_pool:].tolist())}


def run_demo(out_dir: str | os.PathLike, galaxies: int = 300, seed: int = 7,
             log: Callable[[str], None] = print, config: DemoConfig | None = None) -> DemoResult:
    """Run every stage on a fresh simulated project in ``out_dir`` and report what it measured."""
    from clumptool.active_learning.select import UploadRequest, select_next_batch
    from clumptool.aggregation.evaluation import match_to_truth
    from clumptool.aggregation.pipeline import aggregate
    from clumptool.detection.evaluate import evaluate_model
    from clumptool.detection.predict import predict_catalogue
    from clumptool.detection.train import quiet_lightning, train
    from clumptool.simulation.config import SimulationConfig
    from clumptool.simulation.project import simulate_project
    from clumptool.testing.fake_panoptes import FakePanoptes

    cfg = config or DemoConfig(galaxies=galaxies, seed=seed)
    out = Path(out_dir)
    res = DemoResult(out_dir=out)
    clock = time.perf_counter

    # 1. a simulated project --------------------------------------------------------------------------
    t = clock()
    log(f"[1/6] simulate: {cfg.galaxies} galaxies ({cfg.sim_image_size} px), 20 volunteers each "
        f"-> {out / 'project'}")
    sim = simulate_project(out / "project", SimulationConfig(galaxies=cfg.galaxies, seed=cfg.seed,
                                                             image_size=cfg.sim_image_size))
    project = sim.out_dir
    res.seconds["simulate"] = clock() - t
    res.paths["project"] = str(project)
    res.paths["preview"] = str(project / "preview.png")
    log(f"      {sim.n_clumps} clumps injected, {sim.n_classifications} classifications "
        f"({res.seconds['simulate']:.0f} s)")

    subjects_all = pd.read_csv(project / "subjects.csv")
    split = split_subjects(subjects_all["subject_id"].tolist(), cfg.test_fraction, cfg.pool_fraction, cfg.seed)
    lists = out / "splits"
    for name, ids in split.items():
        write_table(subjects_all[subjects_all["subject_id"].isin(ids)], lists / f"{name}.csv", "csv")
    log(f"      split: {len(split['labelled'])} labelled, {len(split['test'])} held out for testing, "
        f"{len(split['pool'])} unlabelled pool")

    # 2. aggregate the volunteers' clicks of the labelled galaxies ------------------------------------
    t = clock()
    log(f"[2/6] aggregate: volunteer clicks -> consensus clumps -> {out / 'aggregated'}")
    cls = pd.read_csv(project / "classifications.csv", dtype=str, keep_default_na=False)
    labelled_export = out / "splits" / "labelled-classifications.csv"
    write_table(cls[cls["subject_ids"].astype(int).isin(split["labelled"])], labelled_export, "csv")
    agg = aggregate(labelled_export, project / "subjects.csv", out / "aggregated", images=project / "images")
    res.seconds["aggregate"] = clock() - t
    truth = pd.read_csv(project / "truth.csv")
    score = match_to_truth(agg.clumps[agg.clumps["accepted"]], truth[truth["subject_id"].isin(split["labelled"])],
                           radius=5.0)
    res.figures["consensus"] = score.as_dict()
    res.paths.update({f"aggregate_{k}": str(v) for k, v in agg.files.items()})
    log(f"      {len(agg.boxes)} training boxes; consensus vs truth: completeness {score.completeness:.3f}, "
        f"purity {score.purity:.3f}, labels right {score.label_accuracy:.3f} ({res.seconds['aggregate']:.0f} s)")

    # 3. train a small detector on the consensus boxes ------------------------------------------------
    t = clock()
    model_dir = out / "model"
    log(f"[3/6] train: {cfg.backbone} + FPN Faster R-CNN, random init, central {cfg.crop} px at "
        f"{cfg.image_size} px, {cfg.epochs} epochs on CPU (a few minutes) -> {model_dir}")
    boxes_path = Path(agg.files["boxes"])
    with quiet_lightning():
        trained = train(boxes_path, project / "images", model_dir, subjects=Path(agg.files["subjects"]),
                        backbone=cfg.backbone, image_size=cfg.image_size, crop=cfg.crop, epochs=cfg.epochs,
                        batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, devices=1, progress=False, patience=None)
    res.seconds["train"] = clock() - t
    res.paths["model"] = str(model_dir)
    res.paths["training_curves"] = str(model_dir / "training.png")
    log(f"      {trained.epochs} epochs, {trained.global_step} steps on {trained.n_train} galaxies "
        f"(validation {trained.n_val}); best validation F1 {trained.best_val_f1 or float('nan'):.3f} "
        f"({res.seconds['train']:.0f} s)")

    # 4. evaluate against the truth on held-out galaxies ------------------------------------------------
    t = clock()
    log(f"[4/6] evaluate: detections vs the simulation's truth on {len(split['test'])} held-out galaxies "
        f"-> {out / 'evaluation'}")
    report = evaluate_model(model_dir, project / "truth.csv", project / "images", out / "evaluation",
                            subjects=lists / "test.csv", progress=False)
    res.seconds["evaluate"] = clock() - t
    overall = report.metrics["scopes"]["overall"]
    at = overall["at_threshold"]
    threshold = float(report.metrics["threshold"])
    res.figures["detector"] = {"threshold": threshold, "threshold_source": report.metrics["threshold_source"],
                               "at_threshold": at, "best_on_this_set_optimistic": overall["best_f1"],
                               "map50": report.metrics.get("map", {}).get("per_class", {}).get("map_50")}
    res.paths["metrics"] = str(report.metrics_path)
    res.paths["pr_curve"] = str(report.plot_path)
    log(f"      at the model's operating threshold {threshold:.2f} (chosen on its validation galaxies): "
        f"completeness {_ratio(at['completeness'])}, purity {_ratio(at['purity'])}, F1 {_ratio(at['f1'])} "
        f"(a few CPU minutes from random init; bench/detection.py trains longer) "
        f"({res.seconds['evaluate']:.0f} s)")

    # 5. a clump catalogue ----------------------------------------------------------------------------
    t = clock()
    catalogue = out / "catalogue" / "catalogue.parquet"
    log(f"[5/6] predict: clump catalogue with sky positions for the held-out galaxies -> {catalogue}")
    pred = predict_catalogue(model_dir, project / "images", catalogue, subjects=lists / "test.csv",
                             progress=False)
    res.seconds["predict"] = clock() - t
    res.paths["catalogue"] = str(pred.catalogue_path)
    res.paths["predictions"] = str(pred.plot_path)
    log(f"      {pred.n_clumps} clumps in {pred.n_images} galaxies ({res.seconds['predict']:.0f} s)")

    # 6. active learning: select the next batch and upload it to a local fake Zooniverse -----------------
    t = clock()
    selection_dir = out / "selection"
    log(f"[6/6] select-next-batch: score the {len(split['pool'])} pool galaxies (8x test-time augmentation), "
        f"pick {cfg.select_n} + {cfg.random_control} random controls, upload to a local fake Zooniverse "
        f"-> {selection_dir}")
    demo_user, demo_password = "clumptool-demo", "demo-password-not-secret"
    # a fresh fake Zooniverse and a fresh upload ledger each run: the demo re-simulates the same galaxies,
    # and a ledger shared with an earlier demo run would rightly refuse to upload them again
    for stale in (out / "fake-zooniverse", out / "zooniverse-state"):
        shutil.rmtree(stale, ignore_errors=True)
    with FakePanoptes(users={demo_user: demo_password}, projects={1234: (5678,)},
                      state_dir=out / "fake-zooniverse") as fake:
        saved = {k: os.environ.get(k) for k in ("PANOPTES_USERNAME", "PANOPTES_PASSWORD")}
        os.environ["PANOPTES_USERNAME"], os.environ["PANOPTES_PASSWORD"] = demo_user, demo_password
        try:
            sel = select_next_batch(model_dir, lists / "pool.csv", selection_dir, images=project / "images",
                                    n=cfg.select_n, random_control=cfg.random_control, round_name="demo-round-1",
                                    state=out / "zooniverse-state",
                                    upload=UploadRequest(project_id=1234, workflow_id=5678, endpoint=fake.url),
                                    seed=cfg.seed, progress=False)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        n_on_server = len(fake.state.subjects)
    res.seconds["select"] = clock() - t
    res.paths.update({f"selection_{k}": str(v) for k, v in sel.files.items()})
    res.figures["selection"] = {"n": len(sel.selection), "scored_per_second": sel.rate,
                                "uploaded_ok": bool(sel.upload is not None and sel.upload.ok),
                                "subjects_on_fake_server": n_on_server}
    log(f"      scored {sel.n_scored} galaxies ({sel.rate:.1f}/s); {len(sel.selection)} selected; upload "
        f"{'complete' if sel.upload is not None and sel.upload.ok else 'INCOMPLETE'}: {n_on_server} subjects "
        f"on the fake server ({res.seconds['select']:.0f} s)")

    write_text_atomic(out / "demo-summary.json", json.dumps(
        {"figures": res.figures, "paths": res.paths, "seconds": res.seconds}, indent=2, default=str))
    files = sel.files
    log("")
    log("Where everything is:")
    for label, path in (
        ("simulated project, images, truth", res.paths["project"]),
        ("what the galaxies look like", res.paths["preview"]),
        ("consensus clumps, boxes, skills", out / "aggregated"),
        ("marks and clumps drawn", res.paths.get("aggregate_overview")),
        ("trained model (model.json + weights)", res.paths["model"]),
        ("training curves", res.paths["training_curves"]),
        ("completeness / purity curves", res.paths["pr_curve"]),
        ("metrics", res.paths["metrics"]),
        ("clump catalogue", res.paths["catalogue"]),
        ("detections drawn", res.paths["predictions"]),
        ("selected batch", files.get("selection")),
        ("Zooniverse manifest", files.get("manifest")),
        ("selection plot", files.get("figure")),
        ("upload ledger", files.get("ledger")),
        ("this summary", out / "demo-summary.json"),
    ):
        log(f"  {label:<38} {path}")
    return res
