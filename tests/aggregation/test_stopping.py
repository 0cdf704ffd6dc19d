"""The per-galaxy stopping rule (aggregation/stopping.py) on hand-made galaxies and tables."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from clumptool.aggregation.pipeline import AggregateOptions, aggregate
from clumptool.aggregation.stopping import (
    PRIOR_PSEUDO_CANDIDATES,
    THETA_GRID,
    _binomial_table,
    _counts,
    apply_stopping_rule,
    clump_vote_counts,
    flip_probabilities,
    label_error_after,
    label_model,
    label_probabilities,
    settled_error_after,
    vote_share_prior,
)
from clumptool.cli import main
from clumptool.common.errors import ClumptoolError

CLUMPS = [(120.0, 140.0), (260.0, 230.0)]


def _agreeing(b, sid, n, centres=CLUMPS, prefix="v", seed=0, tool=0):
    rng = np.random.default_rng(seed + sid)
    for v in range(n):
        b.add(sid, f"{prefix}{v}", [(float(x + rng.normal(0, 1.0)), float(y + rng.normal(0, 1.0)), tool)
                                    for x, y in centres])


def _obvious_crowd(b, n_galaxies=30, n=4):
    """Galaxies 100.. each marked alike by the same n volunteers: the crowd the rule learns vote shares from."""
    for sid in range(100, 100 + n_galaxies):
        _agreeing(b, sid, n)


def _subjects(b, tmp_path, **opts):
    res = aggregate(b.write(tmp_path / "e.csv"), options=AggregateOptions(**opts))
    return res.subjects.set_index("subject_id")


def test_an_obvious_galaxy_finishes_at_four(export_builder, tmp_path):
    _obvious_crowd(export_builder)
    _agreeing(export_builder, 1, 4)
    s = _subjects(export_builder, tmp_path)
    assert s.loc[1, "n_clumps"] == 2
    assert s.loc[1, "is_finished"], s.loc[1, "finished_reason"]
    assert s.loc[1, "finished_reason"].startswith("finished: expected errors")
    assert "with 4 classifications" in s.loc[1, "finished_reason"]


def test_a_contested_galaxy_is_not_finished(export_builder, tmp_path):
    _obvious_crowd(export_builder)  # obvious neighbours, so the crowd is not judged on one galaxy alone
    rng = np.random.default_rng(3)
    for v in range(4):  # 2 of 4 mark a spot
        marks = [(float(200 + rng.normal(0, 1.0)), float(200 + rng.normal(0, 1.0)), 0)] if v < 2 else []
        export_builder.add(2, f"v{v}", marks)
    s = _subjects(export_builder, tmp_path)
    assert not s.loc[2, "is_finished"]
    assert s.loc[2, "expected_errors"] >= 0.1
    assert s.loc[2, "finished_reason"].startswith("not finished: expected errors")
    assert "missed" in s.loc[2, "finished_reason"] and "false" in s.loc[2, "finished_reason"]


def test_below_the_minimum_classifications_never_finished(export_builder, tmp_path):
    _agreeing(export_builder, 1, 2)
    s = _subjects(export_builder, tmp_path, retire_below=1e9)  # whatever the expected errors
    assert not s.loc[1, "is_finished"]
    assert s.loc[1, "finished_reason"] == "not finished: 2 classifications < 3"
    s = _subjects(export_builder, tmp_path, retire_below=1e9, min_classifications=2)
    assert s.loc[1, "is_finished"]


@pytest.mark.parametrize("n", [(3, 4, 6, 10)])
def test_expected_errors_fall_as_agreeing_volunteers_arrive(export_builder, tmp_path, n):
    errors = []
    for k in n:
        b = type(export_builder)()
        _agreeing(b, 1, k)
        errors.append(_subjects(b, tmp_path)["expected_errors"].iloc[0])
    assert all(later <= earlier + 1e-9 for earlier, later in zip(errors, errors[1:], strict=False)), errors


def _table(n_marks, odd_votes, labels, accepted=None, fpp=None, n_viewers=6):
    k = len(n_marks)
    return pd.DataFrame({"subject_id": np.arange(k), "n_marks": n_marks, "n_viewers": n_viewers,
                         "odd_vote": odd_votes, "label": labels,
                         "accepted": np.ones(k, bool) if accepted is None else accepted,
                         "false_pos_prob": np.zeros(k) if fpp is None else fpp})


def test_label_probability_is_monotone_in_the_votes():
    # all normal clumps with 1..8 agreeing marks, plus an odd-labelled 2-of-3 clump
    n = np.arange(1, 9)
    p = label_probabilities(_table(n, np.zeros(8), np.ones(8, int)))
    assert np.all(np.diff(p) > 0) and p[-1] > 0.99
    split = label_probabilities(_table([4, 4, 4], [0.0, 0.25, 0.5], [1, 1, 1]))
    assert split[0] > split[1] > split[2]


def test_expected_errors_are_monotone_in_false_pos_prob_and_misses():
    clumps = _table([5, 5, 5], [0, 0, 0], [1, 1, 1], fpp=[0.01, 0.2, 0.4])
    subj = pd.DataFrame({"subject_id": [0, 1, 2], "n_viewers": [5, 5, 5], "expected_num_false_neg": [0.0] * 3})
    e = apply_stopping_rule(subj, clumps, None, retire_below=0.1)["expected_errors"].to_numpy()
    assert e[0] < e[1] < e[2]
    more_missed = subj.assign(expected_num_false_neg=[0.0, 0.1, 0.3])
    e2 = apply_stopping_rule(more_missed, clumps, None, retire_below=0.1)["expected_errors"].to_numpy()
    assert np.all(e2 >= e) and e2[2] > e[2]


def test_reasons_and_option_checks():
    clumps = _table([6], [0], [1], fpp=[0.3])
    subj = pd.DataFrame({"subject_id": [0, 7], "n_viewers": [6, 0], "expected_num_false_neg": [0.05, np.nan]})
    out = apply_stopping_rule(subj, clumps, None, retire_below=0.1).set_index("subject_id")
    assert out.loc[0, "finished_reason"].startswith("not finished: expected errors 0.35 >= 0.1 (missed 0.05, "
                                                    "false 0.30, labels")
    assert out.loc[7, "finished_reason"] == "not finished: 0 classifications < 3"
    assert not out["is_finished"].any()
    with pytest.raises(ClumptoolError, match="--retire-below"):
        apply_stopping_rule(subj, clumps, None, retire_below=0)
    with pytest.raises(ClumptoolError, match="--min-classifications"):
        AggregateOptions(min_classifications=0)


def test_aggregate_cli_writes_the_rule_and_refuses_bad_options(export_builder, tmp_path):
    _obvious_crowd(export_builder)
    _agreeing(export_builder, 1, 4)
    _agreeing(export_builder, 2, 2, prefix="w")
    export = export_builder.write(tmp_path / "e.csv")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["aggregate", str(export), "--out", str(out), "--format", "csv", "--quiet",
                                  "--retire-below", "0.05", "--min-classifications", "2"])
    assert r.exit_code == 0, r.output
    s = pd.read_csv(out / "subjects.csv").set_index("subject_id")
    assert {"expected_errors", "is_finished", "finished_reason"} <= set(s.columns)
    assert s.loc[1, "is_finished"] and "< 0.05 with 4 classifications" in s.loc[1, "finished_reason"]
    before = sorted(p.name for p in out.iterdir())
    for args, name in ((["--retire-below", "-1"], "--retire-below"), (["--min-classifications", "0"],
                                                                      "--min-classifications")):
        r = CliRunner().invoke(main, ["aggregate", str(export), "--out", str(out), *args])
        assert r.exit_code == 2 and name in r.output and "default" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in out.iterdir()) == before


def _old_likelihoods(m, n):
    """The zero-truncated binomial likelihoods with scipy.stats, one row per candidate (a spot marked by m >= 1
    exists only because someone marked it)."""
    from scipy.stats import binom

    pmf = binom.pmf(m[:, None], n[:, None], THETA_GRID[None, :])
    seen = 1.0 - binom.pmf(0, n[:, None], THETA_GRID[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):  # n = 0: no viewer, the untruncated row is used
        return np.where(m[:, None] >= 1, pmf / seen, pmf)


def _old_prior(m, n, iterations=100):
    m, n = _counts(m, n)
    uniform = np.full(len(THETA_GRID), 1.0 / len(THETA_GRID))
    lik, w = _old_likelihoods(m, n), uniform.copy()
    for _ in range(iterations):
        post = lik * w
        post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
        w = post.mean(axis=0)
    eps = PRIOR_PSEUDO_CANDIDATES / (PRIOR_PSEUDO_CANDIDATES + len(m))
    return (1 - eps) * w + eps * uniform


def _old_flip(m, n, accepted, prior, split=0.3):
    m, n = _counts(m, n)
    post = _old_likelihoods(m, n) * prior
    below = post[:, THETA_GRID < split].sum(axis=1) / np.maximum(post.sum(axis=1), 1e-300)
    return np.where(accepted, below, 1.0 - below)


@pytest.mark.parametrize("seed", range(4))
def test_vote_share_arithmetic_equals_the_scipy_stats_version(seed):
    """Closed-form (truncated) likelihoods over distinct (m, n) pairs = scipy.stats.binom per candidate."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 3000))
    n = rng.integers(0, [6, 25, 60, 400][seed], size).astype(float)
    m = np.minimum(rng.binomial(n.astype(int), rng.choice([0.05, 0.6, 0.9], size)), n).astype(float)
    m[: size // 10] = n[: size // 10] + 2  # more markers than viewers: clipped alike
    table, counts, row_pair = _binomial_table(*_counts(m, n))
    np.testing.assert_allclose(table[row_pair], _old_likelihoods(*_counts(m, n)), rtol=1e-9, atol=1e-300)
    assert counts.sum() == size
    prior = vote_share_prior(m, n)
    np.testing.assert_allclose(prior, _old_prior(m, n), rtol=1e-9, atol=1e-15)
    accepted = rng.random(size) < 0.5
    np.testing.assert_allclose(flip_probabilities(m, n, accepted, prior), _old_flip(m, n, accepted, prior),
                               rtol=1e-9, atol=1e-15)


def test_the_stopping_rule_does_not_import_scipy_stats():
    """scipy.stats costs most of a second to import; the rule needs only log-gamma."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, pandas as pd; from clumptool.aggregation.stopping import apply_stopping_rule; "
            "apply_stopping_rule(pd.DataFrame({'subject_id': [0], 'n_viewers': [5], 'expected_num_false_neg': [0.1]}), "
            "pd.DataFrame({'subject_id': [0], 'n_marks': [4], 'n_viewers': [5], 'odd_vote': [0.0], 'label': [1], "
            "'accepted': [True], 'false_pos_prob': [0.01]})); print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _stray_galaxies(n=40, machine_marks=None, machine_evidence=None, single_click_real=None):
    """Galaxies 0..n-1, 5 viewers each: a 5-of-5 clump and a rejected one-click candidate that the crowd model
    calls 80% real (its visibility mixture: a faint clump one of five saw); with a detector's columns if given."""
    subjects, clumps = _stray_tables(n, machine_marks, machine_evidence)
    return apply_stopping_rule(subjects, clumps, None, retire_below=0.1, single_click_real=single_click_real)


def _stray_tables(n, machine_marks=None, machine_evidence=None):
    clumps = pd.DataFrame({"subject_id": np.r_[np.arange(n), np.arange(n)], "n_marks": [5] * n + [1] * n,
                           "n_viewers": 5, "odd_vote": 0.0, "label": 1, "accepted": [True] * n + [False] * n,
                           "false_pos_prob": [0.0] * n + [0.2] * n})
    if machine_marks is not None:
        clumps["n_machine_marks"] = machine_marks
        clumps["machine_evidence"] = machine_evidence
    subjects = pd.DataFrame({"subject_id": np.arange(n), "n_viewers": 5, "expected_num_false_neg": 0.8})
    return subjects, clumps


def test_a_detector_silent_on_a_single_click_lets_its_galaxy_finish_and_a_confirming_one_does_not():
    n = 40
    humans = _stray_galaxies(n)
    assert (humans["expected_missed"] >= 0.8).all() and not humans["is_finished"].any()
    # a detector that marked every 5-of-5 clump (+4) and is silent on the clicks (-4.6, its cap), where a full
    # crowd measured 2% of one-of-five clicks real: the click is judged by that rate, its vote share (1 of 5, where
    # the crowd's 1-of-5 spots are strays) and that silence
    measured = np.full(11, 0.02)
    silent = _stray_galaxies(n, [1] * n + [0] * n, [4.0] * n + [-4.6] * n, single_click_real=measured)
    assert (silent["expected_missed"] < 0.05).all() and silent["is_finished"].all()
    # the same detector where nothing measured such clicks (no --reference, no full-crowd galaxy): the vote share
    # alone is no evidence (it said 0.05 where 29% were real on another project); the model's P(real) stands
    unmeasured = _stray_galaxies(n, [1] * n + [0] * n, [4.0] * n + [-4.6] * n)
    assert (unmeasured["expected_missed"] >= 0.8).all() and not unmeasured["is_finished"].any()
    measured_elsewhere = np.full(11, np.nan)
    measured_elsewhere[3] = 0.02  # measured at three viewers, not at these galaxies' five
    assert not _stray_galaxies(n, [1] * n + [0] * n, [4.0] * n + [-4.6] * n,
                               single_click_real=measured_elsewhere)["is_finished"].any()
    # the detector marking the click too: the crowd model's own P(real) stands, the galaxy stays open
    confirmed = _stray_galaxies(n, [1] * n + [1] * n, [4.0] * n + [2.0] * n, single_click_real=measured)
    assert (confirmed["expected_missed"] >= 0.8).all() and not confirmed["is_finished"].any()


def test_a_detectors_silence_on_a_lone_click_counts_only_where_single_clicks_were_measured():
    """A lone mark (linked to no candidate) is a single click too: where nothing measured how often such clicks are
    real, the detector's silence must not lower its P(real) below what humans alone would give it."""
    n = 40
    subjects, clumps = _stray_tables(n, [1] * n + [0] * n, [4.0] * n + [-4.6] * n)
    clumps = clumps.iloc[:n]  # the 5-of-5 clumps only; each galaxy's extra click is a lone mark
    marks = pd.DataFrame({"subject_id": np.arange(n), "clump_id": -1, "real_if_unlinked_prob": 0.3,
                          "machine": False, "machine_evidence": -4.6})

    def missed(rates):
        return apply_stopping_rule(subjects, clumps, marks, retire_below=0.1,
                                   single_click_real=rates)["expected_missed"].to_numpy()

    def humans(rates):
        return apply_stopping_rule(subjects, clumps.drop(columns=["n_machine_marks", "machine_evidence"]),
                                   marks.drop(columns=["machine", "machine_evidence"]), retire_below=0.1,
                                   single_click_real=rates)["expected_missed"].to_numpy()

    np.testing.assert_allclose(missed(None), humans(None))  # unmeasured: as if no detector had looked
    np.testing.assert_allclose(missed(np.full(11, np.nan)), humans(None))
    measured = np.full(11, 0.2)
    assert (missed(measured) < humans(measured) - 0.05).all()  # measured: the silence counts (at most x0.5 in odds)


def test_the_detectors_labels_vote_with_the_agreement_rate_it_earned():
    # 30 clumps the crowd and the detector agree on (normal), then a split clump: 2 of 3 marks say odd
    n_marks = [5] * 30 + [3]
    odd_vote = [0.0] * 30 + [2 / 3]
    labels = [1] * 30 + [2]
    humans = label_probabilities(_table(n_marks, odd_vote, labels))

    def with_detector(says_odd, agrees=True):
        t = _table(n_marks, odd_vote, labels).assign(n_machine_marks=1)
        t["machine_odd_vote"] = [0.0 if agrees else 1.0] * 30 + [1.0 if says_odd else 0.0]
        return t

    backs, contradicts = (label_probabilities(with_detector(v)) for v in (True, False))
    assert backs[-1] > humans[-1] + 0.2 and contradicts[-1] < humans[-1] - 0.2
    assert label_probabilities(with_detector(True), detector_labels=False)[-1] == pytest.approx(humans[-1])
    # a detector whose labels disagree with the crowd's everywhere earns no say (agreement clipped to 0.5)
    assert label_probabilities(with_detector(True, agrees=False))[-1] == pytest.approx(humans[-1])


def test_stray_clicks_learned_as_strays_when_every_galaxy_has_three_viewers():
    """Candidates exist only because someone marked them: with the zero-truncated binomial, 300 one-of-three
    strays (θ = 0.05) and 100 three-of-three clumps teach a prior under which a lone click is probably a stray.
    Untruncated, the prior put its mass at θ ~ 0.4 and called that click real with P ~ 0.98."""
    rng = np.random.default_rng(0)
    theta = np.r_[np.full(3000, 0.05), np.full(100, 0.9)]
    m = rng.binomial(3, theta)
    m, n = m[m >= 1].astype(float), np.full(int((m >= 1).sum()), 3.0)  # only marked spots are candidates
    prior = vote_share_prior(m, n)
    assert prior[THETA_GRID < 0.15].sum() > 0.5
    real_if_one = flip_probabilities(np.array([1.0]), np.array([3.0]), np.array([False]), prior)[0]
    assert real_if_one < 0.2
    assert flip_probabilities(np.array([3.0]), np.array([3.0]), np.array([True]), prior)[0] < 0.05


def test_more_viewers_settle_a_clear_spot_but_not_one_on_the_split():
    uniform = np.full(len(THETA_GRID), 1.0 / len(THETA_GRID))
    m, n = np.array([2.0, 3.0, 10.0]), np.array([4.0, 10.0, 10.0])
    now = flip_probabilities(m, n, np.array([True, True, True]), uniform)
    after = settled_error_after(m, n, np.array([16.0, 10.0, 10.0]), uniform)
    nothing_more = settled_error_after(m, n, np.zeros(3), uniform)
    np.testing.assert_allclose(nothing_more, np.minimum(now, 1 - now), rtol=1e-9)
    assert after[0] < 0.7 * now[0]            # 2 of 4: sixteen more settle most of it
    assert after[1] > 0.25                    # 3 of 10, on the 0.3 split: ten more leave it near a coin toss
    assert after[2] < 1e-4 and now[2] < 1e-4
    # the detector's say stays: its silence keeps a spot's verdict uncertain only as much as it disagrees
    assert settled_error_after(m[:1], n[:1], np.array([16.0]), uniform, np.array([4.6]))[0] < after[0]


def test_more_marks_settle_a_split_label_unless_nobody_marks_it():
    clumps = _table([4] * 30 + [4], [0.0] * 30 + [0.5], [1] * 30 + [2])
    lm = label_model(clumps)
    now = 1 - label_probabilities(clumps)[-1]

    def one(share):
        return label_error_after(lm, clumps["label"].to_numpy(), np.full(31, share), np.full(31, 16.0))[-1]

    assert one(0.0) == pytest.approx(now)
    assert one(1.0) < 0.5 * now


def _split_spot_galaxy(b, n, m, sid=3):
    """Galaxy ``sid``: n viewers all mark the two clumps, the first m also a third spot."""
    rng = np.random.default_rng(5)
    for v in range(n):
        marks = [(float(x + rng.normal(0, 1.0)), float(y + rng.normal(0, 1.0)), 0) for x, y in CLUMPS]
        if v < m:
            marks.append((float(200 + rng.normal(0, 1.0)), float(60 + rng.normal(0, 1.0)), 0))
        b.add(sid, f"v{v}", marks)


def test_a_galaxy_more_volunteers_would_not_settle_is_stalled_not_finished(export_builder, tmp_path):
    _obvious_crowd(export_builder, n=12)
    _split_spot_galaxy(export_builder, 12, 4)  # a third of the crowd marks a spot: it sits on the split
    s = _subjects(export_builder, tmp_path)
    assert not s.loc[3, "is_finished"] and s.loc[3, "is_stalled"]
    assert s.loc[3, "expected_errors"] >= 0.1 and s.loc[3, "expected_gain"] < 0.1
    assert s.loc[3, "finished_reason"].startswith("stalled: expected errors")
    assert "8 classifications left before 20" in s.loc[3, "finished_reason"]
    assert not s.drop(index=3)["is_stalled"].any()  # the unanimous galaxies finish
    at_limit = _subjects(export_builder, tmp_path, retirement_limit=12)  # nothing left to spend: just unfinished
    assert not at_limit.loc[3, "is_stalled"] and not at_limit.loc[3, "is_finished"]
    assert at_limit.loc[3, "expected_gain"] == pytest.approx(0.0, abs=1e-12)


def test_a_contested_galaxy_early_on_is_not_stalled(export_builder, tmp_path):
    _obvious_crowd(export_builder, n=4)
    _split_spot_galaxy(export_builder, 4, 2)  # 2 of 4: sixteen more volunteers would settle it
    s = _subjects(export_builder, tmp_path)
    assert not s.loc[3, "is_finished"] and not s.loc[3, "is_stalled"]
    assert s.loc[3, "finished_reason"].startswith("not finished: expected errors")


def test_retirement_limit_is_checked():
    with pytest.raises(ClumptoolError, match="--retirement-limit 0: must be a whole number >= 1"):
        AggregateOptions(retirement_limit=0)


def test_marks_by_volunteers_who_mark_every_centre_are_no_votes_for_a_central_clump():
    clumps = pd.DataFrame({"subject_id": [1, 1], "clump_id": [0, 1], "n_marks": [4, 4], "n_viewers": [6, 6],
                           "central": [True, False]})
    marks = pd.DataFrame({"subject_id": [1] * 8, "clump_id": [0] * 4 + [1] * 4,
                          "centre_rate": [0.9, 0.9, 0.9, 0.0] + [0.9] * 4})
    m, n = clump_vote_counts(clumps, marks)
    assert m.tolist() == pytest.approx([4 - 2.7, 4]) and n.tolist() == pytest.approx([6 - 2.7, 6])
    uniform = np.full(len(THETA_GRID), 1.0 / len(THETA_GRID))
    doubt = flip_probabilities(m, n, np.array([True, True]), uniform)
    assert doubt[0] > 2 * doubt[1]  # 1.3 of 3.3 is a split crowd; 4 of 6 off-centre is not
    assert clump_vote_counts(clumps, marks.drop(columns="centre_rate"))[0].tolist() == [4, 4]


def test_a_galaxy_stalls_only_after_half_its_retirement_limit(export_builder, tmp_path):
    """With fewer viewers the preposterior would extrapolate vote shares learned from a few viewers each."""
    _obvious_crowd(export_builder, n=10)
    _split_spot_galaxy(export_builder, 10, 4)  # 4 of 10 mark a spot
    at_half = _subjects(export_builder, tmp_path, retirement_limit=20)
    before_half = _subjects(export_builder, tmp_path, retirement_limit=21)
    assert at_half.loc[3, "is_stalled"] and at_half.loc[3, "expected_gain"] < 0.1
    assert before_half.loc[3, "expected_gain"] < 0.1  # as little to gain, but seen by fewer than half: open
    assert not before_half.loc[3, "is_stalled"] and not before_half.loc[3, "is_finished"]


def test_a_measured_single_click_rate_keeps_a_galaxy_open_that_a_silent_detector_would_close():
    """Stop 21: at 3 viewers the vote share called one click a stray (0.05) where 29% were real, and a detector
    that barely spoke (log odds -0.07) retired such galaxies with the clump missed. The rate measured where the
    galaxies had their full crowd is the floor of that click's P(real), before the detector's evidence."""
    n = 40
    marks, weak, sure = [1] * n + [0] * n, [4.0] * n + [-0.07] * n, [4.0] * n + [-4.6] * n
    low = np.r_[np.nan, np.full(10, 1e-3)]  # measured: such clicks are strays
    assert _stray_galaxies(n, marks, weak, single_click_real=low)["is_finished"].all()  # 1 of 5 is a stray
    rates = np.r_[np.nan, np.full(10, 0.15)]
    measured = _stray_galaxies(n, marks, weak, single_click_real=rates)
    assert (measured["expected_missed"] >= 0.14).all() and not measured["is_finished"].any()
    # a detector sure there is nothing there may still settle it (its silence on one click is worth x0.5 at
    # most: 0.15 -> 0.08), but not a click a third of whose like are real (0.3 -> 0.18)
    assert _stray_galaxies(n, marks, sure, single_click_real=rates)["is_finished"].all()
    assert not _stray_galaxies(n, marks, sure, single_click_real=2 * rates)["is_finished"].any()
    # unmeasured (NaN, or no rates at all): not the vote share alone, but the crowd model's P(real), as without a
    # detector (0.8 here), so neither detector closes the galaxy
    for unmeasured in (np.full(11, np.nan), None):
        for evidence in (weak, sure):
            out = _stray_galaxies(n, marks, evidence, single_click_real=unmeasured)
            assert (out["expected_missed"] >= 0.8).all() and not out["is_finished"].any()


def test_galaxies_under_half_the_limit_and_not_finished_are_in_progress():
    """in_progress: not finished and under half the retirement limit, so volunteers are still at it (train leaves
    it out); a finished galaxy, or one that has had half its limit, is a label."""
    subjects = pd.DataFrame({"subject_id": [0, 1, 2, 3], "n_viewers": [2, 5, 5, 10],
                             "expected_num_false_neg": [0.01, 0.01, 0.9, 0.9]})
    clumps = pd.DataFrame({"subject_id": [0, 1, 2, 3], "n_marks": [2, 5, 5, 10], "n_viewers": [2, 5, 5, 10],
                           "odd_vote": 0.0, "label": 1, "accepted": True, "false_pos_prob": 0.001})
    out = apply_stopping_rule(subjects, clumps, retire_below=0.1, min_classifications=3, retirement_limit=20)
    assert out["is_finished"].tolist() == [False, True, False, False]
    assert out["in_progress"].tolist() == [True, False, True, False]
    assert out["awaiting_volunteers"].tolist() == [True, False, True, True]  # all under the limit but the finished
    at_limit = apply_stopping_rule(subjects.assign(n_viewers=20), clumps.assign(n_viewers=20, n_marks=20),
                                   retire_below=0.1, retirement_limit=20)
    assert not at_limit["awaiting_volunteers"].any()  # the workflow retired them at its limit
