"""The consensus model on small hand-made cases and on a crowd with known truth."""

import numpy as np
import pandas as pd
import pytest
from export_builders import simulate_crowd

from clumptool.aggregation.consensus import ConsensusConfig, run_consensus
from clumptool.aggregation.evaluation import match_to_truth
from clumptool.aggregation.export import read_export
from clumptool.aggregation.pipeline import AggregateOptions, aggregate


def _run(builder, tmp_path, **cfg):
    data = read_export(builder.write(tmp_path / "e.csv"))
    return run_consensus(data, ConsensusConfig(**cfg))


def _crowd_clicks(b, sid, centres, n=15, scatter=1.5, seed=0, extra=None, blind=()):
    rng = np.random.default_rng(seed)
    for v in range(n):
        marks = [] if v in blind else [
            (float(cx + rng.normal(0, scatter)), float(cy + rng.normal(0, scatter)), 0) for cx, cy in centres]
        marks += (extra or {}).get(v, [])
        b.add(sid, f"v{v}", marks)


def test_a_clump_marked_by_most_viewers_is_found_where_it_is(export_builder, tmp_path):
    _crowd_clicks(export_builder, 1, [(200, 150)], n=15)
    res = _run(export_builder, tmp_path)
    c = res.clumps[res.clumps["accepted"]]
    assert len(c) == 1
    assert np.hypot(c["x"].iloc[0] - 200, c["y"].iloc[0] - 150) < 1.0
    assert c["n_marks"].iloc[0] == 15 and c["n_viewers"].iloc[0] == 15
    assert c["false_pos_prob"].iloc[0] < 1e-3


def test_two_volunteers_who_disagree_leave_the_image_unfinished(export_builder, tmp_path):
    export_builder.add(1, "alice", [(100, 100, 0)])
    export_builder.add(1, "bob", [(300, 300, 0)])
    res = _run(export_builder, tmp_path)
    subj = res.subjects.iloc[0]
    # one viewer each: neither mark can be confirmed, the image needs more volunteers
    assert not subj["is_finished"]
    assert subj["risk"] > 0.3


def test_a_spammer_is_found_out_and_their_clicks_make_no_clumps(export_builder, tmp_path):
    rng = np.random.default_rng(3)
    for sid in range(1, 41):
        centre = (float(rng.uniform(100, 300)), float(rng.uniform(100, 300)))
        spam = {0: [(float(rng.uniform(0, 400)), float(rng.uniform(0, 400)), 0) for _ in range(4)]}
        # volunteer v0 never clicks the clump, only random points
        _crowd_clicks(export_builder, sid, [centre], n=12, seed=sid, extra=spam, blind={0})
    res = run_consensus(read_export(export_builder.write(tmp_path / "e.csv")))
    vols = res.volunteers.set_index("user_name")
    assert vols.loc["v0", "p_fp"] > 0.8
    assert vols.drop("v0")["p_fp"].max() < 0.2
    acc = res.clumps[res.clumps["accepted"]]
    assert len(acc) == 40  # exactly one clump per galaxy; no clump from the spam


def test_two_clumps_6px_apart_stay_two(export_builder, tmp_path):
    _crowd_clicks(export_builder, 1, [(200, 200), (206, 200)], n=16, scatter=1.0)
    res = _run(export_builder, tmp_path)
    c = res.clumps[res.clumps["accepted"]].sort_values("x")
    assert len(c) == 2
    np.testing.assert_allclose(c["x"].to_numpy(), [200, 206], atol=1.0)
    assert (c["n_marks"] == 16).all()  # one mark per volunteer per clump


def test_an_image_nobody_marked_has_no_clumps_and_is_finished(export_builder, tmp_path):
    for v in range(15):
        export_builder.add(9, f"v{v}", [])
    _crowd_clicks(export_builder, 10, [(50, 60)], n=15)
    res = _run(export_builder, tmp_path)
    s = res.subjects.set_index("subject_id")
    assert s.loc[9, "n_clumps"] == 0 and s.loc[9, "n_viewers"] == 15
    assert s.loc[9, "is_finished"]
    assert s.loc[9, "expected_num_false_neg"] < 0.01


def test_odd_label_by_tool_vote(export_builder, tmp_path):
    for v in range(10):
        export_builder.add(1, f"v{v}", [(100 + v * 0.1, 100, 1 if v < 7 else 0)])
    res = _run(export_builder, tmp_path)
    c = res.clumps.iloc[0]
    assert c["label"] == 2 and c["odd_vote"] == pytest.approx(0.7)


def test_the_fit_converges_and_its_objective_is_recorded(export_builder, tmp_path):
    # skills are re-estimated from the judged clumps, so the result is the converged (last) round
    _crowd_clicks(export_builder, 1, [(100, 100), (300, 300)], n=10)
    res = _run(export_builder, tmp_path)
    assert res.best_iteration == len(res.history) - 1 < ConsensusConfig().max_iterations - 1
    assert np.isfinite(res.history).all()


def test_crowd_with_known_truth_beats_dbscan_and_recovers_skills(tmp_path):
    rng = np.random.default_rng(11)
    b, truth, skills = simulate_crowd(rng, n_subjects=150, n_volunteers=60, per_subject=20)
    path = b.write(tmp_path / "e.csv")
    truth = pd.DataFrame(truth, columns=["subject_id", "x", "y", "label"])
    ours = aggregate(path)
    db = aggregate(path, options=AggregateOptions(method="dbscan"))
    score = match_to_truth(ours.clumps[ours.clumps["accepted"]], truth, radius=5.0)
    dbscan = match_to_truth(db.clumps, truth, radius=5.0)
    assert score.completeness >= 0.97 and score.purity >= 0.97
    assert score.label_accuracy >= 0.95
    assert score.f1 > dbscan.f1
    vols = ours.volunteers
    idx = vols["user_name"].str[3:].astype(int).to_numpy()
    true_fn = np.where(skills["spammer"][idx], 1.0, skills["p_fn"][idx])
    many = vols["n_classifications"] >= 30
    assert many.sum() >= 20
    assert np.corrcoef(vols["p_fn"][many], true_fn[many])[0, 1] >= 0.8


def test_match_to_truth_is_one_to_one():
    truth = pd.DataFrame({"subject_id": [1, 1], "x": [10.0, 30.0], "y": [10.0, 10.0], "label": [1, 2]})
    found = pd.DataFrame({"subject_id": [1, 1, 2], "x": [11.0, 12.0, 5.0], "y": [10.0, 10.0, 5.0],
                          "label": [1, 1, 1]})
    s = match_to_truth(found, truth, radius=5.0)
    assert (s.n_matched, s.completeness, s.purity) == (1, 0.5, 1 / 3)
    assert s.label_accuracy == 1.0 and s.median_offset_px == 1.0


def test_groups_with_two_marks_per_volunteer_split_into_two_clumps_each(export_builder, tmp_path):
    """Many ambiguous groups (each volunteer marked two clumps 5 px apart) are split together, each as if
    alone: two clumps per galaxy, where they are."""
    from clumptool.aggregation.consensus import ConsensusConfig, _Model, build_markset, run_consensus
    from clumptool.aggregation.export import read_export

    rng = np.random.default_rng(5)
    centres = {}
    for sid in range(1, 13):
        cx, cy = rng.uniform(100, 300, 2)
        centres[sid] = (cx, cy)
        for v in range(15):
            marks = [(cx + rng.normal(0, 1), cy + rng.normal(0, 1), 0),
                     (cx + 5 + rng.normal(0, 1), cy + rng.normal(0, 1), 0)]
            b_marks = marks if rng.random() < 0.9 else marks[:1]
            export_builder.add(sid, f"vol{v}", b_marks)
    data = read_export(export_builder.write(tmp_path / "e.csv"))
    model = _Model(build_markset(data, 400.0), ConsensusConfig())
    assert len(model.multi_components) >= 8  # the splitter really gets several groups at once
    res = run_consensus(data, ConsensusConfig())
    acc = res.clumps[res.clumps["accepted"]]
    assert (acc.groupby("subject_id").size() == 2).all() and acc["subject_id"].nunique() == 12
    for sid, (cx, cy) in centres.items():
        mine = acc[acc["subject_id"] == sid].sort_values("x")
        np.testing.assert_allclose(mine["x"], [cx, cx + 5], atol=1.0)
        np.testing.assert_allclose(mine["y"], [cy, cy], atol=1.0)
