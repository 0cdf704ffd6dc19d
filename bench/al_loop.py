"""The offline active-learning cycle on a simulated project: train -> select -> volunteers label -> aggregate.

Galaxy Zoo's pattern (Walmsley et al. 2020): a simulated *oracle* stands in for Zooniverse. Here the
oracle is ``simulate_volunteer_export`` run once over the whole pool, so a galaxy gets the same simulated
volunteer clicks whichever strategy picks it (strategies differ only in *which* galaxies they ask about).
Labels are the consensus of ``clumptool.aggregation.pipeline.aggregate`` over every classification of the
labelled galaxies so far (re-aggregated each round, as a real project would). Models are trained with
``clumptool.detection.train.train``: the first round from scratch, later rounds continue the previous
round's checkpoint for a few more epochs on the enlarged set (as GZ retrained nightly), so all strategies get
the same training schedule. Quality is completeness / purity / F1 against the simulation's truth on a fixed
held-out test set. ``bench/active_learning.py`` runs it. An experiment, not part of the product: it lives in
``bench/`` so ``clumptool.active_learning`` never imports ``clumptool.simulation``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.common.atomic import atomic_path, write_text_atomic
from clumptool.common.errors import ClumptoolError
from clumptool.common.ids import normalise_subject_ids


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
    pool_ids: list[str]
    test_ids: list[str]
    test_list: Path
    oracle: pd.DataFrame = field(repr=False)


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
                   pool_ids=pool_ids, test_ids=test_ids, test_list=_ids_csv(test_ids, work / "test_ids.csv"),
                   oracle=oracle)


def label(project: Project, ids: list[str], out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Aggregate the oracle's classifications of ``ids``: (boxes with str subject ids, subjects table)."""
    from clumptool.aggregation.pipeline import aggregate

    rows = project.oracle[project.oracle["subject_ids"].isin(set(ids))]
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
                resume: Path | None = None) -> Path:
    """Train (or continue training) the detector on the labelled galaxies ``ids``; returns the model folder."""
    from clumptool.detection.data import labelled_items
    from clumptool.detection.train import quiet_lightning, train

    subj = _ids_csv(ids, out.parent / f"{out.name}-labelled.csv")
    items = labelled_items(boxes[boxes["subject_id"].isin(set(ids))], project.images, subj)
    with quiet_lightning():
        train(None, project.images, out, items=(items, []), backbone=cfg.backbone, weights=None,
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


def initial_round(project: Project, cfg: LoopConfig, work: Path, log: Callable[[str], None] = print
                  ) -> tuple[list[str], Path, dict]:
    """The shared starting point: ``initial`` random pool galaxies labelled, a first model, its metrics."""
    rng = np.random.default_rng(cfg.seed + 7)
    ids = sorted(rng.choice(project.pool_ids, size=cfg.initial, replace=False).tolist())
    out = work / "round0"
    model = out / "model"
    if not (model / "model.safetensors").exists():
        boxes, _ = label(project, ids, out / "labels")
        t0 = time.perf_counter()
        train_round(project, ids, boxes, model, cfg, cfg.epochs_initial)
        log(f"  round 0: trained on {len(ids)} galaxies in {time.perf_counter() - t0:.0f} s")
    metrics = evaluate_round(project, model, out / "eval")
    return ids, model, metrics


def run_one_round(project: Project, labelled: list[str], model: Path, strategy: str, cfg: LoopConfig, out: Path,
                  epochs: int, seed: int = 0, plot: bool = False) -> tuple[list[str], Path, dict, float]:
    """One cycle: select ``cfg.per_round`` galaxies with ``model`` -> the oracle's volunteers label them ->
    aggregate every label so far -> continue training to ``epochs`` in total -> evaluate on the test set.

    Returns the labelled ids, the new model folder, its test metrics and the galaxies scored per second.
    """
    new, rate = select_round(project, model, labelled, cfg.per_round, strategy, cfg, out / "select", seed=seed,
                             plot=plot)
    ids = sorted(set(labelled) | set(new))
    boxes, _ = label(project, ids, out / "labels")
    ckpt = model / "checkpoints" / "last.ckpt"
    new_model = train_round(project, ids, boxes, out / "model", cfg, epochs, resume=ckpt if ckpt.exists() else None)
    return ids, new_model, evaluate_round(project, new_model, out / "eval"), rate


def run_strategy(project: Project, strategy: str, cfg: LoopConfig, work: Path, start: tuple[list[str], Path, dict],
                 log: Callable[[str], None] = print) -> list[RoundRecord]:
    """Every round of one strategy from the shared start; one record per model (round 0 included)."""
    ids, model, metrics = list(start[0]), start[1], start[2]
    records = [RoundRecord(strategy, 0, len(ids), **metrics, scored_per_s=float("nan"), seconds=0.0)]
    epochs = cfg.epochs_initial
    for r in range(1, cfg.rounds + 1):
        t0 = time.perf_counter()
        epochs += cfg.epochs_per_round
        ids, model, m, rate = run_one_round(project, ids, model, strategy, cfg, work / strategy / f"round{r}",
                                            epochs, seed=cfg.seed * 1000 + r)
        rec = RoundRecord(strategy, r, len(ids), **m, scored_per_s=rate, seconds=time.perf_counter() - t0)
        records.append(rec)
        log(f"  {strategy:>9} round {r}: {len(ids)} labelled, F1 {m['f1']:.3f} (best {m['best_f1']:.3f}), "
            f"completeness {m['completeness']:.3f}, purity {m['purity']:.3f}, {rec.seconds:.0f} s")
    return records


def labels_to_reach(curve: pd.DataFrame, target: float, column: str = "f1") -> float | None:
    """Labelled galaxies at which ``curve`` first reaches ``target`` (linear interpolation), None if never."""
    n = curve["n_labelled"].to_numpy(dtype=float)
    f = curve[column].to_numpy(dtype=float)
    for i in range(len(f)):
        if f[i] >= target - 1e-12:
            if i == 0:
                return float(n[0])
            return float(n[i - 1] + (target - f[i - 1]) / (f[i] - f[i - 1]) * (n[i] - n[i - 1]))
    return None


def label_saving(curves: pd.DataFrame, strategy: str, baseline: str = "random", column: str = "f1") -> dict:
    """How many fewer labels ``strategy`` needs to reach the baseline's final ``column`` (interpolated).

    ``saving`` compares with the labels the baseline spent in total (1 - n_strategy / n_baseline_final);
    ``saving_conservative`` with the first point where the baseline's own curve reached that value (lower
    when the baseline's curve is not monotonic).
    """
    base = curves[curves["strategy"] == baseline].sort_values("n_labelled")
    cur = curves[curves["strategy"] == strategy].sort_values("n_labelled")
    target = float(base[column].iloc[-1])
    n_final = float(base["n_labelled"].iloc[-1])
    n_first = labels_to_reach(base, target, column)
    n_cur = labels_to_reach(cur, target, column)
    return {"strategy": strategy, "target": target, "n_baseline_final": n_final, "n_baseline_first": n_first,
            "n_strategy": n_cur, "saving": None if n_cur is None else 1.0 - n_cur / n_final,
            "saving_conservative": None if n_cur is None or not n_first else 1.0 - n_cur / n_first}


def plot_learning_curves(curves: pd.DataFrame, target: Path, title: str = "") -> Path:
    """learning_curves.png: F1, completeness and purity on the test set vs labelled galaxies, per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, col in zip(axes, ("f1", "best_f1", "completeness", "purity"), strict=True):
        for strategy, g in curves.groupby("strategy", sort=False):
            g = g.sort_values("n_labelled")
            ax.plot(g["n_labelled"], g[col], marker="o", ms=4, label=strategy,
                    ls="--" if strategy == "random" else "-")
        ax.set(xlabel="labelled galaxies", title=col.replace("_", " ") + (" (score >= 0.5)" if col != "best_f1"
                                                                           else " (best threshold)"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test set")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return target
