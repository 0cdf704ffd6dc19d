"""Clump labels weighted by each volunteer's label skill (aggregation/labels.py), against known truth."""

from __future__ import annotations

import numpy as np

from clumptool.aggregation.labels import label_votes


def _crowd(seed: int = 0, n_clumps: int = 400, per_clump: int = 5):
    """Half the volunteers pick the right tool 95% of the time, half 60%; 20% of the clumps are odd."""
    rng = np.random.default_rng(seed)
    n_vol = 40
    q_true = np.where(np.arange(n_vol) < n_vol // 2, 0.95, 0.6)
    truth_odd = rng.random(n_clumps) < 0.2
    clump = np.repeat(np.arange(n_clumps), per_clump)
    vol = np.concatenate([rng.choice(n_vol, per_clump, replace=False) for _ in range(n_clumps)])
    right = rng.random(len(vol)) < q_true[vol]
    odd = np.where(right, truth_odd[clump], ~truth_odd[clump])
    return vol, clump, odd, truth_odd, q_true, n_vol


def test_weighted_labels_beat_the_majority_and_learn_who_is_careful():
    vol, clump, odd, truth_odd, q_true, n_vol = _crowd()
    votes = label_votes(vol, clump, odd, np.ones(len(truth_odd), bool), n_vol)
    majority_odd = np.bincount(clump, weights=odd.astype(float)) > np.bincount(clump) / 2
    weighted_right = ((votes.label == 2) == truth_odd).mean()
    majority_right = (majority_odd == truth_odd).mean()
    assert weighted_right > majority_right + 0.02
    assert weighted_right > 0.95
    careful, careless = votes.volunteer_agreement[q_true > 0.9], votes.volunteer_agreement[q_true < 0.9]
    assert careful.mean() > 0.85 and careless.mean() < 0.75
    # the log odds are calibrated enough to rank: the clumps it is least sure of hold most of its mistakes
    wrong = (votes.label == 2) != truth_odd
    unsure = np.abs(votes.odd_log_odds) < np.median(np.abs(votes.odd_log_odds))
    assert wrong[unsure].sum() >= 0.8 * wrong.sum()


def test_two_careful_volunteers_outvote_three_careless_ones():
    vol, clump, odd, truth_odd, q_true, n_vol = _crowd(seed=1)
    extra = len(truth_odd)  # one more clump: the careful volunteers 0 and 1 say odd, careless 30-32 say normal
    votes = label_votes(np.r_[vol, [0, 1, 30, 31, 32]], np.r_[clump, [extra] * 5],
                        np.r_[odd, [True, True, False, False, False]], np.ones(extra + 1, bool), n_vol)
    assert votes.label[extra] == 2 and votes.odd_log_odds[extra] > 1.0


def test_unaccepted_clumps_do_not_teach_skills_and_unmarked_clumps_take_the_prior():
    vol, clump, odd, truth_odd, q_true, n_vol = _crowd(seed=2)
    none_accepted = label_votes(vol, clump, odd, np.zeros(len(truth_odd), bool), n_vol)
    np.testing.assert_allclose(none_accepted.volunteer_agreement, none_accepted.volunteer_agreement[0])
    with_empty = label_votes(vol, clump, odd, np.ones(len(truth_odd) + 1, bool), n_vol)
    assert with_empty.label[-1] == 1 and with_empty.odd_log_odds[-1] == with_empty.prior_log_odds < 0


def test_aggregate_labels_follow_the_volunteers_who_earned_it(export_builder, tmp_path):
    """Through the whole consensus: on 40 galaxies two careful volunteers always pick the right tool and three
    careless ones the wrong one 45% of the time; where the careful two say odd and the careless three say
    normal, the clump is odd, and the volunteers table says who is careful."""
    from clumptool.aggregation.pipeline import AggregateOptions, aggregate

    rng = np.random.default_rng(3)
    careful, careless = ["c0", "c1"], ["n0", "n1", "n2"]
    for sid in range(100, 140):
        odd = sid % 4 == 0
        for v in careful + careless:
            tool = int(odd) if v in careful or rng.random() > 0.45 else int(not odd)
            export_builder.add(sid, v, [(150.0 + rng.normal(0, 1), 220.0 + rng.normal(0, 1), tool)])
    for v in careful + careless:
        export_builder.add(1, v, [(200.0 + rng.normal(0, 1), 180.0 + rng.normal(0, 1), int(v in careful))])
    res = aggregate(export_builder.write(tmp_path / "e.csv"), options=AggregateOptions())
    clump = res.clumps[(res.clumps["subject_id"] == 1) & res.clumps["accepted"]]
    assert len(clump) == 1 and clump["odd_vote"].iloc[0] == 0.4  # the plain majority says normal
    assert clump["label"].iloc[0] == 2 and clump["odd_log_odds"].iloc[0] > 0
    q = res.volunteers.set_index("user_name")["label_agreement"]
    assert q[careful].min() > 0.85 > 0.75 > q[careless].max()
