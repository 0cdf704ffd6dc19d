"""The offline active-learning cycle on a simulated project: train -> select -> volunteers label -> aggregate.

Galaxy Zoo's pattern (Walmsley et al. 2020): a simulated *oracle* stands in for Zooniverse. Here the
oracle is ``simulate_volunteer_export`` run once over the whole pool, so a galaxy gets the same simulated
volunteer clicks whichever strategy picks it (strategies differ only in *which* galaxies they ask about).
Labels are the consensus of ``clumptool.aggregation.pipeline.aggregate`` over every classification of the
labelled galaxies so far (re-aggregated each round, as a real project would). Models are trained with
``clumptool.detection.train.train``: the first round from scratch, later rounds continue the previous
round's checkpoint for a few more epochs on the enlarged set (as GZ retrained nightly), so all strategies get
the same training schedule. Quality is completeness / purity / F1 against the simulation's truth on a fixed
held-out test set.

Cost is counted in galaxies and in volunteer classifications, under a *labelling policy*: ``fixed20`` gives a
labelled galaxy every classification the oracle made of it (Clump Scout's 20), ``lean`` only those before the
stopping rule (``clumptool.aggregation.stopping``, ``--retire-below``, ``--min-classifications``) called it
finished, volunteers arriving one by one in the export's order (``bench/lean.py``'s ``adaptive_stops``). The
lean cut is decided once for the whole pool (skills learned on the pool's export), so a galaxy costs the same
whichever strategy picks it and when; it keeps the classification that finished the galaxy. ``lean-detector``
adds the detector as one more annotator of the stopping rule (``aggregate --detections``): the initial
galaxies (no model yet) are cut as ``lean``; the galaxies selected in a later round are cut by the rule run
over the pool's export with the catalogue of the model that selected them (trained only on earlier rounds'
galaxies, never on these) as the detector, so a galaxy's cost depends on the run and the round that labelled
it, and is fixed from then on.
``bench/active_learning.py`` runs it. An experiment, not part of the product: it lives in ``bench/`` so
``clumptool.active_learning`` never imports ``clumptool.simulation``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from lean import CAP, adaptive_stops, consensus_scores, queue_rank, rule_finished

from clumptool.aggregation.pipeline import AggregateOptions
from clumptool.aggregation.stopping import DEFAULT_MIN_CLASSIFICATIONS, DEFAULT_RETIRE_BELOW
from clumptool.common.atomic import atomic_path, write_text_atomic
from clumptool.common.errors import ClumptoolError
from clumptool.common.figures import new_figure, save_png
from clumptool.common.ids import normalise_subject_ids

POLICIES = ("fixed20", "lean", "lean-detector")
#: the lowest detection score in the catalogue the detector annotates with (as ``bench/lean.py``'s predict)
DETECTOR_MIN_SCORE = 0.05


@dataclass
class LoopConfig:
    """Sizes and knobs of an offline active-learning experiment."""

    galaxies: int = 400             # simulated galaxies (pool + test)
    test: int = 100                 # fixed held-out test galaxies
    initial: int = 40               # randomly labelled galaxies before the first selection
    per_round: int = 40             # galaxies labelled per round
    rounds: int = 4                 # selection rounds after the initial model
    epochs_initial: int = 15        # epochs of the first model (from scratch)
    epochs_per_round: int = 4       # further epochs each round (continuing the previous checkpoint)
    sim_image_size: int = 200       # simulated image side (400 = Clump Scout; 200 halves everything)
    crop: int | None = 64           # central crop the detector sees, in image pixels
    image_size: int = 64            # working size fed to the network (64/64: native pixels, cheap on CPU)
    backbone: str = "resnet18"
    batch_size: int = 4
    lr: float = 1e-3
    candidates_factor: int = 3      # top (factor x per_round) candidates before the diversity step
    diversity: str = "kcenter"
    aggregate: str = "sum"
    volunteers_per_subject: int = 20
    seed: int = 0
    score_batch: int = 8
    retire_below: float = DEFAULT_RETIRE_BELOW              # the lean policy's stopping rule
    min_classifications: int = DEFAULT_MIN_CLASSIFICATIONS
    reference_galaxies: int = 0  # > 0: the lean rule's vote shares from a disjoint fully classified project
    # > 0: a detector trained on a disjoint fully classified project of this many galaxies (the project's earlier
    # galaxies, as Clump Scout's loop would start from the paper's model): every policy's first model starts from
    # its encoder, and lean-detector also lets it annotate the initial galaxies (make_prior)
    warm_start_galaxies: int = 0

    def __post_init__(self) -> None:
        if self.test < 1 or self.initial < 2 or self.per_round < 1 or self.rounds < 1:
            raise ClumptoolError("test >= 1, initial >= 2, per_round >= 1 and rounds >= 1 are needed")
        need = self.test + self.initial + self.per_round * self.rounds
        if self.galaxies < need:
            raise ClumptoolError(f"{self.galaxies} galaxies are too few: test + initial + rounds x per_round "
                                 f"= {need}")


@dataclass
class Project:
    """A simulated project split into a pool and a fixed test set, with the oracle's classifications."""

    root: Path
    images: Path
    truth: Path
    subjects: Path
    pool_subjects: Path
    pool_ids: list[str]
    test_ids: list[str]
    test_list: Path
    oracle: pd.DataFrame = field(repr=False)
    exports: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)  # per labelling policy, at start
    reference: Path | None = None  # aggregate --reference for the lean rule (make_reference)
    prior_model: Path | None = None  # the warm start's detector (make_prior)
    prior_encoder: Path | None = None  # its encoder's weights, every policy's first model starts from them
    lean_stops: pd.Series | None = field(default=None, repr=False)  # lean: classifications kept per galaxy


def lean_cut(oracle: pd.DataFrame, stops: pd.Series) -> pd.DataFrame:
    """The oracle's export as the lean policy spends it: each galaxy's first ``stops[galaxy]`` classifications
    in the export's order (galaxies missing from ``stops`` keep none)."""
    sid = normalise_subject_ids(oracle["subject_ids"], where="oracle classifications")
    limit = sid.map(stops).fillna(0).to_numpy()
    return oracle[queue_rank(oracle) < limit]


def classifications_spent(export: pd.DataFrame, ids: list[str]) -> int:
    """Volunteer classifications the labelled galaxies ``ids`` cost: their rows of the policy's export."""
    sid = normalise_subject_ids(export["subject_ids"], where="oracle classifications")
    return int(sid.isin(set(ids)).sum())


def pool_stops(project: Project, cfg: LoopConfig, tmp: Path, detections: Path | None = None) -> pd.Series:
    """Classifications each pool galaxy keeps when the stopping rule (with ``detections`` as one more annotator,
    when given) replays the pool's export one volunteer at a time (index: str subject ids)."""
    options = AggregateOptions(retire_below=cfg.retire_below, min_classifications=cfg.min_classifications,
                               retirement_limit=CAP,  # the stalled test counts down to the replay's cap
                               reference=None if project.reference is None else str(project.reference))
    cls = project.oracle
    tmp.mkdir(parents=True, exist_ok=True)
    stops, _ = adaptive_stops(cls["subject_ids"].astype("int64").to_numpy(), queue_rank(cls),
                              rule_finished(project.subjects, cls, options, tmp, detections),
                              cfg.min_classifications, cap=CAP)
    stops.index = normalise_subject_ids(pd.Series(stops.index), where="lean stops").to_numpy()
    return stops.rename("classifications").rename_axis("subject_id").sort_index()


def cached_stops(path: Path, stamp: dict, compute: Callable[[], pd.Series]) -> pd.Series:
    """``compute()``'s stops, kept in ``path`` (csv) beside ``stamp`` (json): reused while the stamp is the same."""
    text, stamp_path = json.dumps(stamp, sort_keys=True), path.with_suffix(".json")
    if path.exists() and stamp_path.exists() and stamp_path.read_text() == text:
        return pd.read_csv(path, dtype={"subject_id": str}).set_index("subject_id")["classifications"]
    stops = compute()
    with atomic_path(path) as t:
        stops.reset_index().to_csv(t, index=False)
    write_text_atomic(stamp_path, text)
    return stops


def _rule_stamp(project: Project, cfg: LoopConfig) -> dict:
    return {"retire_below": cfg.retire_below, "min_classifications": cfg.min_classifications,
            "oracle_rows": len(project.oracle), "reference": None if project.reference is None else
            str(project.reference)}


def lean_stop_counts(project: Project, cfg: LoopConfig, work: Path) -> pd.Series:
    """Classifications each pool galaxy keeps under the lean policy (cached in ``work/lean_stops.csv``)."""
    return cached_stops(work / "lean_stops.csv", _rule_stamp(project, cfg),
                        lambda: pool_stops(project, cfg, work / "lean-tmp"))


def pool_catalogue(project: Project, model_dir: Path, out: Path) -> Path:
    """The model's detections (score >= :data:`DETECTOR_MIN_SCORE`, original image pixels) on every pool galaxy:
    ``clumptool predict``'s catalogue, the detector's marks for ``aggregate --detections``."""
    from clumptool.detection.predict import predict_catalogue

    res = predict_catalogue(model_dir, project.images, out / "catalogue.parquet", subjects=project.pool_subjects,
                            score_threshold=DETECTOR_MIN_SCORE, n_overlay=0, devices=1, progress=False)
    return res.catalogue_path


def detector_stops(project: Project, cfg: LoopConfig, model_dir: Path, new: list[str], out: Path) -> pd.Series:
    """lean-detector: classifications each galaxy of ``new`` keeps when the stopping rule replays the pool's export
    with ``model_dir`` (the model that selected them) as one more annotator (cached in ``out/stops.csv``)."""
    version = json.loads((model_dir / "model.json").read_text())["version"]
    stamp = {**_rule_stamp(project, cfg), "model": version, "galaxies": sorted(new)}

    def compute() -> pd.Series:
        catalogue = pool_catalogue(project, model_dir, out)
        return pool_stops(project, cfg, out / "tmp", catalogue).reindex(sorted(new))

    return cached_stops(out / "stops.csv", stamp, compute)


def recut(oracle: pd.DataFrame, export: pd.DataFrame, stops: pd.Series) -> pd.DataFrame:
    """``export`` (rows of ``oracle``) with the galaxies of ``stops`` cut afresh to their first ``stops[galaxy]``
    classifications of ``oracle``; the other galaxies' rows unchanged, in the oracle's order."""
    sid = normalise_subject_ids(export["subject_ids"], where="oracle classifications")
    return pd.concat([export[~sid.isin(set(stops.index)).to_numpy()], lean_cut(oracle, stops)]).sort_index()


def add_policies(project: Project, cfg: LoopConfig, work: Path, policies: tuple[str, ...]) -> Project:
    """Fill ``project.exports`` with the oracle's export as each labelling policy spends it."""
    for policy in policies:
        if policy == "fixed20":
            project.exports[policy] = project.oracle
        elif policy in ("lean", "lean-detector"):  # lean-detector starts as lean: no model for round 0
            project.lean_stops = lean_stop_counts(project, cfg, work)
            project.exports[policy] = lean_cut(project.oracle, project.lean_stops)
        else:
            raise ClumptoolError(f"--policies {policy}: not a labelling policy; use {', '.join(POLICIES)}")
    return project


def _ids_csv(ids: list[str], path: Path) -> Path:
    with atomic_path(path) as tmp:
        pd.DataFrame({"subject_id": list(ids)}).to_csv(tmp, index=False)
    return path


def make_project(work: str | os.PathLike, cfg: LoopConfig, progress: bool = False) -> Project:
    """Simulate the project (reused when ``work/project`` already holds one) and ask the oracle once."""
    from clumptool.simulation.config import SimulationConfig
    from clumptool.simulation.project import simulate_project, simulate_volunteer_export

    work = Path(work)
    root = work / "project"
    sim = SimulationConfig(galaxies=cfg.galaxies, image_size=cfg.sim_image_size, seed=cfg.seed,
                           volunteers_per_subject=cfg.volunteers_per_subject)
    stamp = json.dumps(asdict(sim), default=str, sort_keys=True)
    stamp_path = root / "config.json"
    fresh = not (root / "subjects.csv").exists() or not stamp_path.exists() or stamp_path.read_text() != stamp
    if fresh:
        simulate_project(root, sim)
        write_text_atomic(stamp_path, stamp)
    subjects = pd.read_csv(root / "subjects.csv")
    sids = normalise_subject_ids(subjects["subject_id"], where=root / "subjects.csv")
    ids = sorted(sids.unique())
    perm = np.random.default_rng(cfg.seed).permutation(len(ids))
    test_ids = sorted(ids[i] for i in perm[: cfg.test])
    pool_ids = sorted(ids[i] for i in perm[cfg.test:])
    oracle_path = work / "oracle_classifications.csv"
    if fresh or not oracle_path.exists():
        pool_subjects = subjects[sids.isin(set(pool_ids)).to_numpy()]
        with atomic_path(work / "pool_subjects.csv") as tmp:
            pool_subjects.to_csv(tmp, index=False)
        oracle_cfg = SimulationConfig(galaxies=cfg.galaxies, image_size=cfg.sim_image_size, seed=cfg.seed + 1,
                                      volunteers_per_subject=cfg.volunteers_per_subject)
        simulate_volunteer_export(root / "truth.csv", work / "pool_subjects.csv", oracle_path, oracle_cfg)
    oracle = pd.read_csv(oracle_path, dtype=str, keep_default_na=False)
    return Project(root=root, images=root / "images", truth=root / "truth.csv", subjects=root / "subjects.csv",
                   pool_subjects=work / "pool_subjects.csv", pool_ids=pool_ids, test_ids=test_ids,
                   test_list=_ids_csv(test_ids, work / "test_ids.csv"), oracle=oracle)


def make_reference(work: Path, cfg: LoopConfig) -> Path:
    """``aggregate`` of a disjoint simulated project (seed + 1000, no images) whose ``cfg.reference_galaxies``
    galaxies all had their 20 volunteers: the vote shares the lean rule learns from (``aggregate --reference``),
    as a project that ran Clump Scout's fixed 20 before would have them. Cached in ``work``."""
    from clumptool.aggregation.pipeline import aggregate
    from clumptool.aggregation.reference import read_reference
    from clumptool.simulation.config import SimulationConfig
    from clumptool.simulation.project import simulate_project

    root, out = work / "reference-project", work / "reference"
    if not (out / "summary.json").exists() or read_reference(out).single_clicks is None:  # older: no single clicks
        sim = SimulationConfig(galaxies=cfg.reference_galaxies, image_size=cfg.sim_image_size, seed=cfg.seed + 1000,
                               volunteers_per_subject=cfg.volunteers_per_subject, images=False)
        if not (root / "classifications.csv").exists():
            simulate_project(root, sim)
        aggregate(root / "classifications.csv", root / "subjects.csv", out)
    return out


def make_prior(work: Path, cfg: LoopConfig) -> tuple[Path, Path]:
    """The warm start: a detector trained (as every loop model, from random init, ``cfg.epochs_initial`` epochs) on
    the fixed-20 consensus of a disjoint simulated project of ``cfg.warm_start_galaxies`` galaxies with images
    (seed + 1000: the reference project's galaxies when ``--reference`` is given too), and its encoder's weights
    as a ``--weights`` file. Returns (model folder, encoder file); cached in ``work``."""
    from safetensors.torch import load_file, save_file

    from clumptool.aggregation.pipeline import aggregate
    from clumptool.detection.data import labelled_items
    from clumptool.detection.train import quiet_lightning, train
    from clumptool.simulation.config import SimulationConfig
    from clumptool.simulation.project import simulate_project

    root, model, encoder = work / "prior-project", work / "prior-model", work / "prior-encoder.safetensors"
    sim = SimulationConfig(galaxies=cfg.warm_start_galaxies, image_size=cfg.sim_image_size, seed=cfg.seed + 1000,
                           volunteers_per_subject=cfg.volunteers_per_subject)
    stamp = json.dumps([asdict(sim), cfg.backbone, cfg.image_size, cfg.crop, cfg.epochs_initial, cfg.lr],
                       default=str, sort_keys=True)
    stamp_path = work / "prior-trained-from.json"
    if encoder.exists() and stamp_path.exists() and stamp_path.read_text() == stamp:
        return model, encoder
    for old in (root, model):
        shutil.rmtree(old, ignore_errors=True)
    encoder.unlink(missing_ok=True)
    simulate_project(root, sim)
    res = aggregate(root / "classifications.csv", root / "subjects.csv")
    boxes = res.boxes.copy()
    boxes["subject_id"] = normalise_subject_ids(boxes["subject_id"], where="prior boxes")
    ids = normalise_subject_ids(res.subjects["subject_id"], where="prior subjects").tolist()
    items = labelled_items(boxes, root / "images", _ids_csv(ids, work / "prior-labelled.csv"))
    with quiet_lightning():
        train(None, root / "images", model, items=(items, []), backbone=cfg.backbone, weights=None,
              image_size=cfg.image_size, crop=cfg.crop, epochs=cfg.epochs_initial, batch_size=cfg.batch_size,
              lr=cfg.lr, seed=cfg.seed + 1000, progress=False, patience=None, devices=1)
    prefix = "backbone.body."
    state = load_file(str(model / "model.safetensors"))
    with atomic_path(encoder) as tmp:
        save_file({k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}, str(tmp))
    write_text_atomic(stamp_path, stamp)
    return model, encoder


def label(project: Project, ids: list[str], out: Path, export: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Aggregate the classifications of ``ids`` in ``export`` (the oracle's, as the run's labelling policy spends
    it): (boxes with str subject ids, subjects table)."""
    from clumptool.aggregation.pipeline import aggregate

    rows = export[export["subject_ids"].isin(set(ids))]
    if rows.empty:
        raise ClumptoolError("the oracle has no classifications for the requested galaxies")
    out.mkdir(parents=True, exist_ok=True)
    export = out / "classifications.csv"
    with atomic_path(export) as tmp:
        rows.to_csv(tmp, index=False)
    res = aggregate(export, project.subjects)
    boxes = res.boxes.copy()
    boxes["subject_id"] = normalise_subject_ids(boxes["subject_id"], where="aggregated boxes")
    return boxes, res.subjects


def train_round(project: Project, ids: list[str], boxes: pd.DataFrame, out: Path, cfg: LoopConfig, epochs: int,
                resume: Path | None = None, weights: Path | None = None) -> Path:
    """Train (or continue training) the detector on the labelled galaxies ``ids`` (a new one from the encoder
    ``weights``, or random init); returns the model folder."""
    from clumptool.detection.data import labelled_items
    from clumptool.detection.train import quiet_lightning, train

    subj = _ids_csv(ids, out.parent / f"{out.name}-labelled.csv")
    items = labelled_items(boxes[boxes["subject_id"].isin(set(ids))], project.images, subj)
    with quiet_lightning():
        train(None, project.images, out, items=(items, []), backbone=cfg.backbone, weights=weights,
              image_size=cfg.image_size, crop=cfg.crop, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr,
              seed=cfg.seed, progress=False, patience=None, resume=resume, devices=1)
    return out


def evaluate_round(project: Project, model_dir: Path, out: Path) -> dict:
    """Completeness, purity, F1 (score >= 0.5) and the best F1 over thresholds on the test set."""
    from clumptool.detection.evaluate import evaluate_model

    rep = evaluate_model(model_dir, project.truth, project.images, out, subjects=project.test_list,
                         score_threshold=0.5, progress=False)
    overall = rep.metrics["scopes"]["overall"]
    at, best = overall["at_threshold"], overall["best_f1"]
    return {"completeness": at["completeness"], "purity": at["purity"], "f1": at["f1"], "best_f1": best["f1"]}


def select_round(project: Project, model_dir: Path, labelled: list[str], n: int, strategy: str, cfg: LoopConfig,
                 out: Path, seed: int, plot: bool = False) -> tuple[list[str], float]:
    """Run ``select_next_batch`` on the unlabelled pool; returns the chosen ids and galaxies scored per second."""
    from clumptool.active_learning.select import select_next_batch

    inputs = out.parent / f"{out.name}-inputs"  # beside the output set (which holds only its own files)
    inputs.mkdir(parents=True, exist_ok=True)
    pool = pd.DataFrame({"galaxy_id": project.pool_ids,
                         "image_path": [str(project.images / f"{g}.png") for g in project.pool_ids]})
    with atomic_path(inputs / "pool.csv") as tmp:
        pool.to_csv(tmp, index=False)
    lab = _ids_csv(labelled, inputs / "labelled.csv")
    res = select_next_batch(model_dir, inputs / "pool.csv", out, n=n, labelled=[lab], strategy=strategy,
                            candidates=cfg.candidates_factor * n, diversity=cfg.diversity, random_control=0,
                            round_name=out.name, state=inputs / "ledger", aggregate=cfg.aggregate,
                            batch_size=cfg.score_batch, seed=seed, plot=plot, progress=False)
    return res.selection["galaxy_id"].astype(str).tolist(), res.rate


@dataclass
class RoundRecord:
    strategy: str
    round: int
    n_labelled: int
    completeness: float
    purity: float
    f1: float
    best_f1: float
    scored_per_s: float
    seconds: float
    policy: str = "fixed20"
    classifications: int = 0   # volunteer classifications spent on the labelled galaxies so far


def run_name(strategy: str, policy: str) -> str:
    """The folder (and curve key) of one strategy under one labelling policy; fixed20 keeps the old layout."""
    return strategy if policy == "fixed20" else f"{strategy}-{policy}"


def policy_export(project: Project, policy: str) -> pd.DataFrame:
    """The oracle's export as ``policy`` spends it at the start of a run (add_policies first)."""
    if policy not in project.exports:
        raise ClumptoolError(f"no oracle export for the labelling policy {policy!r} (add_policies first)")
    return project.exports[policy]


def initial_round(project: Project, cfg: LoopConfig, work: Path, log: Callable[[str], None] = print,
                  policy: str = "fixed20") -> tuple[list[str], Path, dict]:
    """The shared starting point of a policy: ``initial`` random pool galaxies (the same for every policy)
    labelled as ``policy`` spends them, a first model (from the warm start's encoder when there is one), its
    metrics. lean-detector shares lean's (the same cut: there is no model to annotate with yet), unless a warm
    start's detector annotates the initial galaxies; the model is retrained whenever what it learns from changed."""
    rng = np.random.default_rng(cfg.seed + 7)
    ids = sorted(rng.choice(project.pool_ids, size=cfg.initial, replace=False).tolist())
    annotated = policy == "lean-detector" and project.prior_model is not None
    out = work / run_name("round0", "lean" if policy == "lean-detector" and not annotated else policy)
    model = out / "model"
    if annotated:  # the warm start's detector annotates the initial galaxies; the run goes on from this export
        project.exports[policy] = recut(project.oracle, policy_export(project, policy),
                                        detector_stops(project, cfg, project.prior_model, ids, out / "detector"))
    boxes, _ = label(project, ids, out / "labels", policy_export(project, policy))
    stamp, stamp_path = training_stamp(ids, boxes, cfg), out / "model-trained-from.txt"
    if not (model / "model.safetensors").exists() or not stamp_path.exists() or stamp_path.read_text() != stamp:
        shutil.rmtree(model, ignore_errors=True)  # another rule or config labelled these galaxies: retrain
        t0 = time.perf_counter()
        train_round(project, ids, boxes, model, cfg, cfg.epochs_initial, weights=project.prior_encoder)
        write_text_atomic(stamp_path, stamp)
        log(f"  round 0 ({policy}): trained on {len(ids)} galaxies in {time.perf_counter() - t0:.0f} s")
    metrics = evaluate_round(project, model, out / "eval")
    return ids, model, metrics


def training_stamp(ids: list[str], boxes: pd.DataFrame, cfg: LoopConfig) -> str:
    """What a model was trained from (galaxies, their boxes, the loop's settings): a cached model is reused only
    while this is unchanged, so a rerun with another stopping threshold never evaluates labels it did not train on."""
    digest = hashlib.sha256(json.dumps([sorted(ids), asdict(cfg)], sort_keys=True, default=str).encode())
    kept = boxes[boxes["subject_id"].isin(set(ids))].sort_values(list(boxes.columns)).reset_index(drop=True)
    digest.update(pd.util.hash_pandas_object(kept, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def run_one_round(project: Project, labelled: list[str], model: Path, strategy: str, cfg: LoopConfig, out: Path,
                  epochs: int, export: pd.DataFrame, seed: int = 0, plot: bool = False, policy: str = "fixed20"
                  ) -> tuple[list[str], Path, dict, float, pd.DataFrame]:
    """One cycle: select ``cfg.per_round`` galaxies with ``model`` -> the oracle's volunteers label them ->
    aggregate every label so far -> continue training to ``epochs`` in total -> evaluate on the test set.

    ``export``: the oracle's classifications as the run has spent them so far; lean-detector re-cuts the newly
    selected galaxies with ``model`` (which selected them) as one more annotator of the stopping rule.
    Returns the labelled ids, the new model folder, its test metrics, the galaxies scored per second and the
    run's export after this round.
    """
    new, rate = select_round(project, model, labelled, cfg.per_round, strategy, cfg, out / "select", seed=seed,
                             plot=plot)
    if policy == "lean-detector":
        export = recut(project.oracle, export, detector_stops(project, cfg, model, new, out / "detector"))
    ids = sorted(set(labelled) | set(new))
    boxes, _ = label(project, ids, out / "labels", export)
    ckpt = model / "checkpoints" / "last.ckpt"
    new_model = train_round(project, ids, boxes, out / "model", cfg, epochs, resume=ckpt if ckpt.exists() else None)
    return ids, new_model, evaluate_round(project, new_model, out / "eval"), rate, export


def run_strategy(project: Project, strategy: str, cfg: LoopConfig, work: Path, start: tuple[list[str], Path, dict],
                 log: Callable[[str], None] = print, policy: str = "fixed20") -> list[RoundRecord]:
    """Every round of one strategy under one labelling policy from the policy's shared start; one record per
    model (round 0 included)."""
    ids, model, metrics = list(start[0]), start[1], start[2]
    name = run_name(strategy, policy)
    export = policy_export(project, policy)
    records = [RoundRecord(strategy, 0, len(ids), **metrics, scored_per_s=float("nan"), seconds=0.0, policy=policy,
                           classifications=classifications_spent(export, ids))]
    epochs = cfg.epochs_initial
    for r in range(1, cfg.rounds + 1):
        t0 = time.perf_counter()
        epochs += cfg.epochs_per_round
        ids, model, m, rate, export = run_one_round(project, ids, model, strategy, cfg, work / name / f"round{r}",
                                                    epochs, export, seed=cfg.seed * 1000 + r, policy=policy)
        rec = RoundRecord(strategy, r, len(ids), **m, scored_per_s=rate, seconds=time.perf_counter() - t0,
                          policy=policy, classifications=classifications_spent(export, ids))
        records.append(rec)
        log(f"  {name:>22} round {r}: {len(ids)} labelled, {rec.classifications} classifications, "
            f"F1 {m['f1']:.3f} (best {m['best_f1']:.3f}), "
            f"completeness {m['completeness']:.3f}, purity {m['purity']:.3f}, {rec.seconds:.0f} s")
    return records


def labels_to_reach(curve: pd.DataFrame, target: float, column: str = "f1", x: str = "n_labelled") -> float | None:
    """Cost (``x``: labelled galaxies, or classifications) at which ``curve`` first reaches ``target`` (linear
    interpolation), None if never."""
    n = curve[x].to_numpy(dtype=float)
    f = curve[column].to_numpy(dtype=float)
    for i in range(len(f)):
        if f[i] >= target - 1e-12:
            if i == 0:
                return float(n[0])
            return float(n[i - 1] + (target - f[i - 1]) / (f[i] - f[i - 1]) * (n[i] - n[i - 1]))
    return None


def label_saving(curves: pd.DataFrame, strategy: str, baseline: str = "random", column: str = "f1",
                 x: str = "n_labelled", key: str = "strategy") -> dict:
    """How much less cost (``x``) ``strategy`` needs to reach the baseline's final ``column`` (interpolated).

    Curves are told apart by ``key``. ``saving`` compares with the cost the baseline spent in total
    (1 - n_strategy / n_baseline_final), ``factor`` is n_baseline_final / n_strategy ("k x fewer");
    ``saving_conservative`` / ``factor_conservative`` compare with the first point where the baseline's own
    curve reached that value (lower when the baseline's curve is not monotonic).
    """
    base = curves[curves[key] == baseline].sort_values(x)
    cur = curves[curves[key] == strategy].sort_values(x)
    target = float(base[column].iloc[-1])
    n_final = float(base[x].iloc[-1])
    n_first = labels_to_reach(base, target, column, x)
    n_cur = labels_to_reach(cur, target, column, x)
    return {"strategy": strategy, "target": target, "n_baseline_final": n_final, "n_baseline_first": n_first,
            "n_strategy": n_cur, "saving": None if n_cur is None else 1.0 - n_cur / n_final,
            "saving_conservative": None if n_cur is None or not n_first else 1.0 - n_cur / n_first,
            "factor": None if not n_cur else n_final / n_cur,
            "factor_conservative": None if not n_cur or not n_first else n_first / n_cur}


def whole_loop_table(curves: pd.DataFrame, runs: list[str], baseline: str) -> pd.DataFrame:
    """Per run and F1 kind: the classifications needed to reach the baseline's final value, and the factor."""
    rows = []
    for col in ("f1", "best_f1"):
        for run in runs:
            sv = label_saving(curves, run, baseline, col, x="classifications", key="run")
            last = curves[curves["run"] == run].sort_values("classifications").iloc[-1]
            rows.append({"metric": col, "run": run, "final_classifications": int(last["classifications"]),
                         "final_value": float(last[col]), "target": sv["target"],
                         "classifications_to_target": sv["n_strategy"], "factor": sv["factor"],
                         "factor_conservative": sv["factor_conservative"]})
    return pd.DataFrame(rows)


CURVE_FIGURES = ("n_labelled", "classifications", "completeness", "purity", "f1", "best_f1")


def mean_curves(runs_curves: list[pd.DataFrame], names: list[str] | None = None) -> pd.DataFrame:
    """Per run and round, the mean over several loop runs (one per ``--seed``) of the classifications spent and of
    the test-set figures: the learning curve a policy gives, with one training's luck averaged out.

    Every run must hold the same runs and rounds with the same labelled-galaxy counts (``names`` label the
    runs in the error).
    """
    names = names or [f"run {i}" for i in range(len(runs_curves))]
    if not runs_curves:
        raise ClumptoolError("no loop runs to pool")
    shape = runs_curves[0][["run", "round", "n_labelled"]].reset_index(drop=True)
    for name, c in zip(names[1:], runs_curves[1:], strict=True):
        if not c[["run", "round", "n_labelled"]].reset_index(drop=True).equals(shape):
            raise ClumptoolError(f"{name}: its runs, rounds or labelled galaxies differ from {names[0]}'s; "
                                 "only runs of the same loop settings can be pooled")
    stacked = pd.concat([c[["run", "round", *CURVE_FIGURES]] for c in runs_curves])
    return stacked.groupby(["run", "round"], sort=False).mean().reset_index()


def pooled_whole_loop(runs_curves: list[pd.DataFrame], baseline: str, resamples: int = 1000, seed: int = 0,
                      goal: float = 5.0, names: list[str] | None = None) -> pd.DataFrame:
    """The whole-loop table on the mean curves of several loop runs, with a bootstrap over the runs.

    ``factor_low`` / ``factor_high``: the 5th / 95th percentile of the factor over ``resamples`` draws of the
    runs with replacement (a draw whose mean curve never reaches the target counts as factor 0);
    ``p_goal``: the share of draws at >= ``goal``.
    """
    mean = mean_curves(runs_curves, names)
    runs = list(dict.fromkeys(mean["run"]))
    table = whole_loop_table(mean, runs, baseline)
    rng = np.random.default_rng(seed)
    draws = np.zeros((resamples, len(table)))
    for b in range(resamples):
        pick = rng.integers(0, len(runs_curves), len(runs_curves))
        t = whole_loop_table(mean_curves([runs_curves[i] for i in pick]), runs, baseline)
        draws[b] = pd.to_numeric(t["factor"], errors="coerce").fillna(0.0).to_numpy()
    table["factor_low"] = np.percentile(draws, 5, axis=0)
    table["factor_high"] = np.percentile(draws, 95, axis=0)
    table["p_goal"] = (draws >= goal).mean(axis=0)
    return table


def label_quality(project: Project, export_csv: Path, radius: float = 5.0) -> dict:
    """How right a run's training labels are: the consensus of its labelled galaxies' classifications (as
    :func:`label` aggregates them) against the simulation's truth (completeness of the detectable clumps,
    purity, F1). The lean policies' saving is only worth its labels; stop 21 found lean-detector labels at 0.2
    keeping 0.895-0.978 of the clumps where humans-only lean labels of the same galaxies kept 0.98-0.99."""
    from clumptool.aggregation.pipeline import aggregate

    res = aggregate(export_csv, project.subjects)
    res.clumps["subject_id"] = normalise_subject_ids(res.clumps["subject_id"], where=str(export_csv))
    ids = set(res.subjects["subject_id"][res.subjects["n_viewers"] > 0].astype(str))
    truth = pd.read_csv(project.truth)
    truth["subject_id"] = normalise_subject_ids(truth["subject_id"], where=str(project.truth))
    c, p, f1, _ = consensus_scores(res, truth[truth["subject_id"].isin(ids)], radius)
    return {"galaxies": len(ids), "completeness": c, "purity": p, "f1": f1}


def budget_matched(curves: pd.DataFrame, budgets: list[float], column: str = "f1", x: str = "classifications",
                   key: str = "run") -> pd.DataFrame:
    """``column`` of each curve at equal cost: interpolated at each budget, NaN outside the curve's range."""
    out = {}
    for name, g in curves.groupby(key, sort=False):
        g = g.sort_values(x)
        xs, ys = g[x].to_numpy(float), g[column].to_numpy(float)
        out[name] = [float(np.interp(b, xs, ys)) if xs[0] <= b <= xs[-1] else np.nan for b in budgets]
    return pd.DataFrame(out, index=pd.Index(budgets, name=x))


def plot_learning_curves(curves: pd.DataFrame, target: Path, title: str = "", x: str = "n_labelled",
                         key: str = "strategy", hline: float | None = None) -> Path:
    """F1, completeness and purity on the test set vs cost (``x``: labelled galaxies or volunteer
    classifications), one line per ``key``; ``hline``: a target F1 drawn on the F1 panel."""
    fig = new_figure(figsize=(16, 3.8))
    axes = fig.subplots(1, 4)
    xlabel = "labelled galaxies" if x == "n_labelled" else "volunteer classifications spent"
    for ax, col in zip(axes, ("f1", "best_f1", "completeness", "purity"), strict=True):
        for name, g in curves.groupby(key, sort=False):
            g = g.sort_values(x)
            ax.plot(g[x], g[col], marker="o", ms=4, label=name, ls="--" if str(name).startswith("random") else "-")
        if hline is not None and col == "f1":
            ax.axhline(hline, color="grey", lw=0.8, ls=":")
        ax.set(xlabel=xlabel, title=col.replace("_", " ") + (" (score >= 0.5)" if col != "best_f1"
                                                             else " (best threshold)"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test set")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, target, dpi=100)
