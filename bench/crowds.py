"""Consensus accuracy on every simulated crowd (``bench/aggregation.py --crowds``).

For each crowd of ``clumptool simulate --crowd`` (default, bulge, distractor, sparse, confusion), at 20 and at 8
volunteers per subject (the sparse crowd draws its own 6-10), simulate an export without images, run every
method on it and score the accepted clumps against truth.csv:

* completeness: share of the *detectable* true clumps (peak S/N >= 4, what volunteers can see) matched within
  the radius (one-to-one); ``compl(all)`` the share of all injected clumps;
* purity: share of accepted clumps matching a true clump; F1 from purity and completeness;
* pos err: median distance of matched clumps (px); label acc: share of matched clumps with the true label;
* false on bulge / object / sky: unmatched accepted clumps within the radius of the galaxy's centre, of a star,
  companion or noise peak (objects.csv), or elsewhere: what the false clumps were made of;
* skill recovery (clumpscout only): Pearson r of the estimated and true per-volunteer false-negative rate
  (1 - detection rate) and false-positive share (marks on no clump / all marks, from marks_truth.csv), over
  volunteers with >= 30 classifications.

Methods: ``clumpscout`` (clumptool's default consensus, default options), ``dbscan`` and ``hdbscan``
(clumptool's reducers, default options), and ``panoptes-dbscan``: panoptes_aggregation's default
point_reducer_dbscan (eps 5 px, min_samples 3) run per frame *and per tool*, as Zooniverse's pipeline does: every
cluster is a clump labelled by its tool. panoptes_aggregation cannot be installed beside clumptool, so this is
``reduce_export`` at those parameters, which equals the real reducer on the fixtures bench/reducer_fixtures.py makes
with it (tests/aggregation/test_reducers.py); it is the ``dbscan`` row at panoptes' defaults, named for the table.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.evaluation import match_to_truth
from clumptool.aggregation.export import read_export
from clumptool.aggregation.pipeline import AggregateOptions, aggregate
from clumptool.aggregation.reducers import reduce_export
from clumptool.simulation.config import CROWDS

CLUMPTOOL = [sys.executable, "-m", "clumptool.cli"]
METHODS = ("clumpscout", "dbscan", "hdbscan", "panoptes-dbscan")
GOAL = "goal: completeness >= 0.97 and purity >= 0.97 on every crowd at 20 volunteers, F1 >= 0.93 at 8"


def simulate_crowd(out: Path, crowd: str, vps: int | None, galaxies: int, seed: int,
                   image_size: int | None = None) -> Path:
    """A simulated project without images (reused when ``out`` already holds one); ``image_size``: the image
    side in px (default the simulator's 400; 200 is the active-learning loop bench's project)."""
    if not (out / "classifications.csv").exists():
        cmd = [*CLUMPTOOL, "simulate", "--out", str(out), "--galaxies", str(galaxies), "--seed", str(seed),
               "--crowd", crowd, "--no-images", "--quiet"]
        if vps is not None:
            cmd += ["--volunteers-per-subject", str(vps)]
        if image_size is not None:
            cmd += ["--image-size", str(image_size)]
        subprocess.run(cmd, check=True)
    return out


def panoptes_dbscan(classifications: Path, eps: float = 5.0, min_samples: int = 3) -> pd.DataFrame:
    """panoptes_aggregation's point_reducer_dbscan at its defaults: clusters per subject, frame and tool
    (``reduce_export``, equal to the real reducer on tests/aggregation/test_reducers.py's fixtures)."""
    clumps = reduce_export(read_export(classifications), "dbscan", {"eps": eps, "min_samples": min_samples})[0]
    return clumps[clumps["accepted"]]


def false_kinds(found: pd.DataFrame, truth: pd.DataFrame, objects: pd.DataFrame, radius: float) -> dict:
    """Unmatched accepted clumps, by what lies under them: the bulge, another object, or nothing."""
    counts = {"bulge": 0, "object": 0, "sky": 0}
    t_by = {k: g[["x", "y"]].to_numpy(float) for k, g in truth.groupby("subject_id")}
    o_by = {k: g for k, g in objects.groupby("subject_id")}
    for sid, f in found.groupby("subject_id"):
        xy = f[["x", "y"]].to_numpy(float)
        t = t_by.get(sid)
        if t is not None and len(t):
            d = np.hypot(xy[:, None, 0] - t[None, :, 0], xy[:, None, 1] - t[None, :, 1]).min(axis=1)
            xy = xy[d > radius]  # near a true clump: counted as matched (or a duplicate), not a false object
        o = o_by.get(sid)
        for x, y in xy:
            kind = "sky"
            if o is not None:
                d = np.hypot(o["x"].to_numpy() - x, o["y"].to_numpy() - y)
                if d.min() <= radius:
                    kind = "bulge" if o["kind"].to_numpy()[d.argmin()] == "bulge" else "object"
            counts[kind] += 1
    return counts


def skill_recovery(project: Path, vols: pd.DataFrame, min_n: int = 30) -> tuple[float, float, int]:
    """Pearson r of estimated vs true p_fn and p_fp (share of a volunteer's marks on no clump)."""
    vt = pd.read_csv(project / "volunteers_truth.csv")
    mt = pd.read_csv(project / "marks_truth.csv", usecols=["user_name", "target"])
    fp_share = (mt["target"] != "clump").groupby(mt["user_name"]).mean().rename("true_p_fp")
    vt = vt.join(fp_share, on="user_name")
    vt["true_p_fn"] = 1 - vt["detection_rate"]
    m = vols.merge(vt[["user_name", "true_p_fn", "true_p_fp"]], on="user_name", how="inner")
    m = m[m["n_classifications"] >= min_n].dropna(subset=["true_p_fp"])
    if len(m) < 3:
        return float("nan"), float("nan"), len(m)
    return (float(np.corrcoef(m["p_fn"], m["true_p_fn"])[0, 1]),
            float(np.corrcoef(m["p_fp"], m["true_p_fp"])[0, 1]), len(m))


def score_project(project: Path, crowd: str, vps: str, radius: float) -> list[dict]:
    truth = pd.read_csv(project / "truth.csv")
    detectable = truth[truth["detectable"].astype(bool)]
    objects = pd.read_csv(project / "objects.csv")
    cls, subjects = project / "classifications.csv", project / "subjects.csv"
    rows = []
    for method in METHODS:
        t = time.perf_counter()
        r_fn = r_fp = float("nan")
        if method == "panoptes-dbscan":
            found = panoptes_dbscan(cls)
        else:
            res = aggregate(cls, subjects, options=AggregateOptions(method=method))
            found = res.clumps[res.clumps["accepted"]]
            if method == "clumpscout":
                r_fn, r_fp, _ = skill_recovery(project, res.volunteers)
        sec = time.perf_counter() - t
        all_ = match_to_truth(found, truth, radius)
        det = match_to_truth(found, detectable, radius)
        p, c = all_.purity, det.completeness
        fk = false_kinds(found, truth, objects, radius)
        rows.append({"crowd": crowd, "vps": vps, "method": method, "compl": c, "compl(all)": all_.completeness,
                     "purity": p, "F1": 2 * p * c / (p + c) if p + c else 0.0, "pos err": all_.median_offset_px,
                     "label acc": all_.label_accuracy, "false bulge": fk["bulge"], "false object": fk["object"],
                     "false sky": fk["sky"], "r(p_fn)": r_fn, "r(p_fp)": r_fp, "s": sec})
    return rows


def run_crowds(work: Path, galaxies: int, seed: int, radius: float, crowds: tuple[str, ...] = CROWDS) -> pd.DataFrame:
    """Every crowd at 20 and 8 volunteers per subject (sparse: its own 6-10), every method; prints the table."""
    print(f"\n== Consensus on every crowd: {galaxies:,} galaxies each, match radius {radius:g} px ({GOAL})")
    rows = []
    for crowd in crowds:
        for vps in ((None,) if crowd == "sparse" else (20, 8)):
            label = "6-10" if vps is None else str(vps)
            t = time.perf_counter()
            project = simulate_crowd(work / f"{crowd}-{label}", crowd, vps, galaxies, seed)
            rows += score_project(project, crowd, label, radius)
            print(f"  {crowd:<10} {label:>4} volunteers/subject: {time.perf_counter() - t:5.1f} s", flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.drop(columns="s").to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    ours = table[table["method"] == "clumpscout"]
    at20 = ours[ours["vps"] == "20"]
    at8 = ours[ours["vps"].isin(["8", "6-10"])]
    print(f"\n  clumpscout worst crowd at 20: completeness {at20['compl'].min():.3f} "
          f"({at20.loc[at20['compl'].idxmin(), 'crowd']}), purity {at20['purity'].min():.3f} "
          f"({at20.loc[at20['purity'].idxmin(), 'crowd']}); worst F1 at 8 (or 6-10): {at8['F1'].min():.3f} "
          f"({at8.loc[at8['F1'].idxmin(), 'crowd']})")
    return table
