"""Pool several whole-loop runs of bench/active_learning.py (one per ``--seed``) into one table with an interval.

    for s in 0 1 2 3 4 5; do .venv/bin/python bench/active_learning.py --threads 1 --strategies entropy,random \\
        --policies fixed20,lean,lean-detector --reference 300 --no-speed --seed $s --workdir /tmp/loop-s$s; done
    .venv/bin/python bench/al_pool.py /tmp/loop-s* --out /tmp/pooled

Why: one run's detectors move by 0.1-0.5 F1 between near-identical label sets (stops 17-20), more than the
labelling policies change, so a single run cannot tell 5x from 4x. This averages the runs' learning curves per
round (classifications spent and test F1, ``al_loop.mean_curves``), takes the whole-loop table on the mean curves
(classifications each run needs to reach (random, <first policy>)'s mean final F1) and draws the runs with
replacement for a 90 % interval and the share of draws at the 5x goal (``al_loop.pooled_whole_loop``). Prints
the per-seed factors too, and writes ``pooled_curves.csv``, ``pooled_whole_loop.csv``, ``per_seed.csv`` and
``pooled_classification_curves.png`` into ``--out``. Every figure is read from the runs' ``curves.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from al_loop import mean_curves, plot_learning_curves, pooled_whole_loop, whole_loop_table  # noqa: E402

from clumptool.common.atomic import atomic_path  # noqa: E402
from clumptool.common.errors import ClumptoolError  # noqa: E402


def read_runs(folders: list[Path]) -> tuple[list[pd.DataFrame], list[dict]]:
    """Each folder's ``curves.csv`` and ``loop_config.json``; the settings must agree except for the seed."""
    curves, configs = [], []
    for f in folders:
        if not (f / "curves.csv").is_file():
            raise ClumptoolError(f"{f}: no curves.csv (not a finished bench/active_learning.py --workdir)")
        curves.append(pd.read_csv(f / "curves.csv"))
        cfg_path = f / "loop_config.json"
        configs.append(json.loads(cfg_path.read_text()) if cfg_path.is_file() else {})
    first = {k: v for k, v in configs[0].get("config", {}).items() if k != "seed"}
    for f, c in zip(folders[1:], configs[1:], strict=True):
        other = {k: v for k, v in c.get("config", {}).items() if k != "seed"}
        if first and other and other != first:
            diff = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
            raise ClumptoolError(f"{f}: loop settings differ from {folders[0]}'s in {', '.join(diff)}")
    return curves, configs


def per_galaxy_costs(curves: pd.DataFrame) -> pd.DataFrame:
    """Per run: classifications per galaxy of round 0 and per galaxy selected in the later rounds."""
    rows = []
    for run, g in curves.groupby("run", sort=False):
        g = g.sort_values("round")
        first, last = g.iloc[0], g.iloc[-1]
        rows.append({"run": run, "round0": first["classifications"] / first["n_labelled"],
                     "selected": (last["classifications"] - first["classifications"])
                     / max(1, last["n_labelled"] - first["n_labelled"])})
    return pd.DataFrame(rows).set_index("run")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="work folders of bench/active_learning.py runs")
    ap.add_argument("--out", type=Path, required=True, help="folder for the pooled tables and plot")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap draws of the runs")
    ap.add_argument("--goal", type=float, default=5.0, help="the factor whose share of draws is reported")
    args = ap.parse_args(argv)
    try:
        curves, configs = read_runs(args.folders)
    except (ClumptoolError, ValueError, OSError) as exc:
        ap.error(str(exc))
    names = [str(f) for f in args.folders]
    seeds = [c.get("config", {}).get("seed", f.name) for c, f in zip(configs, args.folders, strict=True)]
    runs = list(dict.fromkeys(curves[0]["run"]))
    policies = list(dict.fromkeys(curves[0]["policy"]))
    baseline = f"random, {policies[0]}"
    if baseline not in runs:
        ap.error(f"no ({baseline}) run to compare with: the runs need the 'random' strategy")
    try:
        pooled = pooled_whole_loop(curves, baseline, args.resamples, goal=args.goal, names=names)
    except ClumptoolError as exc:
        ap.error(str(exc))
    mean = mean_curves(curves, names)

    per_seed = []
    for seed, c in zip(seeds, curves, strict=True):
        t = whole_loop_table(c, runs, baseline)
        per_seed.append(t.assign(seed=seed))
    per_seed = pd.concat(per_seed)
    costs = pd.concat([per_galaxy_costs(c).assign(seed=s) for s, c in zip(seeds, curves, strict=True)])

    print(f"{len(curves)} loop runs (seeds {', '.join(map(str, seeds))}); baseline ({baseline})\n")
    print("classifications per galaxy (mean over the runs; round 0 = the initial random galaxies):")
    print(costs.groupby(level=0, sort=False)[["round0", "selected"]].mean().round(2).to_string())
    for metric, g in per_seed.groupby("metric", sort=False):
        wide = g.pivot(index="run", columns="seed", values="factor").reindex(runs)
        print(f"\nper seed, factor to reach the seed's own ({baseline}) final {metric} (- = never):")
        print(wide.to_string(float_format=lambda v: f"{v:.2f}x", na_rep="-"))
    for metric, g in pooled.groupby("metric", sort=False):
        print(f"\npooled ({metric}; mean curves over the runs, target = the baseline's mean final "
              f"{g['target'].iloc[0]:.3f}; 90 % bootstrap interval over the runs, never = 0):")
        for _, r in g.iterrows():
            reach = "never" if pd.isna(r["classifications_to_target"]) else f"{r['classifications_to_target']:.0f}"
            factor = "never" if pd.isna(r["factor"]) else f"{r['factor']:.2f}x"
            print(f"  {r['run']:>24}: final {r['final_value']:.3f} with {r['final_classifications']:5d}; target "
                  f"with {reach:>5} -> {factor:>6} [{r['factor_low']:.2f}-{r['factor_high']:.2f}], "
                  f"P(>= {args.goal:g}x) {r['p_goal']:.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("pooled_curves.csv", mean), ("pooled_whole_loop.csv", pooled), ("per_seed.csv", per_seed)):
        with atomic_path(args.out / name) as tmp:
            frame.to_csv(tmp, index=False)
    target = float(pooled[pooled["metric"] == "f1"]["target"].iloc[0])
    fig = plot_learning_curves(mean, args.out / "pooled_classification_curves.png", x="classifications", key="run",
                               title=f"mean of {len(curves)} loop runs", hline=target)
    print(f"\nwrote {args.out}/pooled_curves.csv, pooled_whole_loop.csv, per_seed.csv and {fig.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
