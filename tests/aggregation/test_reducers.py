"""``--method dbscan|hdbscan`` (``reduce_export``) against the real panoptes_aggregation point reducers.

The fixtures (tests/aggregation/data/panoptes_point_reducers.json) were made by bench/reducer_fixtures.py, which
runs panoptes_aggregation's ``point_reducer_dbscan`` and ``point_reducer_hdbscan`` in their own virtual environment
on hand-made point sets (panoptes_aggregation's own reducer test data among them) and simulated galaxies. Here
the same classifications are written as an export, read by clumptool's reader and reduced by ``reduce_export``:
every cluster (per tool: position and count) and every point's cluster must be panoptes_aggregation's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clumptool.aggregation.export import read_export
from clumptool.aggregation.reducers import reduce_export

FIXTURES = json.loads((Path(__file__).parent / "data" / "panoptes_point_reducers.json").read_text())
RUNS = [(case, i) for case in FIXTURES["cases"] for i in range(len(case["runs"]))]


def _run_id(run) -> str:
    case, i = run
    method, params = case["runs"][i]
    return f"{case['name']}-{method}-{'-'.join(f'{k}{v}' for k, v in params.items()) or 'defaults'}"


def _same_partition(ours: np.ndarray, theirs: list[int]) -> bool:
    """One cluster of ours for each of theirs, noise (-1) for noise."""
    pairs = set(zip(ours.tolist(), theirs, strict=True))
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}) and \
        all((a < 0) == (b < 0) for a, b in pairs)


@pytest.mark.parametrize("run", RUNS, ids=[_run_id(r) for r in RUNS])
def test_reduce_export_gives_panoptes_aggregations_clusters(run, export_builder, tmp_path):
    case, i = run
    method, params = case["runs"][i]
    reduction = case["reductions"][i]
    for c in case["classifications"]:
        export_builder.add(case["subject_id"], c["user"], [tuple(m) for m in c["marks"]])
    data = read_export(export_builder.write(tmp_path / "e.csv"))
    clumps, _, _, marks = reduce_export(data, method, params, odd_tools=(1,))
    for tool, label in ((0, 1), (1, 2)):
        key = f"T1_tool{tool}"
        ours = clumps[clumps["label"] == label].sort_values(["x", "y"])
        theirs = sorted(zip(reduction.get(f"{key}_clusters_x", []), reduction.get(f"{key}_clusters_y", []),
                            reduction.get(f"{key}_clusters_count", []), strict=True))
        assert len(ours) == len(theirs), (tool, ours, theirs)
        if theirs:
            np.testing.assert_allclose(ours[["x", "y"]].to_numpy(), np.array(theirs)[:, :2], rtol=1e-12)
            assert ours["n_marks"].tolist() == [n for _, _, n in theirs]
        points = marks[marks["tool"] == tool]
        np.testing.assert_array_equal(points["x"].to_numpy(), reduction.get(f"{key}_points_x", []))
        assert _same_partition(points["clump_id"].to_numpy(), reduction.get(f"{key}_cluster_labels", []))


def test_the_fixtures_cover_clusters_noise_and_both_methods():
    """A fixture set that tests nothing would pass: it must hold clusters of both tools, noise, and both methods."""
    counts = {m: 0 for m in ("dbscan", "hdbscan")}
    noise = 0
    for case in FIXTURES["cases"]:
        for (method, _), red in zip(case["runs"], case["reductions"], strict=True):
            counts[method] += len(red.get("T1_tool0_clusters_count", [])) + len(red.get("T1_tool1_clusters_count", []))
            noise += sum(label < 0 for k, v in red.items() if k.endswith("cluster_labels") for label in v)
    assert counts["dbscan"] > 20 and counts["hdbscan"] > 10 and noise > 20
