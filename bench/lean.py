"""Lean crowdsourcing on every simulated crowd: how many volunteer classifications does each galaxy need?

Volunteers arrive at each simulated galaxy one by one, in the export's order. Strategies:

* ``fixed 20``: every galaxy gets 20 classifications (Clump Scout's practice; the sparse crowd has 6-10, all used);
* ``fixed k`` (5, 6, 8): every galaxy gets its first k;
* ``adaptive``: humans only; after k = 3, 4, ..., 20 classifications the whole export so far (retired galaxies
  frozen at their count, the others cut to their first k) is aggregated, and the galaxies the stopping rule
  (aggregation/stopping.py, ``--retire-below``, ``--min-classifications``) calls finished at k retire. Rounds
  are equivalent to one decision per classification for a per-galaxy rule given the skills; the skills are
  learned on the whole export of the round.
* ``humans + detector``: TODO, needs the detector as an annotator (issue 12 part 2), not built yet.

Each line: volunteer classifications per galaxy (mean, median, 10th/90th percentile), consensus completeness
(detectable clumps) / purity / F1 against truth on all galaxies and on the galaxies the rule calls finished
(their share), and the saving factor vs fixed 20 where F1 is within 0.01 of fixed 20's. The honesty goal: the
finished galaxies' completeness and purity >= 0.97 on every crowd, for fixed 6 as for fixed 20.

Run: ``python bench/lean.py [--galaxies 500] [--retire-below 0.1] [--work DIR]`` (~N min on 2 shared cores).

Result (filled in below from a run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from crowds import simulate_crowd  # noqa: E402

from clumptool.aggregation.evaluation import match_to_truth  # noqa: E402
from clumptool.aggregation.pipeline import AggregateOptions, aggregate  # noqa: E402
from clumptool.aggregation.stopping import DEFAULT_MIN_CLASSIFICATIONS, DEFAULT_RETIRE_BELOW  # noqa: E402
from clumptool.simulation.config import CROWDS  # noqa: E402

CAP = 20
FIXED = (5, 6, 8)


def _rank(cls: pd.DataFrame) -> np.ndarray:
    """Each classification's place in its galaxy's queue (0 = first), in the export's order."""
    return cls.groupby("subject_ids", sort=False).cumcount().to_numpy()


def _aggregate_cut(project: Path, cls: pd.DataFrame, keep: np.ndarray, tmp: Path, options: AggregateOptions):
    path = tmp / "cut.csv"
    cls[keep].to_csv(path, index=False)
    return aggregate(path, project / "subjects.csv", options=options)


def _score(res, truth: pd.DataFrame, radius: float, ids=None) -> tuple[float, float, float]:
    found = res.clumps[res.clumps["accepted"]]
    if ids is not None:
        found, truth = found[found["subject_id"].isin(ids)], truth[truth["subject_id"].isin(ids)]
    det = truth[truth["detectable"].astype(bool)]
    p, c = match_to_truth(found, truth, radius).purity, match_to_truth(found, det, radius).completeness
    return c, p, (2 * p * c / (p + c) if p + c else 0.0)


def _line(crowd: str, strategy: str, n_per: pd.Series, res, truth: pd.DataFrame, radius: float,
          finished: set) -> dict:
    c, p, f1 = _score(res, truth, radius)
    fc, fp, _ = _score(res, truth, radius, finished) if finished else (np.nan, np.nan, np.nan)
    q = n_per.quantile([0.1, 0.5, 0.9]).to_numpy()
    return {"crowd": crowd, "strategy": strategy, "cls/galaxy": n_per.mean(), "p10": q[0], "median": q[1],
            "p90": q[2], "compl": c, "purity": p, "F1": f1, "finished": len(finished) / max(len(n_per), 1),
            "fin compl": fc, "fin purity": fp}


def run_crowd(project: Path, crowd: str, options: AggregateOptions, radius: float, tmp: Path) -> list[dict]:
    cls = pd.read_csv(project / "classifications.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(project / "truth.csv")
    rank = _rank(cls)
    sid = cls["subject_ids"].astype("int64").to_numpy()
    available = pd.Series(sid).value_counts()
    rows = []

    def fixed(k: int, name: str) -> None:
        res = _aggregate_cut(project, cls, rank < k, tmp, options)
        s = res.subjects
        n_per = s.set_index("subject_id")["n_viewers"].reindex(available.index).fillna(0)
        rows.append(_line(crowd, name, n_per, res, truth, radius, set(s.loc[s["is_finished"], "subject_id"])))

    fixed(CAP, f"fixed {CAP}")
    for k in FIXED:
        fixed(k, f"fixed {k}")

    # adaptive: rounds k = min_classifications .. CAP
    stop = pd.Series(CAP, index=available.index, dtype="int64")  # each galaxy's count when it retires (or the cap)
    retired: set = set()
    for k in range(options.min_classifications, CAP + 1):
        limit = np.where(np.isin(sid, list(retired)), stop.reindex(sid).to_numpy(), k)
        res = _aggregate_cut(project, cls, rank < limit, tmp, options)
        s = res.subjects
        now = s[s["is_finished"] & ~s["subject_id"].isin(retired) & (s["n_viewers"] <= k)]["subject_id"]
        stop[now.to_numpy()] = np.minimum(k, available.reindex(now.to_numpy()).to_numpy())
        retired |= set(now.tolist())
        if (available <= k).all():
            break
    stop = np.minimum(stop, available)
    res = _aggregate_cut(project, cls, rank < stop.reindex(sid).to_numpy(), tmp, options)
    rows.append(_line(crowd, f"adaptive (humans, < {options.retire_below:g})", stop.astype(float), res, truth,
                      radius, retired))
    return rows


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--galaxies", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--radius", type=float, default=5.0, help="match radius against truth (px)")
    ap.add_argument("--retire-below", type=float, default=DEFAULT_RETIRE_BELOW)
    ap.add_argument("--min-classifications", type=int, default=DEFAULT_MIN_CLASSIFICATIONS)
    ap.add_argument("--crowds", default=",".join(CROWDS))
    ap.add_argument("--work", type=Path, default=None, help="folder for the simulated exports (reused)")
    a = ap.parse_args(argv)
    options = AggregateOptions(retire_below=a.retire_below, min_classifications=a.min_classifications)
    work = a.work or Path(tempfile.mkdtemp(prefix="lean-bench-"))
    print(f"== Lean crowdsourcing: {a.galaxies} galaxies per crowd, seed {a.seed}, --retire-below "
          f"{a.retire_below:g}, --min-classifications {a.min_classifications}, match radius {a.radius:g} px")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for crowd in a.crowds.split(","):
            t = time.perf_counter()
            vps = None if crowd == "sparse" else CAP
            project = simulate_crowd(work / f"{crowd}-{'6-10' if vps is None else vps}-{a.galaxies}", crowd, vps,
                                     a.galaxies, a.seed)
            rows += run_crowd(project, crowd, options, a.radius, Path(tmp))
            print(f"  {crowd}: {time.perf_counter() - t:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    base = table[table["strategy"] == f"fixed {CAP}"].set_index("crowd")
    table["saving"] = [
        base.loc[r["crowd"], "cls/galaxy"] / r["cls/galaxy"] if abs(r["F1"] - base.loc[r["crowd"], "F1"]) <= 0.01
        else np.nan for _, r in table.iterrows()]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print("  humans + detector: TODO, not built yet (needs the detector as an annotator, issue 12 part 2)")
    fin = table.dropna(subset=["fin compl"])
    if len(fin):
        worst = fin[["fin compl", "fin purity"]].min()
        print(f"  honesty: worst finished-galaxy completeness {worst['fin compl']:.3f}, purity "
              f"{worst['fin purity']:.3f} over every crowd and strategy (goal >= 0.97)")
    return table


if __name__ == "__main__":
    main()
