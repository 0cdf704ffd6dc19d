"""The standard Zooniverse point reducers (``panoptes_aggregation``), for comparison with the consensus model.

:func:`reduce_export` clusters the points of each subject's frame **per tool** with scikit-learn's DBSCAN /
HDBSCAN and reports the plain mean of each cluster, with panoptes_aggregation 5.3.1's defaults
(aggregation-reference §6.2), as clumptool's tables, so that ``--method dbscan|hdbscan`` output can be compared
column for column with ``--method clumpscout``. They know nothing of volunteers: no skill weighting, no
false-positive probability, and two marks by one volunteer can share a cluster. tests/aggregation/test_reducers.py
checks every cluster and membership against the real panoptes_aggregation (fixtures by bench/reducer_fixtures.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import DBSCAN, HDBSCAN

from clumptool.aggregation.export import ExportData
from clumptool.aggregation.reducer_defaults import DBSCAN_DEFAULTS, HDBSCAN_DEFAULTS


def _dbscan_labels_all(keys: np.ndarray, x: np.ndarray, y: np.ndarray, params: dict) -> np.ndarray:
    """DBSCAN of every (subject, frame, tool) group at once: groups are tiled far apart so that no eps
    neighbourhood crosses two groups, which gives exactly the per-group clusters in one call."""
    p = {**DBSCAN_DEFAULTS, **params}
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    span = float(max(np.abs(x).max(), np.abs(y).max())) * 2 + 4 * p["eps"] + 1
    pts = np.column_stack([x + (keys % 1024) * span, y + (keys // 1024) * span])
    labels = DBSCAN(**p).fit(pts).labels_
    return labels.astype(np.int64)


def reduce_export(data: ExportData, method: str, params: dict, odd_tools: tuple[int, ...] = (1,)
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run a point reducer per (subject, frame, tool) and return clumps, subjects, volunteers, marks tables."""
    marks = data.marks.reset_index(drop=True)
    key_frame = marks[["subject_id", "frame", "tool"]].astype("int64")
    keys = key_frame.groupby(["subject_id", "frame", "tool"], sort=True).ngroup().to_numpy()
    x, y = marks["x"].to_numpy(float), marks["y"].to_numpy(float)
    if method == "dbscan":
        labels = _dbscan_labels_all(keys, x, y, params)
        cluster = np.where(labels >= 0, labels, -1)
    elif method == "hdbscan":
        p = {**HDBSCAN_DEFAULTS, **params}
        cluster = np.full(len(marks), -1, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        bounds = np.flatnonzero(np.diff(keys[order])) + 1
        next_id = 0
        for idx in np.split(order, bounds):
            if len(idx) < p["min_cluster_size"]:
                continue
            lab = HDBSCAN(copy=True, **p).fit(np.column_stack([x[idx], y[idx]])).labels_
            ok = lab >= 0
            cluster[idx[ok]] = lab[ok] + next_id
            next_id += int(lab.max()) + 1 if ok.any() else 0
    else:
        raise ValueError(f"unknown reducer {method!r}")
    marks["cluster"] = cluster
    inc = marks[marks["cluster"] >= 0]
    n_view = data.classifications.groupby("subject_id").size()
    clumps = inc.groupby("cluster").agg(subject_id=("subject_id", "first"), frame=("frame", "first"),
                                        tool=("tool", "first"), x=("x", "mean"), y=("y", "mean"),
                                        n_marks=("x", "size")).reset_index()
    clumps["label"] = np.where(clumps["tool"].isin(odd_tools), 2, 1)
    clumps["odd_vote"] = (clumps["label"] == 2).astype(float)
    clumps["n_viewers"] = clumps["subject_id"].map(n_view).astype("int64")
    for col in ("false_pos_prob", "inaccurate_prob", "risk"):
        clumps[col] = 0.0 if col == "false_pos_prob" else np.nan
    sizes = data.frames.set_index(["subject_id", "frame"])
    idx = pd.MultiIndex.from_frame(clumps[["subject_id", "frame"]].astype("int64"))
    clumps["image_width"] = sizes["image_width"].reindex(idx).to_numpy()
    clumps["image_height"] = sizes["image_height"].reindex(idx).to_numpy()
    clumps["accepted"] = True
    clumps = clumps.sort_values(["subject_id", "frame", "y", "x"]).reset_index(drop=True)
    clumps.insert(1, "clump_id", clumps.groupby("subject_id").cumcount().astype("int64"))
    clump_of_cluster = pd.Series(clumps["clump_id"].to_numpy(), index=clumps["cluster"].to_numpy())
    clumps = clumps.drop(columns=["tool", "cluster"])

    subj = pd.DataFrame({"subject_id": np.sort(data.classifications["subject_id"].unique())})
    subj["n_viewers"] = subj["subject_id"].map(n_view).astype("int64")
    subj["n_clumps"] = subj["subject_id"].map(clumps.groupby("subject_id").size()).fillna(0).astype("int64")
    subj["n_odd_clumps"] = subj["subject_id"].map(
        clumps[clumps["label"] == 2].groupby("subject_id").size()).fillna(0).astype("int64")
    for col in ("expected_num_false_pos", "expected_num_false_neg", "expected_num_inaccurate", "risk"):
        subj[col] = np.nan
    subj["is_finished"] = False  # the reducers give no completion test
    frame0 = data.frames[data.frames["frame"] == 0][["subject_id", "image_width", "image_height"]]
    subj = subj.merge(frame0, on="subject_id", how="left")

    vols = data.volunteers.copy()
    vols["n_classifications"] = vols["volunteer"].map(data.classifications.groupby("volunteer").size()).fillna(0)
    vols["n_marks"] = vols["volunteer"].map(marks.groupby("volunteer").size()).fillna(0).astype("int64")
    for col in ("p_fp", "p_fn", "scatter_px"):
        vols[col] = np.nan
    mark_table = marks.assign(clump_id=marks["cluster"].map(clump_of_cluster).fillna(-1).astype("int64"))
    mark_table = mark_table.drop(columns="cluster")
    return clumps, subj, vols, mark_table
