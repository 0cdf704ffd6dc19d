"""Fixtures from the real panoptes_aggregation point reducers, for tests/aggregation/test_reducers.py.

    .venv/bin/python bench/reducer_fixtures.py --workdir /tmp/exportbench/work   # reuses WORKDIR/pa-venv

panoptes_aggregation cannot be installed beside clumptool (it pins numpy<2.3, pandas<3, scikit-learn<1.7), so it
runs in a throw-away virtual environment (WORKDIR/pa-venv, made on demand as bench/aggregation.py makes it). Its
``point_reducer_dbscan`` and ``point_reducer_hdbscan`` reduce a few hand-made and simulated point sets, each point
set one subject's classifications (one volunteer each, tools 0 and 1, frame 0), given to the reducers as
``point_extractor_by_frame`` extracts. The point sets and the reductions are written to
tests/aggregation/data/panoptes_point_reducers.json; the test reads the same classifications through clumptool's
export reader and ``reduce_export`` (``--method dbscan|hdbscan``) and compares clusters and cluster membership.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aggregation import panoptes_venv  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "aggregation" / "data" / "panoptes_point_reducers.json"
RUNS = (("dbscan", {}), ("dbscan", {"eps": 8.0, "min_samples": 2}), ("hdbscan", {}))

# run inside the panoptes_aggregation venv: cases on stdin, reductions on stdout
REDUCE = """
import json, sys
import sklearn
import panoptes_aggregation
from panoptes_aggregation.reducers import point_reducer_dbscan, point_reducer_hdbscan

reducers = {"dbscan": point_reducer_dbscan, "hdbscan": point_reducer_hdbscan}
cases = json.load(sys.stdin)
for case in cases:
    extracts = []
    for c in case["classifications"]:
        frame = {}
        for x, y, tool in c["marks"]:
            frame.setdefault(f"T1_tool{tool}_x", []).append(x)
            frame.setdefault(f"T1_tool{tool}_y", []).append(y)
        extracts.append({"frame0": frame} if frame else {})
    users = list(range(len(extracts)))
    case["reductions"] = [reducers[method](extracts, user_id=users, **params).get("frame0", {})
                          for method, params in case["runs"]]
json.dump({"panoptes_aggregation": panoptes_aggregation.__version__, "scikit-learn": sklearn.__version__,
           "cases": cases}, sys.stdout)
"""


def _one_click_each(name: str, points: list[tuple[float, float, int]]) -> dict:
    return {"name": name, "classifications": [{"user": f"v{i}", "marks": [list(p)]} for i, p in enumerate(points)]}


def _galaxy(rng: np.random.Generator, name: str, n_clumps: int, volunteers: int = 20, size: float = 400.0) -> dict:
    """A simulated galaxy: clumps seen by each volunteer with their own detection rate and scatter, 20% of the
    marks with the other tool, and stray clicks near the centre."""
    centres = rng.uniform(0.3 * size, 0.7 * size, (n_clumps, 2))
    odd = rng.random(n_clumps) < 0.3
    classifications = []
    for v in range(volunteers):
        detect, scatter, strays = rng.uniform(0.4, 0.95), rng.uniform(0.8, 3.0), rng.poisson(0.5)
        marks = [[*np.clip(c + rng.normal(0, scatter, 2), 0, size).tolist(), int(o) ^ int(rng.random() < 0.2)]
                 for c, o in zip(centres, odd, strict=True) if rng.random() < detect]
        marks += [[*rng.uniform(0.2 * size, 0.8 * size, 2).tolist(), 0] for _ in range(strays)]
        classifications.append({"user": f"v{v}", "marks": marks})
    return {"name": name, "classifications": classifications}


def point_sets(seed: int = 1) -> list[dict]:
    """Hand-made point sets (panoptes_aggregation's own reducer test data among them) and simulated galaxies."""
    np.random.seed(5000)  # test_point_reducer_dbscan / _hdbscan: two Gaussian clusters
    two = np.vstack([np.random.multivariate_normal([12, 15], [[3, 0.5], [0.5, 4]], size=15),
                     np.random.multivariate_normal([20, 25], [[7, -0.5], [-0.5, 5]], size=8)])
    rng = np.random.default_rng(seed)
    cases = [
        _one_click_each("panoptes test: two Gaussian clusters", [(float(x), float(y), 0) for x, y in two]),
        _one_click_each("two volunteers per place (panoptes test_shape_reducer_point)",
                        [(10.0, 10.0, 0), (100.0, 100.0, 0), (10.0, 10.0, 0), (100.0, 100.0, 0)]),
        _one_click_each("lone clicks, fewer than min_samples", [(50.0, 60.0, 0), (300.0, 200.0, 1)]),
        _one_click_each("one clump marked with both tools",
                        [(200.0 + rng.normal(0, 1.5), 210.0 + rng.normal(0, 1.5), i % 2) for i in range(14)]),
        _one_click_each("a chain of clicks 4 px apart", [(100.0 + 4 * i, 150.0, 0) for i in range(10)]),
        _one_click_each("clicks 5.5 px apart: beyond the default eps, within 8",
                        [(100.0 + 5.5 * i, 300.0 + 0.5 * (i % 2), i // 6) for i in range(12)]),
    ]
    cases += [_galaxy(rng, f"simulated galaxy {i + 1}", n) for i, n in enumerate((2, 4, 7))]
    for i, case in enumerate(cases):
        case["subject_id"] = 1001 + i
        case["runs"] = [list(run) for run in RUNS]
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/clumptool-panoptes"),
                    help="holds (or gets) the throw-away venv pa-venv")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    venv = panoptes_venv(args.workdir)
    done = subprocess.run([str(venv / "bin" / "python"), "-c", REDUCE], input=json.dumps(point_sets()),
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    result["made_by"] = "bench/reducer_fixtures.py"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cases = result.pop("cases")
    text = json.dumps(result)[:-1] + ', "cases": [\n' + ",\n".join(json.dumps(c) for c in cases) + "\n]}\n"
    args.out.write_text(text, encoding="utf-8")  # one point set a line
    print(f"{len(cases)} point sets x {len(RUNS)} runs of panoptes_aggregation "
          f"{result['panoptes_aggregation']} (scikit-learn {result['scikit-learn']}) -> {args.out}")


if __name__ == "__main__":
    main()
