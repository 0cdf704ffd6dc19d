"""``clumptool demo``: the whole pipeline on a built-in simulated project, as one plain function.

The steps follow the loop a project runs on Zooniverse (README, "The loop on a real project"), against a local
fake Zooniverse the demo starts (the real panoptes-client talks to it): simulate -> fetch-export (the
volunteers' classifications of the labelled galaxies, as Zooniverse would serve them) -> aggregate (consensus
labels, checked against the truth) -> retire the galaxies whose consensus is finished -> replay the export one
volunteer at a time to count the classifications the stopping rule would have saved -> train a small detector
on CPU -> evaluate it against the truth on held-out galaxies -> predict a clump catalogue -> select-next-batch
from an unlabelled pool and upload it, with the labelled galaxies the workflow retired unfinished sent back
(``--include-unfinished``) -> the fake Zooniverse's volunteers classify the uploaded subjects (the simulator's
classifications of those galaxies, under the new subject ids and in the uploaded images' pixels:
:mod:`clumptool.simulation.uploaded`; a sent-back galaxy gets a fresh simulated crowd, its first 20 having
classified it in round 1) -> fetch-export --incremental adds them to the local export, aggregate the merged
export (a sent-back galaxy's two subjects are one consensus) -> retire the newly finished galaxies (the ledger
keeps round 1's from being sent again). The loop is closed: the second round's consensus is checked against the
truth of the uploaded galaxies.

The project's galaxies are split three ways by subject id: ``labelled`` (volunteers classified them; the
detector trains on their consensus boxes), ``test`` (held out; scored against the truth) and ``pool``
(unlabelled; active learning picks from them). Each stage writes into its own folder under ``out``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clumptool.active_learning.exports import FetchOptions, fetch_exports
from clumptool.active_learning.retire import RetireOptions, retire_finished
from clumptool.aggregation.evaluation import match_to_truth
from clumptool.aggregation.pipeline import AggregationResult, aggregate
from clumptool.aggregation.replay import replay_export
from clumptool.common.atomic import write_text_atomic
from clumptool.common.tables import write_table
from clumptool.demo_options import DemoConfig
from clumptool.simulation.config import SimulationConfig
from clumptool.simulation.export_format import export_bytes
from clumptool.simulation.project import simulate_project
from clumptool.simulation.uploaded import UploadedSubject, classifications_of_uploaded
from clumptool.testing.fake_panoptes import FakePanoptes


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


DEMO_USER, DEMO_PASSWORD = "clumptool-demo", "demo-password-not-secret"


@contextlib.contextmanager
def panoptes_credentials(user: str, password: str) -> Iterator[None]:
    """``PANOPTES_USERNAME`` / ``PANOPTES_PASSWORD`` set for the fake server while the block runs, then restored
    (the commands take credentials from the environment only)."""
    keys = ("PANOPTES_USERNAME", "PANOPTES_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict(zip(keys, (user, password), strict=True)))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def replay_line(figures: dict) -> str:
    """The replay's saving as one sentence."""
    f = figures
    stalled = f" and stopped {f['stalled']} stalled ones" if f.get("stalled") else ""
    return (f"the stopping rule would have finished {f['finished']} of {f['galaxies']} galaxies after a mean of "
            f"{f['mean_classifications_when_finished']:.1f} classifications instead of "
            f"{f['mean_classifications_available']:.0f}{stalled}: {f['classifications_saved']:,} of "
            f"{f['classifications_available']:,} volunteer classifications saved ({f['factor']:.1f} x fewer)")


def run_demo(out_dir: str | os.PathLike, galaxies: int = 300, seed: int = 7,
             log: Callable[[str], None] = print, config: DemoConfig | None = None) -> DemoResult:
    """Run every stage on a fresh simulated project in ``out_dir`` and report what it measured."""
    cfg = config or DemoConfig(galaxies=galaxies, seed=seed)
    out = Path(out_dir)
    res = DemoResult(out_dir=out)
    # a fresh fake Zooniverse and fresh ledgers each run: the demo re-simulates the same galaxies, and a ledger
    # shared with an earlier demo run would rightly refuse to upload them again
    for stale in (out / "fake-zooniverse", out / "zooniverse-state"):
        shutil.rmtree(stale, ignore_errors=True)
    sim_config = SimulationConfig(galaxies=cfg.galaxies, seed=cfg.seed, image_size=cfg.sim_image_size)
    project_id, workflow_id = sim_config.project_id, sim_config.workflow_id
    split = _simulate(out, cfg, sim_config, res, log)
    project = Path(res.paths["project"])
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(FakePanoptes(users={DEMO_USER: DEMO_PASSWORD},
                                                projects={project_id: (workflow_id,)},
                                                state_dir=out / "fake-zooniverse"))
        stack.enter_context(panoptes_credentials(DEMO_USER, DEMO_PASSWORD))
        export = _fetch(out, project, split, fake, workflow_id, res, log)
        agg = _aggregate(out, project, split, export, res, log)
        _retire(out, fake, workflow_id, Path(agg.files["subjects"]), len(split["labelled"]), res, log)
        _replay(out, export, res, log)
        model_dir = _train(out, cfg, project, agg, res, log)
        _evaluate(out, project, model_dir, split, res, log)
        _predict(out, project, model_dir, res, log)
        sel = _select(out, cfg, project, model_dir, split, fake, project_id, workflow_id, res, log)
        agg2, uploaded = _fetch_round_2(out, cfg, project, split, fake, workflow_id, res, log)
        _retire_round_2(out, fake, workflow_id, agg2, uploaded, res, log)

    write_text_atomic(out / "demo-summary.json", json.dumps(
        {"figures": res.figures, "paths": res.paths, "seconds": res.seconds}, indent=2, default=str))
    files = sel.files
    log("")
    log("Where everything is:")
    for label, path in (
        ("simulated project, images, truth", res.paths["project"]),
        ("what the galaxies look like", res.paths["preview"]),
        ("export fetched (round 1, + round 2 merged)", res.paths["export"]),
        ("consensus clumps, boxes, skills", out / "aggregated"),
        ("marks and clumps drawn", res.paths.get("aggregate_overview")),
        ("finished galaxies (is_finished, why)", res.paths.get("aggregate_subjects")),
        ("replay: classifications per galaxy", res.paths["replay"]),
        ("trained model (model.json + weights)", res.paths["model"]),
        ("training curves", res.paths["training_curves"]),
        ("completeness / purity curves", res.paths["pr_curve"]),
        ("metrics", res.paths["metrics"]),
        ("clump catalogue", res.paths["catalogue"]),
        ("detections drawn", res.paths["predictions"]),
        ("selected batch", files.get("selection")),
        ("Zooniverse manifest", files.get("manifest")),
        ("selection plot", files.get("figure")),
        ("round 2: consensus, finished galaxies", res.paths["aggregate_round_2"]),
        ("upload and retirement ledger", res.paths["ledger"]),
        ("the fake Zooniverse's state", out / "fake-zooniverse"),
        ("this summary", out / "demo-summary.json"),
    ):
        log(f"  {label:<40} {path}")
    log("")
    for line in closing_lines(res.figures):
        log(line)
    return res


def _so_far(per_galaxy: int | None) -> str:
    return "every simulated classification of each" if per_galaxy is None else f"{per_galaxy} classifications each"


def closing_lines(figures: dict) -> list[str]:
    """The closing summary: the second round's consensus against the truth, its retirements, and the replay's
    saving."""
    r2, ret = figures["round_2"], figures["retire_round_2"]
    new, done = r2["consensus_new"], r2["consensus_new_finished"]
    return [
        f"Round 2 (the loop closed): {r2['galaxies']} uploaded galaxies came back under their new subject ids with "
        f"{r2['classifications']} classifications ({_so_far(r2['per_galaxy'])}); their consensus against the "
        f"truth: completeness {_ratio(new['completeness'])}, purity {_ratio(new['purity'])}, labels right "
        f"{_ratio(new['label_accuracy'])}; {r2['finished_new']} finished, {r2['finished_new_right']} of them with "
        f"exactly the true clumps (completeness {_ratio(done['completeness'])}, purity {_ratio(done['purity'])})."
        + (f" Of them, {r2['sent_back']} were labelled galaxies the workflow retired unfinished, sent back and "
           f"aggregated with their round-1 classifications as one consensus: completeness "
           f"{_ratio(r2['consensus_sent_back']['completeness'])}, purity {_ratio(r2['consensus_sent_back']['purity'])}, "
           f"{r2['sent_back_finished']} finished." if r2.get("sent_back") else ""),
        f"Retired in round 2: {ret['retired_now']} ({ret['retired_new']} new galaxies, {ret['retired_labelled']} "
        f"labelled ones finished by the refit); the {ret['already_retired']} retired in round 1 were not sent again.",
        f"Volunteer time: {replay_line(figures['replay'])}.",
    ]


STEPS = 11
ROUND_1 = "demo-round-1"
_clock = time.perf_counter


def _step(n: int, text: str, log: Callable[[str], None]) -> float:
    log(f"[{n}/{STEPS}] {text}")
    return _clock()


def _simulate(out: Path, cfg: DemoConfig, sim_config, res: DemoResult, log) -> dict[str, list[int]]:
    """1. a simulated project, split into labelled / test / pool galaxies."""
    t = _step(1, f"simulate: {cfg.galaxies} galaxies ({cfg.sim_image_size} px), 20 volunteers each "
                 f"-> {out / 'project'}", log)
    sim = simulate_project(out / "project", sim_config)
    project = sim.out_dir
    res.seconds["simulate"] = _clock() - t
    res.paths["project"] = str(project)
    res.paths["preview"] = str(project / "preview.png")
    log(f"      {sim.n_clumps} clumps injected, {sim.n_classifications} classifications "
        f"({res.seconds['simulate']:.0f} s)")
    subjects_all = pd.read_csv(project / "subjects.csv")
    split = split_subjects(subjects_all["subject_id"].tolist(), cfg.test_fraction, cfg.pool_fraction, cfg.seed)
    for name, ids in split.items():
        write_table(subjects_all[subjects_all["subject_id"].isin(ids)], out / "splits" / f"{name}.csv", "csv")
    log(f"      split: {len(split['labelled'])} labelled, {len(split['test'])} held out for testing, "
        f"{len(split['pool'])} unlabelled pool")
    return split


def _fetch(out: Path, project: Path, split: dict, fake: FakePanoptes, workflow_id: int, res: DemoResult,
           log) -> Path:
    """2. the fake Zooniverse holds the labelled galaxies and their classification export; fetch it."""
    target = out / "zooniverse-export"
    t = _step(2, f"fetch-export: the volunteers' classifications of the {len(split['labelled'])} labelled galaxies "
                 f"from a local fake Zooniverse ({fake.url}, workflow {workflow_id}) -> {target}", log)
    # what Zooniverse holds after the volunteers worked: the galaxies in the workflow, and their export
    fake.serve_classification_export(workflow_id, export_bytes(_labelled_export(project, split)),
                                     name="demo galaxies")
    report = fetch_exports(target, FetchOptions(workflow_id=workflow_id, endpoint=fake.url), progress=False)
    res.seconds["fetch"] = _clock() - t
    info = report.files["classifications.csv"]
    res.paths["export"] = str(target / "classifications.csv")
    res.figures["fetch"] = {"classifications": info["rows"], "bytes": info["bytes"]}
    log(f"      {info['rows']:,} classifications, {info['bytes'] / 1e6:.1f} MB, through panoptes-client's export "
        f"API ({res.seconds['fetch']:.0f} s)")
    return target / "classifications.csv"


def _simulated_export(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / "classifications.csv", dtype=str, keep_default_na=False)


def _labelled_export(project: Path, split: dict) -> pd.DataFrame:
    """The simulated volunteers' classifications of the labelled galaxies (round 1 on the fake Zooniverse)."""
    cls = _simulated_export(project)
    return cls[cls["subject_ids"].astype("int64").isin(split["labelled"])]


def _aggregate(out: Path, project: Path, split: dict, export: Path, res: DemoResult, log):
    """3. the fetched export -> consensus clumps, checked against the simulation's truth."""
    t = _step(3, f"aggregate: the fetched clicks -> consensus clumps -> {out / 'aggregated'}", log)
    agg = aggregate(export, project / "subjects.csv", out / "aggregated", images=project / "images")
    res.seconds["aggregate"] = _clock() - t
    truth = pd.read_csv(project / "truth.csv")
    score = match_to_truth(agg.clumps[agg.clumps["accepted"]], truth[truth["subject_id"].isin(split["labelled"])],
                           radius=5.0)
    res.figures["consensus"] = score.as_dict()
    res.paths.update({f"aggregate_{k}": str(v) for k, v in agg.files.items()})
    log(f"      {len(agg.boxes)} training boxes; consensus vs truth: completeness {score.completeness:.3f}, "
        f"purity {score.purity:.3f}, labels right {score.label_accuracy:.3f} ({res.seconds['aggregate']:.0f} s)")
    return agg


def _retire(out: Path, fake: FakePanoptes, workflow_id: int, subjects: Path, n_labelled: int, res: DemoResult,
            log) -> None:
    """4. retire the galaxies whose consensus is finished, on the fake Zooniverse, with a ledger."""
    state = out / "zooniverse-state"
    t = _step(4, f"retire: the galaxies whose consensus is finished stop costing volunteers (ledger in {state})",
              log)
    report = retire_finished(subjects, RetireOptions(workflow_id=workflow_id, endpoint=fake.url, state=state),
                             progress=False)
    on_server = fake.state.retired(workflow_id)
    res.seconds["retire"] = _clock() - t
    res.paths["ledger"] = report.ledger
    res.figures["retire"] = {"finished": report.finished, "unfinished": report.unfinished,
                             "retired_now": report.retired_now, "unknown_to_server": len(report.unknown),
                             "retired_on_fake_server": len(on_server)}
    reasons = sorted(set(on_server.values()))
    log(f"      {report.retired_now} of the {n_labelled} labelled galaxies retired (their consensus is finished; "
        f"the other {n_labelled - report.finished} stay open for more volunteers); the fake server now lists "
        f"{len(on_server)} retired (reason {', '.join(reasons) or '-'}) ({res.seconds['retire']:.0f} s)")


def _replay(out: Path, export: Path, res: DemoResult, log) -> None:
    """5. replay the export one volunteer at a time: when would the rule have finished each galaxy?"""
    t = _step(5, "replay: volunteers arrive one by one in the export's order; the stopping rule retires each "
                 "galaxy as soon as its consensus is finished", log)
    cls = pd.read_csv(export, dtype=str, keep_default_na=False)
    replay = replay_export(cls, out / "splits" / "labelled.csv")
    res.seconds["replay"] = _clock() - t
    res.figures["replay"] = replay.as_dict()
    res.paths["replay"] = str(out / "replay.csv")
    write_table(replay.table(), out / "replay.csv", "csv")
    log(f"      {replay_line(res.figures['replay'])} ({res.seconds['replay']:.0f} s)")


def _train(out: Path, cfg: DemoConfig, project: Path, agg, res: DemoResult, log) -> Path:
    """6. a small detector trained on the consensus boxes."""
    from clumptool.detection.train import quiet_lightning, train

    model_dir = out / "model"
    t = _step(6, f"train: {cfg.backbone} + FPN Faster R-CNN, random init, central {cfg.crop} px at "
                 f"{cfg.image_size} px, {cfg.epochs} epochs on CPU (a few minutes) -> {model_dir}", log)
    with quiet_lightning():
        trained = train(Path(agg.files["boxes"]), project / "images", model_dir, subjects=Path(agg.files["subjects"]),
                        backbone=cfg.backbone, image_size=cfg.image_size, crop=cfg.crop, epochs=cfg.epochs,
                        batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, devices=1, progress=False, patience=None)
    res.seconds["train"] = _clock() - t
    res.paths["model"] = str(model_dir)
    res.paths["training_curves"] = str(model_dir / "training.png")
    log(f"      {trained.epochs} epochs, {trained.global_step} steps on {trained.n_train} galaxies "
        f"(validation {trained.n_val}); best validation F1 {trained.best_val_f1 or float('nan'):.3f} "
        f"({res.seconds['train']:.0f} s)")
    return model_dir


def _evaluate(out: Path, project: Path, model_dir: Path, split: dict, res: DemoResult, log) -> None:
    """7. the detector against the truth on the held-out galaxies."""
    from clumptool.detection.evaluate import evaluate_model

    t = _step(7, f"evaluate: detections vs the simulation's truth on {len(split['test'])} held-out galaxies "
                 f"-> {out / 'evaluation'}", log)
    report = evaluate_model(model_dir, project / "truth.csv", project / "images", out / "evaluation",
                            subjects=out / "splits" / "test.csv", progress=False)
    res.seconds["evaluate"] = _clock() - t
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


def _predict(out: Path, project: Path, model_dir: Path, res: DemoResult, log) -> None:
    """8. a clump catalogue of the held-out galaxies."""
    from clumptool.detection.predict import predict_catalogue

    catalogue = out / "catalogue" / "catalogue.parquet"
    t = _step(8, f"predict: clump catalogue with sky positions for the held-out galaxies -> {catalogue}", log)
    pred = predict_catalogue(model_dir, project / "images", catalogue, subjects=out / "splits" / "test.csv",
                             progress=False)
    res.seconds["predict"] = _clock() - t
    res.paths["catalogue"] = str(pred.catalogue_path)
    res.paths["predictions"] = str(pred.plot_path)
    log(f"      {pred.n_clumps} clumps in {pred.n_images} galaxies ({res.seconds['predict']:.0f} s)")


def _select(out: Path, cfg: DemoConfig, project: Path, model_dir: Path, split: dict, fake: FakePanoptes,
            project_id: int, workflow_id: int, res: DemoResult, log):
    """9. active learning: the next batch from the unlabelled pool, uploaded to the same fake Zooniverse."""
    from clumptool.active_learning.select import UploadRequest, select_next_batch

    selection_dir = out / "selection"
    t = _step(9, f"select-next-batch: score the {len(split['pool'])} pool galaxies (8x test-time augmentation), "
                 f"pick {cfg.select_n} + {cfg.random_control} random controls, send back the labelled galaxies "
                 f"retired unfinished, upload to the fake Zooniverse "
                 f"-> {selection_dir}", log)
    before = len(fake.state.subjects)
    # the labelled galaxies are in the pool table too, so the unfinished ones can be sent back (their images); as
    # --labelled they are never scored
    pool = out / "splits" / "pool-and-labelled.csv"
    write_table(pd.concat([pd.read_csv(out / "splits" / f"{name}.csv") for name in ("pool", "labelled")]), pool,
                "csv")
    sel = select_next_batch(model_dir, pool, selection_dir, images=project / "images",
                            n=cfg.select_n, random_control=cfg.random_control, round_name=ROUND_1,
                            labelled=[out / "splits" / "labelled.csv"],
                            include_unfinished=out / "aggregated" / "subjects.parquet",
                            state=out / "zooniverse-state",
                            upload=UploadRequest(project_id=project_id, workflow_id=workflow_id, endpoint=fake.url),
                            seed=cfg.seed, progress=False)
    n_new = len(fake.state.subjects) - before
    res.seconds["select"] = _clock() - t
    res.paths.update({f"selection_{k}": str(v) for k, v in sel.files.items()})
    ok = bool(sel.upload is not None and sel.upload.ok)
    n_back = int((sel.selection["strategy"] == "unfinished").sum())
    res.figures["selection"] = {"n": len(sel.selection), "scored_per_second": sel.rate, "uploaded_ok": ok,
                                "subjects_uploaded_to_fake_server": n_new, "unfinished_sent_back": n_back}
    log(f"      scored {sel.n_scored} galaxies ({sel.rate:.1f}/s); {len(sel.selection)} selected ({n_back} labelled "
        f"galaxies retired unfinished, sent back); upload "
        f"{'complete' if ok else 'INCOMPLETE'}: {n_new} new subjects on the fake server "
        f"({res.seconds['select']:.0f} s)")
    return sel


def uploaded_subjects(fake: FakePanoptes, round_name: str) -> list[UploadedSubject]:
    """The subjects an upload created in the round's subject set on the fake Zooniverse: their ids, the
    galaxy each shows (``#galaxy_id``), their metadata and the size of the image stored on the server.
    Subjects whose image never arrived are left out (volunteers cannot see them)."""
    state = fake.state
    with state.lock:
        ids = [sid for subject_set in state.sets_named(round_name) for sid in state.subject_ids_in_set(subject_set["id"])]
        found = []
        for sid in ids:
            meta = dict(state.subjects[sid]["metadata"])
            image = state.media(sid)[0]
            if image is None:
                continue
            with Image.open(io.BytesIO(image)) as im:
                width, height = im.size
            found.append(UploadedSubject(subject_id=int(sid), galaxy_id=int(meta["#galaxy_id"]), width=width,
                                         height=height, metadata=meta))
    return sorted(found, key=lambda u: u.subject_id)


def _consensus_on(clumps: pd.DataFrame, truth: pd.DataFrame, galaxy_of: dict[int, int]) -> dict:
    """Accepted consensus clumps of the subjects ``galaxy_of`` names against their galaxies' true clumps."""
    found = clumps[clumps["accepted"] & clumps["subject_id"].isin(galaxy_of)]
    subject_of = {g: s for s, g in galaxy_of.items()}
    true = truth[truth["subject_id"].isin(subject_of)]
    true = true.assign(subject_id=true["subject_id"].map(subject_of))
    return match_to_truth(found, true, radius=5.0).as_dict()


def _galaxies_right(clumps: pd.DataFrame, truth: pd.DataFrame, galaxy_of: dict[int, int]) -> int:
    """How many of the subjects have a consensus with every true clump of their galaxy and no other (defined
    for galaxies without clumps too, where completeness and purity are not)."""
    scores = (_consensus_on(clumps, truth, {sid: gid}) for sid, gid in galaxy_of.items())
    return sum(s["n_matched"] == s["n_truth"] == s["n_found"] for s in scores)


def _fetch_round_2(out: Path, cfg: DemoConfig, project: Path, split: dict, fake: FakePanoptes, workflow_id: int,
                   res: DemoResult, log) -> tuple[AggregationResult, list[UploadedSubject]]:
    """10. the volunteers classify the uploaded subjects; fetch-export --incremental; aggregate everything."""
    target = out / "zooniverse-export"
    uploaded = uploaded_subjects(fake, ROUND_1)
    t = _step(10, f"fetch-export --incremental: volunteers on the fake Zooniverse give the {len(uploaded)} uploaded "
                  f"subjects {_so_far(cfg.round2_volunteers)}; the new ones join {target}; aggregate the merged export "
                  f"-> {out / 'aggregated-round-2'}", log)
    labelled = set(split["labelled"])
    fresh, back = ([u for u in uploaded if (u.galaxy_id in labelled) == sent] for sent in (False, True))
    new = classifications_of_uploaded(_simulated_export(project), fresh, first=cfg.round2_volunteers)
    if back:  # their first 20 classified them in round 1: a new crowd (new volunteers, new classification ids)
        more = _new_crowd(out, project, cfg, [u.galaxy_id for u in back], new)
        new = pd.concat([new, classifications_of_uploaded(more, back, first=cfg.round2_volunteers)],
                        ignore_index=True)
    # the workflow's export now holds round 1 and the new classifications (under the new subject ids)
    unknown = fake.serve_classification_export(
        workflow_id, export_bytes(pd.concat([_labelled_export(project, split), new], ignore_index=True)))
    before = res.figures["fetch"]["classifications"]
    report = fetch_exports(target, FetchOptions(workflow_id=workflow_id, endpoint=fake.url, incremental=True),
                           progress=False)
    merged = pd.read_csv(target / "classifications.csv", dtype=str, keep_default_na=False)
    duplicates = int(merged["classification_id"].duplicated().sum())
    galaxy_of = {u.subject_id: u.galaxy_id for u in uploaded}
    back_of = {u.subject_id: u.galaxy_id for u in back}
    agg = aggregate(target / "classifications.csv", None, out / "aggregated-round-2")
    truth = pd.read_csv(project / "truth.csv")
    subjects = agg.subjects.set_index("subject_id")
    finished_new = [s for s in galaxy_of if s in subjects.index and bool(subjects.at[s, "is_finished"])]
    res.seconds["round_2"] = _clock() - t
    res.paths["aggregate_round_2"] = str(out / "aggregated-round-2")
    res.figures["round_2"] = {
        "galaxies": len(uploaded), "subject_ids": sorted(galaxy_of), "galaxy_ids": sorted(galaxy_of.values()),
        "classifications": len(new), "per_galaxy": cfg.round2_volunteers, "served_subjects_unknown_to_server": len(unknown),
        "fetched_before": before, "previous_classifications": report.previous_classifications,
        "new_classifications": report.new_classifications, "merged_classifications": len(merged),
        "duplicate_classification_ids": duplicates, "finished_new": len(finished_new),
        "consensus_new": _consensus_on(agg.clumps, truth, galaxy_of),
        "consensus_new_finished": _consensus_on(agg.clumps, truth, {s: galaxy_of[s] for s in finished_new}),
        "finished_new_right": _galaxies_right(agg.clumps, truth, {s: galaxy_of[s] for s in finished_new}),
        "sent_back": len(back), "consensus_sent_back": _consensus_on(agg.clumps, truth, back_of),
        "sent_back_merged": int(agg.summary["export"]["subjects_merged_into_their_galaxy"]),
        "sent_back_finished": sum(s in finished_new for s in back_of),
    }
    f = res.figures["round_2"]
    log(f"      {f['new_classifications']:,} new classifications added to the {f['previous_classifications']:,} "
        f"already fetched -> {f['merged_classifications']:,} ({duplicates} duplicated ids); "
        f"{len(agg.subjects)} galaxies aggregated ({res.seconds['round_2']:.0f} s)")
    c = f["consensus_new"]
    log(f"      the {len(uploaded)} new subjects vs their galaxies' truth: completeness {_ratio(c['completeness'])}, "
        f"purity {_ratio(c['purity'])}, labels right {_ratio(c['label_accuracy'])}; {len(finished_new)} finished, "
        f"{f['finished_new_right']} of them with exactly the true clumps")
    if back:
        b = f["consensus_sent_back"]
        log(f"      the {len(back)} galaxies sent back: their round-1 subjects merged with the new ones "
            f"({f['sent_back_merged']} merged), one consensus of 20 + {cfg.round2_volunteers or 'all'} volunteers each: "
            f"completeness {_ratio(b['completeness'])}, purity {_ratio(b['purity'])}; {f['sent_back_finished']} "
            "finished")
    return agg, uploaded


def _new_crowd(out: Path, project: Path, cfg: DemoConfig, galaxies: list[int], taken: pd.DataFrame) -> pd.DataFrame:
    """A fresh simulated crowd's classifications of ``galaxies`` (their round-1 volunteers are used up): other
    volunteers (their names and ids kept apart from round 1's), classification ids after every earlier one."""
    from clumptool.simulation.project import simulate_volunteer_export

    subjects = pd.read_csv(project / "subjects.csv")
    subset = out / "round-2-crowd" / "subjects.csv"
    write_table(subjects[subjects["subject_id"].isin(galaxies)], subset, "csv")
    first_id = max(int(_simulated_export(project)["classification_id"].astype("int64").max()),
                   int(taken["classification_id"].astype("int64").max()) if len(taken) else 0) + 1
    crowd = SimulationConfig(galaxies=cfg.galaxies, seed=cfg.seed + 1, image_size=cfg.sim_image_size,
                             first_classification_id=first_id)
    target = out / "round-2-crowd" / "classifications.csv"
    simulate_volunteer_export(project / "truth.csv", subset, target, crowd)
    more = pd.read_csv(target, dtype=str, keep_default_na=False)
    more["user_name"] = "round-2-" + more["user_name"]
    more["user_id"] = [str(10_000_000 + int(u)) if u.isdigit() else u for u in more["user_id"]]
    return more


def _retire_round_2(out: Path, fake: FakePanoptes, workflow_id: int, agg: AggregationResult,
                    uploaded: list[UploadedSubject], res: DemoResult, log) -> None:
    """11. retire what round 2 finished; the ledger keeps round 1's retirements from being sent again."""
    state = out / "zooniverse-state"
    t = _step(11, f"retire: the newly finished galaxies (ledger in {state} already holds round 1's)", log)
    sent_before = len(fake.state.requests_to("POST", r"/retired_subjects$"))
    round_1 = set(fake.state.retired(workflow_id))
    report = retire_finished(Path(agg.files["subjects"]),
                             RetireOptions(workflow_id=workflow_id, endpoint=fake.url, state=state), progress=False)
    sent = [str(i) for r in fake.state.requests_to("POST", r"/retired_subjects$")[sent_before:]
            for i in (r["body"] or {}).get("subject_ids") or []]
    new_ids = {str(u.subject_id) for u in uploaded}
    retired_now = set(fake.state.retired(workflow_id)) - round_1
    res.seconds["retire_round_2"] = _clock() - t
    res.figures["retire_round_2"] = {
        "finished": report.finished, "unfinished": report.unfinished, "already_retired": report.already_retired,
        "retired_now": report.retired_now, "retired_new": len(retired_now & new_ids),
        "retired_labelled": len(retired_now - new_ids), "round_1_sent_again": len(set(sent) & round_1),
        "no_longer_finished": report.no_longer_finished, "unknown_to_server": len(report.unknown),
        "new_left_open": len(new_ids - retired_now)}
    f = res.figures["retire_round_2"]
    log(f"      {f['retired_now']} retired now ({f['retired_new']} of the {len(new_ids)} new subjects, "
        f"{f['retired_labelled']} labelled galaxies); {f['already_retired']} retired in round 1 were not sent "
        f"again ({f['round_1_sent_again']} re-sent); {f['new_left_open']} new subjects stay open for more "
        f"volunteers ({res.seconds['retire_round_2']:.0f} s)")
