"""Aggregation benchmark: accuracy against known truth, skill recovery, and speed against panoptes_aggregation.

    .venv/bin/python bench/aggregation.py                 # accuracy + 100k speed comparison (~5 min)
    .venv/bin/python bench/aggregation.py --full-scale    # also a Clump Scout-sized export (1.7M rows)
    .venv/bin/python bench/aggregation.py --crowds        # every simulated crowd at 20 and 8 volunteers (~6 min)
    .venv/bin/python bench/aggregation.py --speed-only --baseline 2ab8aa3   # also time that git ref, runs alternated

Data come from `clumptool simulate --no-images` (realistic volunteers: varied skill, careless and random
clickers, ~20% tool confusion, anonymous volunteers and repeats). panoptes_aggregation is installed into a
throw-away virtual environment (it is not a clumptool dependency) and timed on the same export, in the same run.
Every figure printed here is measured by this script.

Measured 2026-11-24 on a 2-core machine (--full-scale): completeness 0.998 of detectable clumps (0.977 of all
injected, some below the S/N volunteers click), purity 1.000, F1 0.988 (dbscan 0.844); skill recovery
r = 0.972 (>= 30 classifications); 100k classifications in 2.5 / 2.9 / 2.6 s (median of three) vs
panoptes_aggregation 62.0 / 64.8 / 60.1 s = 24.8x / 22.4x / 22.7x in three runs (a shared machine: expect +-10%);
1.71M in 30 s, peak 2.9 GB over all
processes (goals < 120 s, < 4 GB), and there completeness 0.974 of all injected clumps, purity 1.000.

Speed and memory measured 2026-12-02 at 03:30-03:55 UTC (--speed-only --full-scale --baseline 2ab8aa3) on the 2-core
machine shared with other heavy jobs (load average 4-8: absolute times are several times an idle run's; the ratios
to the baseline, alternated in the same run, are what holds). 100k classifications: this tree 19.0 s (median of
15.0 / 19.0 / 23.2 s, peak 947 MB) against 2ab8aa3's 16.4 s (12.8 / 16.4 / 16.8 s, 696 MB): 1.16x its time, and
1.27x in a run at 04:02 under less load (12.1 s against 9.5 s, peak 944 MB); against that day's earlier tree 7d39060,
0.87x (9.7 s against 11.1 s, peak 1,117 MB), which took 2.06x 2ab8aa3's time in a run at 02:29. The ambiguous
groups are now split all at once in numpy arrays (aggregation/split.py) instead of one by one in forked workers; what
is left above 2ab8aa3 is start-up: the imports at module top run before the reading, where 2ab8aa3 imported in a
thread while reading. scikit-learn, loaded for the DBSCAN/HDBSCAN reducers, is about 1.1 s of CPU of it on the loaded
machine and 50 MB in every process, but not all: a trial copy that imported it only for those methods took 1.21x
(04:04, 7.8 s against 6.5 s).
panoptes_aggregation extract + reduce took 460 s in that run: 24.2x clumptool. Clump Scout size (1.71M
classifications): 190.8 s, peak 1,906 MB summed over all processes, against 2ab8aa3's 191.7 s and 3,247 MB in the
same run (the day's earlier tree: 72 s and 4.06 GB on a quieter machine; its consensus workers, forked from a process
holding the whole export, counted that export again each; back to back at 04:00, 7d39060 took 138.3 s and 4,260 MB,
this tree 115.8 s and 1,857 MB, with identical output tables).

Idle machine, 2026-12-02 04:10-04:20 UTC, after aggregate stopped importing scikit-learn (only --method
dbscan|hdbscan need it) and the uploader at start-up (`--speed-only --baseline 2ab8aa3`, nothing else running):
100k classifications in 7.0 s (median of 7.21 / 7.00 / 6.27 s, peak 831 MB) against 2ab8aa3's 5.5 s (5.78 / 5.14 /
5.54 s, 694 MB): 1.26x its time; panoptes_aggregation extract + reduce 151.9 s (51.2 + 100.7 s): **21.7x** clumptool
(goal >= 20x). The same command just before that change: 9.1 s against 6.2 s (1.46x) and 17.0x. (This machine is
about twice as slow as the one of 2026-11-24: panoptes_aggregation took 152-154 s here against 60-65 s there.)

Stop 22 (2026-12-02 22:00 UTC, a quiet 2-core machine; ``--speed-only --skip-panoptes --full-scale --baseline
80fee4e``, the tree before the single-click counts of stop 21, which every clumpscout aggregate now makes for
``--reference``): 100k classifications in 2.6 s (median of 2.37 / 2.62 / 2.78 s, peak 771 MB) against 80fee4e's
2.9 s (2.63 / 2.93 / 3.05 s, 770 MB), 0.90x its time, within the runs' spread; the Clump Scout-sized export (1.71M)
in 35.6 s against 31.5 s (one run each, 1.13x; peak 1,959 MB against 1,813 MB): the count is one pass over the
spots, a few seconds at that size.

Per-crowd figures of the current consensus (issue 11: central source, skills re-estimated from the judged clumps,
learned prior odds, at least 2 volunteers per clump, per-volunteer click offsets), measured 2026-12-01 on the shared
2-core machine, 1,000 galaxies per crowd, seed 1, match radius 5 px (columns as in the baseline below). Goal met:
worst crowd at 20 volunteers completeness 0.996 (bulge) and purity 0.983 (default), both >= 0.97; worst F1 at 8
(or 6-10) 0.977 (default) >= 0.93. The baseline's bulge/distractor purity at 20 was 0.150/0.147, and F1 at 8 was
0.41-0.51.

    .venv/bin/python bench/aggregation.py --crowds --galaxies 1000

         crowd  vps          method  compl  compl(all)  purity    F1  pos err  label acc  false bulge  false object  false sky  r(p_fn)  r(p_fp)
       default   20      clumpscout  1.000       0.984   0.983 0.991    0.650      0.991            0            24          0    0.970    0.977
       default   20          dbscan  0.996       0.975   0.661 0.795    0.835      0.831            0            21          6        -        -
       default   20         hdbscan  0.657       0.636   0.690 0.673    1.170      0.899            0             0        316        -        -
       default   20 panoptes-dbscan  0.996       0.975   0.661 0.795    0.835      0.831            0            21          6        -        -
       default    8      clumpscout  0.996       0.973   0.958 0.977    1.068      0.924            0            27         25    0.975    0.984
       default    8          dbscan  0.907       0.878   0.920 0.913    1.214      0.916            0             3          7        -        -
       default    8         hdbscan  0.218       0.211   0.634 0.325    1.302      0.977            1             1        169        -        -
       default    8 panoptes-dbscan  0.907       0.878   0.920 0.913    1.214      0.916            0             3          7        -        -
         bulge   20      clumpscout  0.996       0.966   1.000 0.998    0.643      0.994            0             0          0    0.972    0.986
         bulge   20          dbscan  0.996       0.975   0.572 0.727    0.835      0.832          288            50         12        -        -
         bulge   20         hdbscan  0.636       0.617   0.580 0.607    1.171      0.911           43             4        489        -        -
         bulge   20 panoptes-dbscan  0.996       0.975   0.572 0.727    0.835      0.832          288            50         12        -        -
         bulge    8      clumpscout  0.969       0.940   0.998 0.984    0.979      0.925            1             1          0    0.979    0.984
         bulge    8          dbscan  0.907       0.878   0.895 0.901    1.214      0.916           37             3          7        -        -
         bulge    8         hdbscan  0.213       0.206   0.575 0.311    1.320      0.983            1             1        212        -        -
         bulge    8 panoptes-dbscan  0.907       0.878   0.895 0.901    1.214      0.916           37             3          7        -        -
    distractor   20      clumpscout  0.996       0.964   1.000 0.998    0.674      0.990            0             0          0    0.975    0.987
    distractor   20          dbscan  0.999       0.976   0.625 0.768    0.847      0.846            0           191          4        -        -
    distractor   20         hdbscan  0.649       0.629   0.634 0.641    1.160      0.907            0            16        409        -        -
    distractor   20 panoptes-dbscan  0.999       0.976   0.625 0.768    0.847      0.846            0           191          4        -        -
    distractor    8      clumpscout  0.979       0.951   0.996 0.987    1.078      0.922            0             3          0    0.984    0.987
    distractor    8          dbscan  0.871       0.843   0.932 0.900    1.272      0.919            0            16          1        -        -
    distractor    8         hdbscan  0.192       0.185   0.589 0.289    1.339      0.992            0             0        183        -        -
    distractor    8 panoptes-dbscan  0.871       0.843   0.932 0.900    1.272      0.919            0            16          1        -        -
        sparse 6-10      clumpscout  0.993       0.969   0.963 0.978    1.031      0.948            0            24         20    0.957    0.980
        sparse 6-10          dbscan  0.882       0.856   0.912 0.897    1.171      0.926            0             3          3        -        -
        sparse 6-10         hdbscan  0.243       0.234   0.649 0.354    1.268      0.982            0             0        176        -        -
        sparse 6-10 panoptes-dbscan  0.882       0.856   0.912 0.897    1.171      0.926            0             3          3        -        -
     confusion   20      clumpscout  1.000       0.977   0.990 0.995    0.758      0.883            0            12          2    0.976    0.984
     confusion   20          dbscan  0.992       0.965   0.571 0.725    1.305      0.715            0            11         92        -        -
     confusion   20         hdbscan  0.746       0.723   0.568 0.645    1.463      0.721            0             2        443        -        -
     confusion   20 panoptes-dbscan  0.992       0.965   0.571 0.725    1.305      0.715            0            11         92        -        -
     confusion    8      clumpscout  0.993       0.969   0.967 0.980    1.186      0.799            1            18         16    0.960    0.975
     confusion    8          dbscan  0.618       0.597   0.922 0.740    2.017      0.800            0             1         16        -        -
     confusion    8         hdbscan  0.079       0.076   0.451 0.134    1.812      0.897            0             0        130        -        -
     confusion    8 panoptes-dbscan  0.618       0.597   0.922 0.740    2.017      0.800            0             1         16        -        -
      clumpscout worst crowd at 20: completeness 0.996 (bulge), purity 0.983 (default); worst F1 at 8 (or 6-10): 0.977 (default)

The same at 3,000 galaxies per crowd (the learned weights no longer drift with the size of the export; the old
consensus got worse with size): goal met, worst at 20 completeness 0.996 (bulge) and purity 0.995 (confusion),
worst F1 at 8 (or 6-10) 0.959 (distractor; its completeness at 8 is the weakest figure, 0.926):

    .venv/bin/python bench/aggregation.py --crowds --galaxies 3000

         crowd  vps          method  compl  compl(all)  purity    F1  pos err  label acc  false bulge  false object  false sky  r(p_fn)  r(p_fp)
       default   20      clumpscout  1.000       0.988   0.996 0.998    0.683      0.996            0            15          3    0.969    0.988
       default   20          dbscan  0.999       0.983   0.714 0.832    0.834      0.886            0            40         24        -        -
       default   20         hdbscan  0.644       0.630   0.733 0.686    1.144      0.939            0             1        756        -        -
       default   20 panoptes-dbscan  0.999       0.983   0.714 0.832    0.834      0.886            0            40         24        -        -
       default    8      clumpscout  0.996       0.977   0.963 0.979    1.082      0.945            0            58         70    0.964    0.974
       default    8          dbscan  0.883       0.859   0.944 0.912    1.293      0.941            0             2         11        -        -
       default    8         hdbscan  0.240       0.233   0.659 0.352    1.380      0.993            1             0        496        -        -
       default    8 panoptes-dbscan  0.883       0.859   0.944 0.912    1.293      0.941            0             2         11        -        -
         bulge   20      clumpscout  0.996       0.971   1.000 0.998    0.673      0.996            0             0          0    0.970    0.988
         bulge   20          dbscan  0.999       0.983   0.588 0.740    0.835      0.886         1118           116         50        -        -
         bulge   20         hdbscan  0.658       0.643   0.626 0.642    1.148      0.941          199             3       1183        -        -
         bulge   20 panoptes-dbscan  0.999       0.983   0.588 0.740    0.835      0.886         1118           116         50        -        -
         bulge    8      clumpscout  0.985       0.962   0.994 0.989    1.071      0.946            1             2         11    0.966    0.980
         bulge    8          dbscan  0.883       0.859   0.937 0.909    1.293      0.941           26             4         11        -        -
         bulge    8         hdbscan  0.238       0.231   0.625 0.345    1.399      0.988            2             1        570        -        -
         bulge    8 panoptes-dbscan  0.883       0.859   0.937 0.909    1.293      0.941           26             4         11        -        -
    distractor   20      clumpscout  0.997       0.972   1.000 0.998    0.719      0.994            0             0          0    0.973    0.991
    distractor   20          dbscan  0.998       0.983   0.651 0.788    0.875      0.890            0           729         26        -        -
    distractor   20         hdbscan  0.623       0.608   0.633 0.628    1.161      0.939            0            47       1268        -        -
    distractor   20 panoptes-dbscan  0.998       0.983   0.651 0.788    0.875      0.890            0           729         26        -        -
    distractor    8      clumpscout  0.926       0.901   0.995 0.959    1.144      0.933            0            10          3    0.967    0.976
    distractor    8          dbscan  0.796       0.775   0.920 0.854    1.352      0.942            0           141         10        -        -
    distractor    8         hdbscan  0.145       0.141   0.519 0.227    1.482      0.985            0             2        537        -        -
    distractor    8 panoptes-dbscan  0.796       0.775   0.920 0.854    1.352      0.942            0           141         10        -        -
        sparse 6-10      clumpscout  0.994       0.976   0.968 0.980    1.109      0.946            0            71         43    0.963    0.978
        sparse 6-10          dbscan  0.859       0.837   0.940 0.897    1.298      0.946            0             6          9        -        -
        sparse 6-10         hdbscan  0.234       0.228   0.671 0.347    1.378      0.987            1             1        457        -        -
        sparse 6-10 panoptes-dbscan  0.859       0.837   0.940 0.897    1.298      0.946            0             6          9        -        -
     confusion   20      clumpscout  0.999       0.984   0.995 0.997    0.681      0.801            0            16          3    0.967    0.985
     confusion   20          dbscan  0.992       0.971   0.540 0.699    1.215      0.656            0            32        231        -        -
     confusion   20         hdbscan  0.769       0.749   0.531 0.628    1.320      0.653            2             3       1309        -        -
     confusion   20 panoptes-dbscan  0.992       0.971   0.540 0.699    1.215      0.656            0            32        231        -        -
     confusion    8      clumpscout  0.989       0.971   0.944 0.966    1.205      0.734            0            96        106    0.956    0.973
     confusion    8          dbscan  0.595       0.577   0.899 0.716    2.122      0.726            0             9         75        -        -
     confusion    8         hdbscan  0.075       0.072   0.361 0.124    1.966      0.893            0             0        529        -        -
     confusion    8 panoptes-dbscan  0.595       0.577   0.899 0.716    2.122      0.726            0             9         75        -        -
      clumpscout worst crowd at 20: completeness 0.996 (bulge), purity 0.995 (confusion); worst F1 at 8 (or 6-10): 0.959 (distractor)

Per-crowd baseline (``--crowds``, bench/crowds.py; measured 2026-12-01 on the shared 2-core machine, 1,000 galaxies
per crowd, seed 1, match radius 5 px; ~4 min with the exports cached, ~6 min from scratch). compl = completeness of detectable clumps, compl(all) of all
injected; false bulge/object/sky = accepted clumps matching no true clump that lie on the galaxy's centre, on a
star/companion/noise peak, or on nothing (duplicates near a true clump are not counted there); r(p_fn), r(p_fp) =
skill recovery (clumpscout only; volunteers with >= 30 classifications). clumptool's `dbscan` is already
per-tool (panoptes-style), so it equals the independent sklearn `panoptes-dbscan` row by construction. This is
the baseline the next consensus must beat (goal: completeness >= 0.97 and purity >= 0.97 on every crowd at 20
volunteers, F1 >= 0.93 at 8):

    .venv/bin/python bench/aggregation.py --crowds --galaxies 1000

         crowd  vps          method  compl  compl(all)  purity    F1  pos err  label acc  false bulge  false object  false sky  r(p_fn)  r(p_fp)
       default   20      clumpscout  0.996       0.966   1.000 0.998    0.634      0.993            0             0          0    0.970    0.975
       default   20          dbscan  0.996       0.975   0.661 0.795    0.835      0.831            0            21          6        -        -
       default   20         hdbscan  0.657       0.636   0.690 0.673    1.170      0.899            0             0        316        -        -
       default   20 panoptes-dbscan  0.996       0.975   0.661 0.795    0.835      0.831            0            21          6        -        -
       default    8      clumpscout  0.999       0.989   0.336 0.503    1.374      0.924            8           206       2529    0.526   -0.052
       default    8          dbscan  0.907       0.878   0.920 0.913    1.214      0.916            0             3          7        -        -
       default    8         hdbscan  0.218       0.211   0.634 0.325    1.302      0.977            1             1        169        -        -
       default    8 panoptes-dbscan  0.907       0.878   0.920 0.913    1.214      0.916            0             3          7        -        -
         bulge   20      clumpscout  1.000       0.995   0.150 0.260    0.660      0.991          983           762       6237    0.529    0.308
         bulge   20          dbscan  0.996       0.975   0.572 0.727    0.835      0.832          288            50         12        -        -
         bulge   20         hdbscan  0.636       0.617   0.580 0.607    1.171      0.911           43             4        489        -        -
         bulge   20 panoptes-dbscan  0.996       0.975   0.572 0.727    0.835      0.832          288            50         12        -        -
         bulge    8      clumpscout  0.998       0.988   0.259 0.411    1.390      0.924          773           369       2845    0.386   -0.085
         bulge    8          dbscan  0.907       0.878   0.895 0.901    1.214      0.916           37             3          7        -        -
         bulge    8         hdbscan  0.213       0.206   0.575 0.311    1.320      0.983            1             1        212        -        -
         bulge    8 panoptes-dbscan  0.907       0.878   0.895 0.901    1.214      0.916           37             3          7        -        -
    distractor   20      clumpscout  1.000       0.995   0.147 0.257    0.692      0.985           18          2089       6022    0.323    0.308
    distractor   20          dbscan  0.999       0.976   0.625 0.768    0.847      0.846            0           191          4        -        -
    distractor   20         hdbscan  0.649       0.629   0.634 0.641    1.160      0.907            0            16        409        -        -
    distractor   20 panoptes-dbscan  0.999       0.976   0.625 0.768    0.847      0.846            0           191          4        -        -
    distractor    8      clumpscout  0.999       0.989   0.272 0.428    1.422      0.917           10          1117       2589    0.117   -0.087
    distractor    8          dbscan  0.871       0.843   0.932 0.900    1.272      0.919            0            16          1        -        -
    distractor    8         hdbscan  0.192       0.185   0.589 0.289    1.339      0.992            0             0        183        -        -
    distractor    8 panoptes-dbscan  0.871       0.843   0.932 0.900    1.272      0.919            0            16          1        -        -
        sparse 6-10      clumpscout  0.997       0.983   0.342 0.509    1.352      0.944           11           217       2421    0.553    0.194
        sparse 6-10          dbscan  0.882       0.856   0.912 0.897    1.171      0.926            0             3          3        -        -
        sparse 6-10         hdbscan  0.243       0.234   0.649 0.354    1.268      0.982            0             0        176        -        -
        sparse 6-10 panoptes-dbscan  0.882       0.856   0.912 0.897    1.171      0.926            0             3          3        -        -
     confusion   20      clumpscout  0.991       0.959   1.000 0.996    1.107      0.883            0             0          0    0.973    0.979
     confusion   20          dbscan  0.992       0.965   0.571 0.725    1.305      0.715            0            11         92        -        -
     confusion   20         hdbscan  0.746       0.723   0.568 0.645    1.463      0.721            0             2        443        -        -
     confusion   20 panoptes-dbscan  0.992       0.965   0.571 0.725    1.305      0.715            0            11         92        -        -
     confusion    8      clumpscout  0.961       0.950   0.310 0.468    2.102      0.783           13           159       2754    0.750    0.167
     confusion    8          dbscan  0.618       0.597   0.922 0.740    2.017      0.800            0             1         16        -        -
     confusion    8         hdbscan  0.079       0.076   0.451 0.134    1.812      0.897            0             0        130        -        -
     confusion    8 panoptes-dbscan  0.618       0.597   0.922 0.740    2.017      0.800            0             1         16        -        -

      clumpscout worst crowd at 20: completeness 0.991 (confusion), purity 0.147 (distractor); worst F1 at 8 (or 6-10): 0.411 (bulge)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.evaluation import match_to_truth
from clumptool.aggregation.pipeline import AggregateOptions, aggregate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import run_measured  # noqa: E402

CLUMPTOOL = [sys.executable, "-m", "clumptool.cli"]


def simulate(out: Path, galaxies: int, seed: int) -> Path:
    if not (out / "classifications.csv").exists():
        t = time.perf_counter()
        subprocess.run([*CLUMPTOOL, "simulate", "--out", str(out), "--galaxies", str(galaxies), "--seed", str(seed),
                        "--no-images"], check=True, stdout=subprocess.DEVNULL)
        print(f"  simulated {galaxies:,} galaxies in {time.perf_counter() - t:.1f} s -> {out}")
    return out


def accuracy(project: Path, radius: float) -> None:
    truth = pd.read_csv(project / "truth.csv")
    if "detectable" in truth:
        detectable = truth[truth["detectable"].astype(bool)]
    else:
        detectable = truth
    cls = project / "classifications.csv"
    subjects = project / "subjects.csv"
    print(f"\n== Accuracy against truth (match radius {radius:g} px; {len(truth):,} true clumps, "
          f"{len(detectable):,} detectable)")
    rows = []
    for method in ("clumpscout", "dbscan", "hdbscan"):
        t = time.perf_counter()
        res = aggregate(cls, subjects, options=AggregateOptions(method=method))
        sec = time.perf_counter() - t
        found = res.clumps[res.clumps["accepted"]]
        all_ = match_to_truth(found, truth, radius)
        det = match_to_truth(found, detectable, radius)
        rows.append({"method": method, "clumps": len(found), "completeness(all)": all_.completeness,
                     "completeness(detectable)": det.completeness, "purity": all_.purity, "F1": all_.f1,
                     "label accuracy": all_.label_accuracy, "median offset px": all_.median_offset_px,
                     "seconds": sec})
        if method == "clumpscout":
            ours = res
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    skill_recovery(project, ours.volunteers)


def skill_recovery(project: Path, vols: pd.DataFrame) -> None:
    vt = project / "volunteers_truth.csv"
    if not vt.exists():
        print("  (no volunteers_truth.csv: skill recovery not measured)")
        return
    truth = pd.read_csv(vt)
    truth["true_p_fn"] = 1 - truth["detection_rate"]
    merged = vols.merge(truth[["user_name", "true_p_fn", "kind"]], on="user_name", how="inner")
    print("\n== Skill recovery: estimated vs true false-negative rate")
    for min_n in (10, 30, 100):
        m = merged[merged["n_classifications"] >= min_n]
        if len(m) > 2:
            r = np.corrcoef(m["p_fn"], m["true_p_fn"])[0, 1]
            print(f"  volunteers with >= {min_n:>3} classifications: {len(m):5,d}   Pearson r = {r:.3f}")
    if "kind" in merged:
        print(merged.groupby("kind")[["p_fp", "p_fn", "true_p_fn"]].mean().round(3).to_string())


def panoptes_venv(root: Path) -> Path:
    venv = root / "pa-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "panoptes-aggregation"], check=True)
        print(f"  installed panoptes-aggregation into a throw-away venv in {time.perf_counter() - t:.0f} s")
    return venv


def run_timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command and all its worker processes."""
    return run_measured(cmd, cwd=cwd)


def baseline_package(work: Path, ref: str) -> Path:
    """A folder holding clumptool as it was at git ``ref`` (for PYTHONPATH), to time old and new side by side."""
    root = Path(__file__).resolve().parents[1]
    folder = work / f"baseline-{ref}"
    if not (folder / "clumptool").exists():
        (folder / "clumptool").mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(root), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder / "clumptool")], input=archive, check=True)
    return folder


def clumptool_cmd(package_dir: Path | None) -> list[str]:
    """The clumptool command line, from ``package_dir`` (a folder holding a clumptool package) if given."""
    return ["env", f"PYTHONPATH={package_dir}", *CLUMPTOOL] if package_dir else CLUMPTOOL


def timed_aggregate(cls: Path, out: Path, package_dir: Path | None = None) -> tuple[float, float]:
    return run_timed([*clumptool_cmd(package_dir), "aggregate", str(cls), "--out", str(out), "--quiet"])


def speed(project: Path, work: Path, skip_panoptes: bool, baseline: Path | None = None) -> None:
    cls = project / "classifications.csv"
    n = sum(1 for _ in open(cls, "rb")) - 1  # approximately rows (no newlines inside JSON fields here)
    print(f"\n== Speed, end to end, {n:,} classifications ({cls.stat().st_size / 1e6:.0f} MB)")
    runs, base_runs = [], []
    for _ in range(3):  # alternated, so both see the same load on a shared machine
        runs.append(timed_aggregate(cls, work / "ours"))
        if baseline is not None:
            base_runs.append(timed_aggregate(cls, work / "baseline-out", baseline))
    ours = sorted(r[0] for r in runs)[1]  # the median of three runs (one run on a shared 2-core machine can be off by 10%)
    print(f"  clumptool aggregate (read, consensus, boxes, plots, write): {ours:7.1f} s  "
          f"{n / ours:9,.0f} classifications/s  (median of {', '.join(f'{r:.2f}' for r, _ in runs)} s; "
          f"peak {max(m for _, m in runs):,.0f} MB)")
    if baseline is not None:
        base = sorted(r[0] for r in base_runs)[1]
        print(f"  baseline {baseline.name} (same runs, alternated):            {base:7.1f} s  "
              f"{n / base:9,.0f} classifications/s  (median of {', '.join(f'{r:.2f}' for r, _ in base_runs)} s; "
              f"peak {max(m for _, m in base_runs):,.0f} MB)  -> this tree takes {ours / base:.2f}x its time")
    if skip_panoptes:
        return
    venv = panoptes_venv(work)
    wf = json.loads((project / "workflow.json").read_text()) if (project / "workflow.json").exists() else {}
    version = str(wf.get("version", "")) + (f".{wf['minor_version']}" if "minor_version" in wf else "")
    if not version:
        version = pd.read_csv(cls, nrows=1, dtype=str)["workflow_version"].iloc[0]
    wf_id = pd.read_csv(cls, nrows=1, dtype=str)["workflow_id"].iloc[0]
    cfg = work / "pa"
    cfg.mkdir(exist_ok=True)
    (cfg / "Extractor_config.yaml").write_text(textwrap.dedent(f"""\
        extractor_config:
            point_extractor_by_frame:
            -   details: {{}}
                task: T1
                tools: [0, 1]
        workflow_id: {wf_id}
        workflow_version: '{version}'
        """))
    (cfg / "Reducer_config.yaml").write_text("reducer_config:\n    point_reducer_dbscan: {}\n")
    pa = str(venv / "bin" / "panoptes_aggregation")
    ex, ex_mb = run_timed([pa, "extract", str(cls), str(cfg / "Extractor_config.yaml"), "-d", str(cfg), "-o", "b"])
    ext = next(cfg.glob("point_extractor_by_frame_*.csv"))
    red, red_mb = run_timed([pa, "reduce", str(ext), str(cfg / "Reducer_config.yaml"), "-d", str(cfg), "-o", "b"])
    total = ex + red
    print(f"  panoptes_aggregation extract:                            {ex:7.1f} s  {n / ex:9,.0f} classifications/s")
    print(f"  panoptes_aggregation reduce (point_reducer_dbscan):      {red:7.1f} s  {n / red:9,.0f} classifications/s")
    print(f"  panoptes_aggregation extract + reduce:                   {total:7.1f} s  {n / total:9,.0f} classifications/s")
    print(f"  ratio (panoptes_aggregation / clumptool): {total / ours:.1f}x faster (goal >= 20x)")


def full_scale(work: Path, seed: int, baseline: Path | None = None) -> None:
    project = simulate(work / "clumpscout-size", 85_000, seed)
    cls = project / "classifications.csv"
    n = sum(1 for _ in open(cls, "rb")) - 1
    print(f"\n== Clump Scout-sized export: {n:,} classifications, {cls.stat().st_size / 1e9:.2f} GB")
    wall, peak = timed_aggregate(cls, work / "full")
    print(f"  clumptool aggregate: {wall:.1f} s ({n / wall:,.0f} classifications/s), peak memory {peak:,.0f} MB "
          f"(goals: < 120 s, < 4096 MB)")
    if baseline is not None:
        b_wall, b_peak = timed_aggregate(cls, work / "full-baseline", baseline)
        print(f"  baseline {baseline.name}: {b_wall:.1f} s ({n / b_wall:,.0f} classifications/s), peak memory "
              f"{b_peak:,.0f} MB")
    truth = pd.read_csv(project / "truth.csv")
    clumps = pd.read_parquet(work / "full" / "clumps.parquet")
    found = clumps[clumps["accepted"]]
    all_ = match_to_truth(found, truth, 5.0)
    det = match_to_truth(found, truth[truth["detectable"].astype(bool)], 5.0) if "detectable" in truth else all_
    print(f"  consensus vs truth at this scale: completeness {all_.completeness:.4f} of all injected clumps "
          f"({det.completeness:.4f} of detectable), purity {all_.purity:.4f}, F1 {all_.f1:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--galaxies", type=int, help="subjects in the accuracy/speed export (x20 rows) "
                    "[default: 5000; 1000 per crowd with --crowds]")
    ap.add_argument("--crowds", action="store_true", help="only the per-crowd accuracy table (bench/crowds.py)")
    ap.add_argument("--radius", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--full-scale", action="store_true", help="also time a 1.7M-classification export")
    ap.add_argument("--speed-only", action="store_true", help="skip the accuracy and skill-recovery part")
    ap.add_argument("--skip-panoptes", action="store_true", help="do not install/run panoptes_aggregation")
    ap.add_argument("--workdir", type=Path, help="keep data here (default: a temporary folder)")
    ap.add_argument("--baseline", metavar="GIT_REF", help="also time clumptool as it was at this git ref, "
                    "alternating runs with this tree's (side by side, same load)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="clumptool-bench-agg-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.crowds:
            from crowds import run_crowds

            run_crowds(work, args.galaxies or 1000, args.seed, args.radius)
            return
        project = simulate(work / "project", args.galaxies or 5000, args.seed)
        if not args.speed_only:
            accuracy(project, args.radius)
        baseline = baseline_package(work, args.baseline) if args.baseline else None
        speed(project, work, args.skip_panoptes, baseline)
        if args.full_scale:
            full_scale(work, args.seed, baseline)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
