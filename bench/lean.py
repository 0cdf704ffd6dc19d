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

Run: ``python bench/lean.py [--galaxies 500] [--retire-below 0.1] [--seed 1] [--work DIR]``: ~1.7 min on 2 shared
cores with the simulated exports cached in --work, ~4 min from scratch. fin compl / fin purity: on the galaxies the
rule calls finished ("-": those galaxies hold no true and no found clump, e.g. fixed 5 on the confusion crowd).

Result, ``python bench/lean.py --work /tmp/lean/work`` (500 galaxies per crowd, seed 1, --retire-below 0.1,
--min-classifications 3, match radius 5 px; 2-core machine, Dec 2026)::

         crowd                 strategy  cls/galaxy    p10  median    p90  compl  purity    F1  finished  fin compl  fin purity  saving
       default                 fixed 20      20.000 20.000  20.000 20.000  0.998   0.995 0.997     0.910      1.000       1.000   1.000
       default                  fixed 5       5.000  5.000   5.000  5.000  0.928   0.973 0.950     0.086      1.000       1.000       -
       default                  fixed 6       6.000  6.000   6.000  6.000  0.969   0.959 0.964     0.090      1.000       1.000       -
       default                  fixed 8       8.000  8.000   8.000  8.000  0.992   0.953 0.972     0.324      1.000       1.000       -
       default adaptive (humans, < 0.1)      10.162  6.000   9.000 16.000  1.000   0.994 0.997     0.960      1.000       0.997   1.968
         bulge                 fixed 20      20.000 20.000  20.000 20.000  0.987   1.000 0.994     0.700      1.000       1.000   1.000
         bulge                  fixed 5       5.000  5.000   5.000  5.000  0.934   0.837 0.883     0.000          -           -       -
         bulge                  fixed 6       6.000  6.000   6.000  6.000  0.963   0.918 0.940     0.106      1.000       1.000       -
         bulge                  fixed 8       8.000  8.000   8.000  8.000  0.937   0.983 0.960     0.584      0.976       1.000       -
         bulge adaptive (humans, < 0.1)       9.442  6.000   8.000 14.000  0.979   0.997 0.988     0.978      0.980       0.997   2.118
    distractor                 fixed 20      20.000 20.000  20.000 20.000  0.995   1.000 0.998     0.920      1.000       1.000   1.000
    distractor                  fixed 5       5.000  5.000   5.000  5.000  0.913   0.869 0.891     0.000          -           -       -
    distractor                  fixed 6       6.000  6.000   6.000  6.000  0.953   0.854 0.901     0.052      1.000       1.000       -
    distractor                  fixed 8       8.000  8.000   8.000  8.000  0.974   0.970 0.972     0.382      1.000       1.000       -
    distractor adaptive (humans, < 0.1)      10.238  7.000   9.000 16.000  0.992   0.998 0.995     0.958      0.995       0.998   1.954
        sparse                 fixed 20       8.014  6.000   8.000 10.000  0.984   0.962 0.973     0.318      1.000       1.000   1.000
        sparse                  fixed 5       5.000  5.000   5.000  5.000  0.942   0.980 0.961     0.096          -           -       -
        sparse                  fixed 6       6.000  6.000   6.000  6.000  0.955   0.969 0.962     0.124      1.000       1.000       -
        sparse                  fixed 8       7.388  6.000   8.000  8.000  0.981   0.961 0.971     0.196      1.000       1.000   1.085
        sparse adaptive (humans, < 0.1)       7.494  6.000   7.000 10.000  0.984   0.960 0.972     0.360      1.000       1.000   1.069
     confusion                 fixed 20      20.000 20.000  20.000 20.000  1.000   0.994 0.997     0.540      1.000       1.000   1.000
     confusion                  fixed 5       5.000  5.000   5.000  5.000  0.907   0.941 0.923     0.072          -           -       -
     confusion                  fixed 6       6.000  6.000   6.000  6.000  0.971   0.949 0.960     0.086      1.000       1.000       -
     confusion                  fixed 8       8.000  8.000   8.000  8.000  0.997   0.944 0.969     0.234      1.000       1.000       -
     confusion adaptive (humans, < 0.1)      13.778  7.000  13.000 20.000  1.000   0.992 0.996     0.598      1.000       1.000   1.452
      humans + detector: TODO, not built yet (needs the detector as an annotator, issue 12 part 2)
      honesty: worst finished-galaxy completeness 0.976, purity 0.997 over every crowd and strategy (goal >= 0.97)

The same on crowds the threshold was not chosen on, ``--seed 2`` (other galaxies, other volunteers)::

         crowd                 strategy  cls/galaxy    p10  median    p90  compl  purity    F1  finished  fin compl  fin purity  saving
       default                 fixed 20      20.000 20.000  20.000 20.000  1.000   0.991 0.996     0.946      1.000       1.000   1.000
       default                  fixed 5       5.000  5.000   5.000  5.000  0.935   0.968 0.951     0.124      1.000       1.000       -
       default                  fixed 6       6.000  6.000   6.000  6.000  0.972   0.968 0.970     0.132      1.000       1.000       -
       default                  fixed 8       8.000  8.000   8.000  8.000  0.990   0.952 0.971     0.376      1.000       1.000       -
       default adaptive (humans, < 0.1)       9.476  5.000   9.000 14.000  0.999   0.999 0.999     0.980      0.998       1.000   2.111
         bulge                 fixed 20      20.000 20.000  20.000 20.000  0.999   1.000 0.999     0.830      1.000       1.000   1.000
         bulge                  fixed 5       5.000  5.000   5.000  5.000  0.937   0.877 0.906     0.036          -           -       -
         bulge                  fixed 6       6.000  6.000   6.000  6.000  0.979   0.925 0.952     0.106      1.000       1.000       -
         bulge                  fixed 8       8.000  8.000   8.000  8.000  0.981   0.988 0.985     0.578      0.995       1.000       -
         bulge adaptive (humans, < 0.1)       9.230  6.000   8.000 14.000  0.997   1.000 0.999     0.972      0.997       1.000   2.167
    distractor                 fixed 20      20.000 20.000  20.000 20.000  1.000   1.000 1.000     0.916      1.000       1.000   1.000
    distractor                  fixed 5       5.000  5.000   5.000  5.000  0.891   0.914 0.903     0.000          -           -       -
    distractor                  fixed 6       6.000  6.000   6.000  6.000  0.950   0.878 0.913     0.078      1.000       1.000       -
    distractor                  fixed 8       8.000  8.000   8.000  8.000  0.972   0.975 0.974     0.340      1.000       1.000       -
    distractor adaptive (humans, < 0.1)      10.084  7.000   9.000 15.000  0.994   1.000 0.997     0.978      0.994       1.000   1.983
        sparse                 fixed 20       7.984  6.000   8.000 10.000  0.979   0.963 0.971     0.312      1.000       1.000   1.000
        sparse                  fixed 5       5.000  5.000   5.000  5.000  0.909   0.981 0.943     0.122          -           -       -
        sparse                  fixed 6       6.000  6.000   6.000  6.000  0.960   0.973 0.967     0.154      1.000       1.000   1.331
        sparse                  fixed 8       7.396  6.000   8.000  8.000  0.979   0.963 0.971     0.220      1.000       1.000   1.080
        sparse adaptive (humans, < 0.1)       7.420  5.000   7.000  9.000  0.979   0.963 0.971     0.352      1.000       1.000   1.076
     confusion                 fixed 20      20.000 20.000  20.000 20.000  1.000   0.983 0.991     0.526      1.000       1.000   1.000
     confusion                  fixed 5       5.000  5.000   5.000  5.000  0.897   0.968 0.931     0.094      1.000       1.000       -
     confusion                  fixed 6       6.000  6.000   6.000  6.000  0.956   0.959 0.957     0.110      1.000       1.000       -
     confusion                  fixed 8       8.000  8.000   8.000  8.000  0.990   0.970 0.980     0.200      1.000       1.000       -
     confusion adaptive (humans, < 0.1)      13.878  6.000  14.000 20.000  0.999   0.986 0.992     0.600      0.994       1.000   1.441
      humans + detector: TODO, not built yet (needs the detector as an annotator, issue 12 part 2)
      honesty: worst finished-galaxy completeness 0.994, purity 1.000 over every crowd and strategy (goal >= 0.97)

Reading: the rule is honest on every crowd and both seeds (finished galaxies: completeness >= 0.976, purity >=
0.997, at 6 volunteers as at 20; the issue reports 1% finished at 6 with purity 0.66 for the old rule), and humans-only adaptive
needs 2.0-2.2x fewer classifications than fixed 20 at matched F1 on the default, bulge and distractor crowds,
1.4-1.5x on the confusion crowd (labels stay contested: tool confusion; ~40% of its galaxies run to the cap) and
~1.1x on the sparse crowd (only 6-10 available). The issue's 4x goal needs the detector as an annotator (not
built). No galaxy retires before 5-7 classifications in practice (p10): with few viewers the clumps that
everyone missed (rate x E[(1 - share)^n] over the real clumps' vote shares) keep the expected errors up.

Choice of the default ``--retire-below 0.1``: at 0.2 (seed 1) the bulge crowd's finished galaxies fall to
completeness 0.959 (adaptive, 8.1 classifications per galaxy) and 0.969 (fixed 8): dishonest, for ~10% fewer
classifications. 0.1 is honest on every crowd of both seeds with a margin (worst 0.976, bulge at fixed 8).
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
from clumptool.aggregation.pipeline import AggregateOptions  # noqa: E402
from clumptool.aggregation.replay import CAP, adaptive_stops, aggregate_cut, queue_rank, rule_finished  # noqa: E402,F401
from clumptool.aggregation.stopping import DEFAULT_MIN_CLASSIFICATIONS, DEFAULT_RETIRE_BELOW  # noqa: E402
from clumptool.simulation.config import CROWDS  # noqa: E402

FIXED = (5, 6, 8)










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
    rank = queue_rank(cls)
    sid = cls["subject_ids"].astype("int64").to_numpy()
    available = pd.Series(sid).value_counts()
    rows = []

    def fixed(k: int, name: str) -> None:
        res = aggregate_cut(project / "subjects.csv", cls, rank < k, tmp, options)
        s = res.subjects
        n_per = s.set_index("subject_id")["n_viewers"].reindex(available.index).fillna(0)
        rows.append(_line(crowd, name, n_per, res, truth, radius, set(s.loc[s["is_finished"], "subject_id"])))

    fixed(CAP, f"fixed {CAP}")
    for k in FIXED:
        fixed(k, f"fixed {k}")

    # adaptive: rounds k = min_classifications .. CAP
    stop, retired = adaptive_stops(sid, rank, rule_finished(project / "subjects.csv", cls, options, tmp),
                                   options.min_classifications)
    res = aggregate_cut(project / "subjects.csv", cls, rank < stop.reindex(sid).to_numpy(), tmp, options)
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
