"""The pure pieces of the whole-loop bench (bench/al_loop.py, bench/lean.py): lean truncation and cost accounting.

The loop itself is an experiment in bench/ (it trains detectors); these are the parts its figures rest on.
"""

import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import al_loop
    import lean

    return al_loop, lean


def _export(order: str) -> pd.DataFrame:
    """An export whose rows arrive in ``order`` (one letter per classification: the galaxy it is of)."""
    ids = {"a": "101", "b": "102", "c": "103"}
    return pd.DataFrame({"classification_id": [str(i) for i in range(len(order))],
                         "subject_ids": [ids[c] for c in order]})


def test_volunteers_arrive_one_by_one_and_a_finished_galaxy_keeps_only_its_first_classifications(bench):
    _, lean = bench
    cls = _export("abacbabcbababbab")  # a: 7, b: 7, c: 2 classifications, interleaved
    sid = cls["subject_ids"].to_numpy()
    rank = lean.queue_rank(cls)
    assert rank.tolist()[:6] == [0, 0, 1, 0, 1, 2]
    seen = []

    def finished(keep: np.ndarray, k: int) -> list:
        """a is finished once it has 4 classifications; b never; c once it has 3 (it only ever gets 2)."""
        kept = pd.Series(sid[keep]).value_counts()
        seen.append((k, kept.to_dict()))
        return [g for g, need in (("101", 4), ("103", 3)) if kept.get(g, 0) >= need]

    stops, retired = lean.adaptive_stops(sid, rank, finished, first=3, cap=6)
    assert retired == {"101"}
    assert stops.to_dict() == {"101": 4, "102": 6, "103": 2}  # b: the cap; c: all it had
    # the rule saw each galaxy's first k, and a finished galaxy stays frozen at its count afterwards
    assert seen[0] == (3, {"101": 3, "102": 3, "103": 2})
    assert seen[1] == (4, {"101": 4, "102": 4, "103": 2})
    assert seen[2] == (5, {"101": 4, "102": 5, "103": 2})
    assert [k for k, _ in seen] == [3, 4, 5, 6]


def test_lean_cut_keeps_each_galaxys_first_classifications_in_export_order(bench):
    al_loop, _ = bench
    cls = _export("abacbabcbab")
    stops = pd.Series({"101": 2, "102": 3})  # c is not in the pool's stops: it keeps none
    cut = al_loop.lean_cut(cls, stops)
    assert cut["classification_id"].tolist() == ["0", "1", "2", "4", "6"]  # a: rows 0, 2; b: rows 1, 4, 6
    assert al_loop.lean_cut(cls, pd.Series({"101": 0, "102": 0, "103": 0})).empty


def test_cost_is_the_classifications_of_the_labelled_galaxies_under_the_policy(bench):
    al_loop, _ = bench
    cls = _export("abacbabcbab")
    assert al_loop.classifications_spent(cls, ["101", "103"]) == 4 + 2
    lean = al_loop.lean_cut(cls, pd.Series({"101": 2, "102": 3, "103": 1}))
    assert al_loop.classifications_spent(lean, ["101", "103"]) == 2 + 1
    assert al_loop.classifications_spent(lean, []) == 0


def test_factor_and_budget_matched_f1_in_classifications(bench):
    al_loop, _ = bench
    curves = pd.DataFrame({
        "run": ["random, fixed20"] * 3 + ["entropy, lean"] * 3,
        "classifications": [600, 1000, 1400, 180, 300, 420],
        "f1": [0.2, 0.4, 0.5, 0.3, 0.5, 0.6],
    })
    sv = al_loop.label_saving(curves, "entropy, lean", "random, fixed20", "f1", x="classifications", key="run")
    assert sv["target"] == 0.5 and sv["n_baseline_final"] == 1400
    assert sv["n_strategy"] == pytest.approx(300.0)
    assert sv["factor"] == pytest.approx(1400 / 300)
    never = al_loop.label_saving(curves.assign(f1=[0.2, 0.4, 0.5, 0.1, 0.2, 0.3]), "entropy, lean",
                                 "random, fixed20", x="classifications", key="run")
    assert never["n_strategy"] is None and never["factor"] is None
    bm = al_loop.budget_matched(curves, [300, 800, 1500])
    assert bm.loc[300, "entropy, lean"] == pytest.approx(0.5)
    assert bm.loc[800, "random, fixed20"] == pytest.approx(0.3)
    assert np.isnan(bm.loc[800, "entropy, lean"])  # beyond what lean spent: not extrapolated
    assert np.isnan(bm.loc[300, "random, fixed20"]) and np.isnan(bm.loc[1500, "random, fixed20"])


def test_lean_detector_recut_keeps_the_new_galaxies_stops_and_leaves_the_others(bench):
    al_loop, _ = bench
    oracle = _export("abacbabcbab")  # a: 4, b: 5, c: 2 classifications
    export = al_loop.lean_cut(oracle, pd.Series({"101": 2, "102": 3, "103": 2}))  # the run so far (lean)
    cut = al_loop.recut(oracle, export, pd.Series({"102": 1, "103": 5}))  # b and c newly selected
    # a untouched (rows 0, 2); b cut to its first classification (row 1); c keeps all it has (rows 3, 7), never 5
    assert cut["classification_id"].tolist() == ["0", "1", "2", "3", "7"]
    assert al_loop.classifications_spent(cut, ["101", "102", "103"]) == 2 + 1 + 2


def test_cached_stops_are_reused_only_while_the_stamp_is_the_same(bench, tmp_path):
    al_loop, _ = bench
    calls = []

    def compute(n: int):
        def run() -> pd.Series:
            calls.append(n)
            return pd.Series({"0101": n}, name="classifications").rename_axis("subject_id")
        return run

    path = tmp_path / "stops.csv"
    first = al_loop.cached_stops(path, {"model": "v1"}, compute(4))
    again = al_loop.cached_stops(path, {"model": "v1"}, compute(9))
    other = al_loop.cached_stops(path, {"model": "v2"}, compute(7))
    assert calls == [4, 7]
    assert first.to_dict() == again.to_dict() == {"0101": 4}  # ids stay strings (leading zero kept)
    assert other.to_dict() == {"0101": 7}


def test_a_cached_model_is_reused_only_for_the_labels_it_was_trained_on(bench):
    al_loop, _ = bench
    cfg = al_loop.LoopConfig()
    boxes = pd.DataFrame({"subject_id": ["101", "102"], "x_min": [1.0, 5.0], "y_min": [2.0, 6.0],
                          "x_max": [3.0, 7.0], "y_max": [4.0, 8.0], "label": [1, 2]})
    stamp = al_loop.training_stamp(["101", "102"], boxes, cfg)
    assert al_loop.training_stamp(["102", "101"], boxes.iloc[::-1], cfg) == stamp  # order does not matter
    moved = boxes.assign(x_max=[3.0, 7.5])  # another rule's consensus: one box differs
    assert al_loop.training_stamp(["101", "102"], moved, cfg) != stamp
    assert al_loop.training_stamp(["101"], boxes, cfg) != stamp
    looser = al_loop.LoopConfig(retire_below=0.2)
    assert al_loop.training_stamp(["101", "102"], boxes, looser) != stamp


def test_the_best_saving_is_taken_only_where_the_finished_galaxies_are_right(bench):
    _, lean = bench
    table = pd.DataFrame({
        "crowd": ["default"] * 4,
        "strategy": ["fixed 20", "adaptive (humans + detector, < 0.1)", "adaptive (humans + detector, < 0.2)",
                     "adaptive (humans + detector, < 0.3)"],
        "saving": [1.0, 3.5, 4.1, 4.9], "cls/galaxy": [20.0, 5.7, 4.9, 4.1], "F1": [0.995, 0.994, 0.993, 0.990],
        "fin compl": [1.0, 0.99, 0.98, 0.96], "fin purity": [1.0, 1.0, 0.99, 0.99]})
    best = lean.best_matched_savings(table)
    assert best[["line", "saving", "threshold"]].values.tolist() == [["adaptive (humans + detector)", 4.1, 0.2]]


def _loop_curves(f1: list[float], cls: list[float]) -> pd.DataFrame:
    """One loop run's curves: (random, fixed20) then (entropy, lean-detector), two rounds each."""
    return pd.DataFrame({
        "run": ["random, fixed20"] * 2 + ["entropy, lean-detector"] * 2, "round": [0, 1, 0, 1],
        "n_labelled": [30, 50] * 2, "classifications": cls, "completeness": f1, "purity": f1, "f1": f1,
        "best_f1": f1})


def test_pooled_runs_average_per_round_and_the_interval_spans_the_runs(bench):
    al_loop, _ = bench
    a = _loop_curves([0.2, 0.6, 0.2, 0.6], [600, 1000, 200, 300])   # lean reaches 0.6 with 300: 3.33x
    b = _loop_curves([0.2, 0.4, 0.2, 0.5], [600, 1000, 200, 260])   # lean reaches 0.4 with 240: 4.17x
    mean = al_loop.mean_curves([a, b])
    lean = mean[mean["run"] == "entropy, lean-detector"]
    assert lean["classifications"].tolist() == [200, 280] and lean["f1"].tolist() == pytest.approx([0.2, 0.55])
    table = al_loop.pooled_whole_loop([a, b], "random, fixed20", resamples=400, goal=4.0)
    row = table[(table["metric"] == "f1") & (table["run"] == "entropy, lean-detector")].iloc[0]
    # mean baseline final 0.5; the mean lean curve (200, 0.2) -> (280, 0.55) reaches it at 200 + 80 * 0.3 / 0.35
    assert row["target"] == pytest.approx(0.5)
    assert row["classifications_to_target"] == pytest.approx(200 + 80 * 0.3 / 0.35)
    assert row["factor"] == pytest.approx(1000 / (200 + 80 * 0.3 / 0.35))
    # the draws are {a, a}, {b, b} and the mixed pair: the interval runs from a's factor to b's
    assert row["factor_low"] == pytest.approx(1000 / 300) and row["factor_high"] == pytest.approx(1000 / 240)
    assert 0.1 < row["p_goal"] < 0.4   # only {b, b} (a quarter of the draws) is at >= 4x
    identical = al_loop.pooled_whole_loop([a, a], "random, fixed20", resamples=50)
    one = identical[(identical["metric"] == "f1") & (identical["run"] == "entropy, lean-detector")].iloc[0]
    assert one["factor_low"] == one["factor_high"] == pytest.approx(1000 / 300)


def test_runs_of_different_loop_settings_are_not_pooled(bench):
    al_loop, _ = bench
    a = _loop_curves([0.2, 0.6, 0.2, 0.6], [600, 1000, 200, 300])
    shorter = a.assign(n_labelled=[30, 40] * 2)
    from clumptool.common.errors import ClumptoolError

    with pytest.raises(ClumptoolError, match="seed-7.*differ"):
        al_loop.mean_curves([a, shorter], names=["seed-0", "seed-7"])


def test_the_lean_bench_draws_every_crowd_and_threshold_of_its_table(bench, tmp_path):
    _, lean = bench
    rows = []
    for crowd in ("default", "confusion"):
        for k, f1 in ((20, 0.99), (5, 0.93)):
            rows.append({"crowd": crowd, "strategy": f"fixed {k}", "cls/galaxy": float(k), "p10": k, "p90": k,
                         "F1": f1})
        for t, n in ((0.1, 6.0), (0.2, 5.0)):
            rows.append({"crowd": crowd, "strategy": f"adaptive (humans, < {t:g})", "cls/galaxy": n, "p10": 3,
                         "p90": 11, "F1": 0.985})
    figure = lean.plot_tradeoff(pd.DataFrame(rows), tmp_path / "lean.png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lean.png"]  # written atomically: no temporary file left


def test_the_oracle_counts_a_galaxys_errors_as_the_stopping_rule_does(bench):
    """Position errors: false clumps and missed detectable ones (a missed undetectable clump is no error); label
    errors: matched clumps with the wrong label; a galaxy with no truth and nothing found has none."""
    _, lean = bench
    truth = pd.DataFrame({"subject_id": [1, 1, 1], "x": [10.0, 50.0, 90.0], "y": [10.0, 50.0, 90.0],
                          "label": [1, 2, 1], "detectable": [True, True, False]})
    clumps = pd.DataFrame({"subject_id": [1, 1, 1, 3], "x": [11.0, 50.5, 150.0, 5.0], "y": [10.0, 50.0, 150.0, 5.0],
                           "label": [1, 1, 1, 2], "accepted": [True, True, True, True]})
    res = types.SimpleNamespace(clumps=clumps)
    errors = lean.galaxy_errors(res, truth, 5.0, [1, 2, 3])
    assert errors.loc[1].tolist() == [1, 1]   # the clump at 150 is false; 50's label is wrong; 90 undetectable
    assert errors.loc[2].tolist() == [0, 0] and errors.loc[3].tolist() == [1, 0]
    res.clumps = clumps[clumps["x"] != 11.0]
    assert lean.galaxy_errors(res, truth, 5.0, [1]).loc[1].tolist() == [2, 1]  # the clump at 10 missed too
