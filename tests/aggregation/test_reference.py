"""The stopping rule's vote shares learned where galaxies had their full crowd (``aggregate --reference``)."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from clumptool.aggregation.pipeline import AggregateOptions, aggregate
from clumptool.aggregation.reference import read_reference, single_click_confirmations, single_click_real
from clumptool.aggregation.stopping import THETA_GRID, expected_errors, flip_probabilities, vote_share_prior
from clumptool.cli import main
from clumptool.common.errors import ClumptoolError

CLUMPS = [(120.0, 140.0), (260.0, 230.0)]


def _counts(rng, n, strays, real):
    """Candidates' (markers, viewers): ``strays`` one-off clicks and ``real`` spots with shares in [0.5, 0.9]."""
    m = rng.binomial(n, rng.uniform(0.5, 0.9, real))
    m = m[m >= 1]
    return np.r_[np.ones(strays), m].astype(float), np.full(strays + len(m), float(n))


def test_a_prior_learned_at_the_full_crowd_knows_strays_do_not_repeat():
    """At 4 viewers a stray click and a spot a tenth of the crowd marks look alike, and 2 of 4 marks look
    contested; at 20 the strays stay single, so 2 of 4 is a real spot's count."""
    rng = np.random.default_rng(0)
    own = vote_share_prior(*_counts(rng, 4, 300, 100))
    full = vote_share_prior(*_counts(rng, 20, 600, 200))
    two_of_four = (np.array([2.0]), np.array([4.0]), np.array([True]))
    assert flip_probabilities(*two_of_four, own)[0] > 0.2
    assert flip_probabilities(*two_of_four, full)[0] < 0.05
    assert full[0] > 0.5  # the strays' mass sits on the stray share, not on 0.0125-0.1


def _marked(b, sid, volunteers, spots, strays=0, seed=0, p=1.0):
    """Each volunteer marks each spot with probability ``p``; the first ``strays`` add a one-off click."""
    rng = np.random.default_rng(seed + sid)
    for i, v in enumerate(volunteers):
        marks = [(float(x + rng.normal(0, 1.0)), float(y + rng.normal(0, 1.0)), 0) for x, y in spots
                 if rng.random() < p]
        if i < strays:  # a one-off click far from everything
            marks.append((float(rng.uniform(20, 380)), float(rng.uniform(300, 380)), 0))
        b.add(sid, v, marks)


@pytest.fixture
def reference(export_builder, tmp_path):
    """An aggregate of 40 galaxies that had their full crowd: 20 volunteers, two clumps each that 70% of them
    mark, and a few strays."""
    for sid in range(500, 540):
        _marked(export_builder, sid, [f"r{v}" for v in range(20)], CLUMPS, strays=3, p=0.7)
    out = tmp_path / "reference"
    aggregate(export_builder.write(tmp_path / "reference.csv"), out_dir=out)
    export_builder.rows.clear()
    return out


def _lean_export(b, path):
    """Galaxies seen by 4 volunteers each; galaxy 1 has a third spot that 2 of its 4 marked."""
    for sid in range(100, 130):
        _marked(b, sid, [f"v{v}" for v in range(4)], CLUMPS, strays=1)
    _marked(b, 1, ["v0", "v1"], CLUMPS + [(200.0, 100.0)])
    _marked(b, 1, ["v2", "v3"], CLUMPS)
    return b.write(path)


def test_aggregate_reference_settles_a_spot_two_of_four_marked(export_builder, reference, tmp_path):
    export = _lean_export(export_builder, tmp_path / "lean.csv")
    alone = aggregate(export, out_dir=tmp_path / "alone")
    informed = aggregate(export, out_dir=tmp_path / "informed", options=AggregateOptions(reference=str(reference)))
    s0, s1 = (r.subjects.set_index("subject_id") for r in (alone, informed))
    assert s0.loc[1, "n_clumps"] == 3 and s1.loc[1, "n_clumps"] == 3  # the consensus itself is unchanged
    assert s0.loc[1, "expected_false"] > 0.1 and not s0.loc[1, "is_finished"]
    assert s1.loc[1, "expected_false"] < 0.5 * s0.loc[1, "expected_false"], (s0.loc[1, "expected_false"], s1.loc[1, "expected_false"])
    stop = json.loads((tmp_path / "informed" / "summary.json").read_text())["stopping"]
    assert stop["rule_vote_shares_from"] == str(reference) and stop["rule_vote_share_median_viewers"] == 20
    assert stop["vote_shares_from"] == "this export" and stop["vote_share_median_viewers"] == 4
    # what the reference stored is what the rule read back
    ref = read_reference(reference)
    assert ref.median_viewers == 20 and ref.candidates > 80 and np.isclose(ref.prior.sum(), 1.0)
    assert len(ref.prior) == len(THETA_GRID)
    assert not informed.summary["notes"]
    # a "reference" of galaxies few volunteers saw is used, and the summary says what it is
    lean_as_reference = aggregate(export, options=AggregateOptions(reference=str(tmp_path / "alone")))
    assert any("median of 4 classifications" in n for n in lean_as_reference.summary["notes"])


def test_a_bad_reference_is_refused_before_any_work(export_builder, reference, tmp_path):
    export = _lean_export(export_builder, tmp_path / "lean.csv")
    out = tmp_path / "out"
    no_summary = tmp_path / "empty"
    no_summary.mkdir()
    older = tmp_path / "older"
    older.mkdir()
    summary = json.loads((reference / "summary.json").read_text())
    del summary["stopping"]
    (older / "summary.json").write_text(json.dumps(summary))
    other_grid = tmp_path / "grid"
    other_grid.mkdir()
    summary = json.loads((reference / "summary.json").read_text())
    summary["stopping"]["vote_share_grid"] = summary["stopping"]["vote_share_grid"][1:]
    (other_grid / "summary.json").write_text(json.dumps(summary))
    for folder, needle in ((tmp_path / "nowhere", "no such folder"), (no_summary, "no summary.json"),
                           (older, "holds no learned vote shares"), (other_grid, "on another grid")):
        r = CliRunner().invoke(main, ["aggregate", str(export), "--out", str(out), "--reference", str(folder),
                                      "--quiet"])
        assert r.exit_code != 0 and needle in r.output and "Traceback" not in r.output, r.output
        assert not out.exists()
    with pytest.raises(ClumptoolError, match="--reference needs --method clumpscout"):
        aggregate(export, options=AggregateOptions(method="dbscan", reference=str(reference)))
    r = CliRunner().invoke(main, ["aggregate", str(export), "--out", str(out), "--reference", str(reference),
                                  "--quiet", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert pd.read_csv(out / "subjects.csv").set_index("subject_id").loc[1, "n_clumps"] == 3


def test_single_clicks_keep_the_exports_own_estimate_with_a_reference():
    """A prior learned at the full crowd reads a single click of four as a stray more surely than the full crowd
    bears out (bench/vote_shares.py: 1-2% predicted, 8-14% reversed), so single clicks keep the export's own,
    larger, probability of being real; the reference only calibrates the spots more volunteers marked."""
    rng = np.random.default_rng(0)
    full = vote_share_prior(*_counts(rng, 20, 600, 200))
    k = 30  # galaxies, each with a clump all 4 marked and a single click the model calls false
    clumps = pd.DataFrame({"subject_id": np.repeat(np.arange(k), 2), "n_marks": [4, 1] * k, "n_viewers": 4,
                           "odd_vote": 0.0, "label": 1, "accepted": [True, False] * k,
                           "false_pos_prob": [0.0, 0.99] * k})
    subj = pd.DataFrame({"subject_id": np.arange(k), "n_viewers": 4, "expected_num_false_neg": 0.0})
    own = expected_errors(subj, clumps)["expected_missed"].to_numpy()
    informed = expected_errors(subj, clumps, reference_vote_shares=full)["expected_missed"].to_numpy()
    reference_alone = flip_probabilities(np.array([1.0]), np.array([4.0]), np.array([False]), full)[0]
    assert reference_alone < 0.5 * own[0]
    np.testing.assert_allclose(informed, own, atol=0.01)  # the single click counts as much as without it


def test_single_clicks_are_counted_by_arrival_and_confirmed_by_the_whole_crowd():
    """Galaxy 1, four viewers (ids 10-13 in arrival order): spot 0 marked by 10, 12 and 13 (accepted), spot 1
    by 11 only, and a lone mark by 13. Galaxy 2 has one viewer and counts nowhere (it needs 2k)."""
    cls = pd.DataFrame({"classification_id": [10, 11, 12, 13, 20, -1], "subject_id": [1, 1, 1, 1, 2, 1]})
    marks = pd.DataFrame({"classification_id": [10, 12, 13, 11, 13, 13, 20, -1],
                          "subject_id": [1, 1, 1, 1, 1, 1, 2, 1],
                          "clump_id": [0, 0, 0, 1, 0, -1, 5, 1]})
    clumps = pd.DataFrame({"subject_id": [1, 1, 2], "clump_id": [0, 1, 5], "accepted": [True, False, True]})
    counts = single_click_confirmations(cls, marks, clumps, max_viewers=3)
    # k = 1 (galaxies with >= 2 viewers): spot 0, by the first viewer, confirmed
    # k = 2 (>= 4 viewers): spots 0 and 1 one marker each, one confirmed (the detector's mark, id -1, no vote)
    assert counts.tolist() == [[0, 0], [1, 1], [2, 1], [0, 0]]
    rates = single_click_real(np.array([[0, 0], [30, 9], [10, 1]]), min_spots=20)
    assert np.isnan(rates[0]) and rates[1] == pytest.approx(10 / 32) and np.isnan(rates[2])


def test_a_reference_stores_and_returns_its_single_click_counts(reference):
    ref = reference
    block = json.loads((ref / "summary.json").read_text())["stopping"]
    assert len(block["single_click_spots"]) == 11
    # at k = 1 the first volunteer's marks: its clumps (70% of 2 per galaxy) confirmed, its stray not
    spots, confirmed = block["single_click_spots"][1], block["single_click_confirmed"][1]
    assert 60 < spots < 120 and 0.4 < confirmed / spots < 0.8, (spots, confirmed)
    back = read_reference(ref)
    assert back.single_clicks[:, 0].tolist() == block["single_click_spots"]
    assert back.single_clicks[:, 1].tolist() == block["single_click_confirmed"]
    block["single_click_confirmed"][1] = block["single_click_spots"][1] + 1
    summary = json.loads((ref / "summary.json").read_text())
    summary["stopping"] = block
    (ref / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ClumptoolError, match="single-click counts are not counts"):
        read_reference(ref)
