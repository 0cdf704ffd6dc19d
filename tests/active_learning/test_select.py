"""select-next-batch end to end on a tiny random-init detector and 64 px images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clumptool.active_learning.ledger import Ledger
from clumptool.active_learning.select import (
    ScoringOptions,
    choose,
    score_pool,
    select_next_batch,
    unfinished_galaxies,
)
from clumptool.common.errors import ClumptoolError

N_IMAGES = 8


def _tiny_spec(dropout: float = 0.0):
    from clumptool.detection.spec import make_spec

    return make_spec("resnet18", image_size=64, crop=None, box_dropout=dropout, fpn_channels=16,
                     representation_size=32, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                     detections_per_img=10)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 galaxies (64 px, 0-2 bright blobs), a random-init model with and one without box dropout."""
    from clumptool.detection.io import save_model
    from clumptool.detection.model import build_model

    root = tmp_path_factory.mktemp("al")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        arr = rng.uniform(0, 40, (64, 64, 3)).astype(np.uint8)
        for _ in range(i % 3):
            x, y = rng.integers(10, 50, 2)
            arr[y:y + 5, x:x + 5] = 240
        Image.fromarray(arr).save(images / f"{5000 + i}.png")
    torch.manual_seed(0)
    save_model(root / "model", build_model(_tiny_spec()), _tiny_spec())
    torch.manual_seed(1)
    save_model(root / "model_dropout", build_model(_tiny_spec(0.3)), _tiny_spec(0.3))
    return root


def test_end_to_end_writes_a_zooniverse_ready_batch(tiny, tmp_path):
    labelled = tmp_path / "labelled.csv"
    pd.DataFrame({"subject_id": [5000, 5001]}).to_csv(labelled, index=False)
    out = tmp_path / "out"
    res = select_next_batch(tiny / "model", tiny / "images", out, n=2, labelled=[labelled], random_control=2,
                            diversity="none", round_name="r1", progress=False)
    sel = pd.read_parquet(out / "selection.parquet")
    for name in ("manifest.csv", "selection.png", "pool_scores.parquet", "manifest.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / "al_ledger.sqlite").exists()  # the ledger is shared by rounds, outside --out
    assert res.files["ledger"].endswith("local/al_ledger.sqlite")
    assert len(sel) == 4
    assert sel["rank"].tolist() == [1, 2, 3, 4]
    assert sel["control"].tolist() == [False, False, True, True]
    assert sel["strategy"].tolist() == ["tta-bald", "tta-bald", "random", "random"]
    assert not set(sel["galaxy_id"]) & {"5000", "5001"}          # labelled galaxies are excluded
    assert sel["galaxy_id"].is_unique
    # the strategy's picks are the two highest scores of the (6-galaxy) pool
    pool = pd.read_parquet(out / "pool_scores.parquet")
    assert len(pool) == N_IMAGES - 2
    top2 = set(pool.sort_values("score", ascending=False)["galaxy_id"].head(2))
    assert set(sel["galaxy_id"].head(2)) == top2
    assert (sel["score"] >= 0).all() and np.isfinite(sel["score"]).all()
    np.testing.assert_allclose(sel["score"], sel["bald"])
    # cutouts and manifest in the panoptes CLI convention
    man = pd.read_csv(out / "manifest.csv")
    assert len(man) == 4 and "#galaxy_id" in man.columns and "#al_control" in man.columns
    for f in man["file"]:
        data = (out / f).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) <= 1_048_576
    assert res.rate > 0 and res.n_scored == N_IMAGES - 2


def test_rounds_exclude_earlier_picks_and_a_rerun_resumes(tiny, tmp_path):
    out, state = tmp_path / "r1", tmp_path / "state"
    first = select_next_batch(tiny / "model", tiny / "images", out, n=2, random_control=1, state=state,
                              round_name="round-1", strategy="entropy", progress=False, plot=False)
    again = select_next_batch(tiny / "model", tiny / "images", out, n=3, random_control=0, state=state,
                              round_name="round-1", strategy="entropy", seed=5, progress=False, plot=False)
    assert again.resumed
    assert again.selection["galaxy_id"].tolist() == first.selection["galaxy_id"].tolist()
    second = select_next_batch(tiny / "model", tiny / "images", tmp_path / "r2", n=2, random_control=1,
                               state=state, round_name="round-2", strategy="entropy", progress=False, plot=False)
    assert not set(second.selection["galaxy_id"]) & set(first.selection["galaxy_id"])
    with Ledger(state / "al_ledger.sqlite") as ledger:
        assert ledger.rounds() == ["round-1", "round-2"]
        assert len(ledger.already_taken()) == 6


def test_random_strategy_is_reproducible_and_needs_no_scores(tiny, tmp_path):
    a = select_next_batch(tiny / "model", tiny / "images", tmp_path / "a", n=3, random_control=2, seed=3,
                          strategy="random", progress=False, plot=False, round_name="x")
    b = select_next_batch(tiny / "model", tiny / "images", tmp_path / "b", n=3, random_control=2, seed=3,
                          strategy="random", progress=False, plot=False, round_name="x")
    assert a.selection["galaxy_id"].tolist() == b.selection["galaxy_id"].tolist()
    assert a.selection["control"].sum() == 2


def test_choose_takes_controls_from_the_rest_of_the_pool():
    scored = pd.DataFrame({"galaxy_id": [str(i) for i in range(50)], "score": np.linspace(1, 0, 50)})
    picks = choose(scored, 5, 5, "none", None, 10, seed=0, strategy="entropy")
    assert picks["pool_index"].head(5).tolist() == [0, 1, 2, 3, 4]
    ctrl = picks[picks["control"]]["pool_index"]
    assert len(ctrl) == 10 and not set(ctrl) & set(range(5))
    assert picks["rank"].tolist() == list(range(1, 16))


def test_mc_dropout_needs_dropout(tiny, tmp_path):
    from clumptool.active_learning.pool import read_pool
    from clumptool.detection.io import load_model

    table = read_pool(tiny / "images").head(3)
    model, spec = load_model(tiny / "model")
    with pytest.raises(ClumptoolError, match="needs a model with dropout"):
        score_pool(model, spec, table, ScoringOptions(strategy="mc-bald"), progress=False)
    model, spec = load_model(tiny / "model_dropout")
    res = score_pool(model, spec, table, ScoringOptions(strategy="mc-bald", passes=3), progress=False).table
    assert len(res) == 3 and (res["score"] >= 0).all()
    assert not any(m.training for m in model.modules())  # dropout switched off again


def test_unfinished_consensus_is_sent_back(tiny, tmp_path):
    subjects = tmp_path / "subjects.csv"
    pd.DataFrame({"subject_id": [5000, 5001, 5002, 5003], "is_finished": [False, True, False, False],
                  "is_stalled": [False, False, False, True], "awaiting_volunteers": False,
                  "risk": [0.5, 0.1, 2.0, 3.0]}).to_csv(subjects, index=False)
    res = select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=1, random_control=0,
                            labelled=[subjects], include_unfinished=subjects, max_unfinished=5, strategy="entropy",
                            progress=False, plot=False, round_name="u")
    unf = res.selection[res.selection["strategy"] == "unfinished"]
    assert unf["galaxy_id"].tolist() == ["5002", "5000"]      # riskiest first, finished and stalled left out
    assert unf["score"].tolist() == [2.0, 0.5]
    assert len(res.selection) == 3


def test_galaxies_the_workflow_still_shows_are_not_uploaded_again(tiny, tmp_path):
    """In a lean project an unfinished galaxy under the retirement limit is still shown by Zooniverse
    (awaiting_volunteers): sending it back would make one galaxy two subjects. Only those the workflow retired
    at its limit unfinished go back."""
    subjects = tmp_path / "subjects.csv"
    pd.DataFrame({"subject_id": [5000, 5001, 5002], "is_finished": False, "is_stalled": False,
                  "awaiting_volunteers": [True, False, True], "risk": [0.5, 1.0, 2.0]}).to_csv(subjects, index=False)
    res = select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=1, random_control=0,
                            labelled=[subjects], include_unfinished=subjects, max_unfinished=5, strategy="entropy",
                            progress=False, plot=False, round_name="w")
    assert res.selection.loc[res.selection["strategy"] == "unfinished", "galaxy_id"].tolist() == ["5001"]


def test_a_table_that_cannot_say_which_galaxies_are_still_shown_is_refused(tiny, tmp_path):
    subjects = tmp_path / "subjects.csv"
    pd.DataFrame({"subject_id": [5000, 5001], "is_finished": False, "is_stalled": False,
                  "risk": [0.5, 1.0]}).to_csv(subjects, index=False)
    with pytest.raises(ClumptoolError, match="no awaiting_volunteers column .* aggregate again"):
        select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=1, random_control=0,
                          labelled=[subjects], include_unfinished=subjects, strategy="entropy", progress=False,
                          plot=False, round_name="x")
    assert not (tmp_path / "o").exists()


def test_with_every_pool_galaxy_labelled_the_unfinished_ones_still_go_back(tiny, tmp_path):
    """The pool is used up, but galaxies the workflow retired unfinished can still go back: the round only sends
    them, and says so."""
    subjects = tmp_path / "subjects.csv"
    ids = sorted(int(p.stem) for p in (tiny / "images").glob("*.png"))
    pd.DataFrame({"subject_id": ids, "is_finished": [i % 2 == 0 for i in range(len(ids))], "is_stalled": False,
                  "awaiting_volunteers": False, "risk": np.arange(len(ids), dtype=float)}).to_csv(subjects, index=False)
    with pytest.raises(ClumptoolError, match="nothing left to select"):
        select_next_batch(tiny / "model", tiny / "images", tmp_path / "none", n=1, random_control=0,
                          labelled=[subjects], strategy="entropy", progress=False, plot=False, round_name="y0")
    res = select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=1, random_control=0,
                            labelled=[subjects], include_unfinished=subjects, max_unfinished=2, strategy="entropy",
                            progress=False, round_name="y")
    odd = [str(i) for i in ids[1::2]][::-1][:2]  # the unfinished ones, riskiest first
    assert res.selection["galaxy_id"].tolist() == odd and set(res.selection["strategy"]) == {"unfinished"}
    assert any("only sends back unfinished galaxies" in n for n in res.notes)
    assert pd.read_parquet(tmp_path / "o" / "selection.parquet")["galaxy_id"].tolist() == odd


def test_an_uploaded_subject_is_sent_back_as_its_galaxy(tiny, tmp_path):
    """Subject 9001 is galaxy 5002 uploaded by an earlier round (galaxy_id in aggregate's table): retired at the
    limit unfinished, it goes back as galaxy 5002, the id the pool knows its image by."""
    subjects = tmp_path / "subjects.csv"
    pd.DataFrame({"subject_id": [9001], "galaxy_id": ["5002"], "is_finished": False, "is_stalled": False,
                  "awaiting_volunteers": False, "risk": [1.0]}).to_csv(subjects, index=False)
    res = select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=1, random_control=0,
                            labelled=[subjects], include_unfinished=subjects, max_unfinished=5, strategy="entropy",
                            progress=False, plot=False, round_name="g")
    assert res.selection.loc[res.selection["strategy"] == "unfinished", "galaxy_id"].tolist() == ["5002"]


def test_a_galaxy_whose_new_subject_nobody_has_classified_yet_is_not_sent_back_again(tmp_path):
    """Galaxy 5002 went back as subject 9001 last round; nobody has classified 9001 yet, so aggregate lists it from
    --subjects (0 viewers, still shown) beside 5002's own row (retired unfinished). Sending 5002 back again would
    make a third subject; galaxy 5003, retired unfinished with no newer subject, goes back."""
    subjects = tmp_path / "subjects.csv"
    pd.DataFrame({"subject_id": [5002, 9001, 5003], "galaxy_id": [None, "5002", None], "is_finished": False,
                  "is_stalled": False, "awaiting_volunteers": [False, True, False],
                  "risk": [2.0, 0.0, 1.0]}).to_csv(subjects, index=False)
    assert unfinished_galaxies(subjects, None)["galaxy_id"].tolist() == ["5003"]


def test_a_galaxy_nobody_classified_is_never_sent_back(tmp_path):
    """aggregate lists every subject of --subjects, classified or not; one nobody classified (n_viewers 0) is not
    a labelled galaxy, even where the subjects export says the workflow retired it."""
    subjects = tmp_path / "subjects.csv"
    pd.DataFrame({"subject_id": [5002, 5003], "n_viewers": [0, 20], "is_finished": False, "is_stalled": False,
                  "awaiting_volunteers": False, "risk": [0.0, 1.0]}).to_csv(subjects, index=False)
    assert unfinished_galaxies(subjects, None)["galaxy_id"].tolist() == ["5003"]


def test_pool_table_with_metadata_is_carried(tiny, tmp_path):
    table = tmp_path / "pool.csv"
    pd.DataFrame({"galaxy_id": ["5003", "5004", "5005"],
                  "image_path": [str(tiny / "images" / f"{g}.png") for g in (5003, 5004, 5005)],
                  "ra": [150.0, 151.0, 152.0], "dec": [2.0, 2.1, 2.2]}).to_csv(table, index=False)
    res = select_next_batch(tiny / "model", table, tmp_path / "o", n=2, random_control=1, strategy="entropy",
                            progress=False, plot=False, round_name="m")
    assert set(res.selection.columns) >= {"ra", "dec"}
    man = pd.read_csv(tmp_path / "o" / "manifest.csv")
    assert {"ra", "dec"} <= set(man.columns)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "--n 0: must be a whole number >= 1"),
    ({"n": 5, "candidates": 2}, "must be at least --n"),
    ({"strategy": "bald"}, "--strategy 'bald': use one of"),
    ({"random_control": -1}, "--random-control"),
])
def test_bad_options_are_clear_errors(tiny, tmp_path, kwargs, message):
    with pytest.raises(ClumptoolError, match=message):
        select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", progress=False, **kwargs)


def test_bad_pools_are_clear_errors(tiny, tmp_path):
    with pytest.raises(ClumptoolError, match="pool not found"):
        select_next_batch(tiny / "model", tmp_path / "nope", tmp_path / "o", progress=False)
    no_image = tmp_path / "pool.csv"
    pd.DataFrame({"galaxy_id": ["a"], "ra": [1.0]}).to_csv(no_image, index=False)
    with pytest.raises(ClumptoolError, match="no image column"):
        select_next_batch(tiny / "model", no_image, tmp_path / "o", progress=False)
    missing = tmp_path / "pool2.csv"
    pd.DataFrame({"galaxy_id": ["a", "b"], "image_path": [str(tiny / "images" / "5000.png"), "gone.png"]}) \
        .to_csv(missing, index=False)
    with pytest.raises(ClumptoolError, match=r"1 of 2 pool galaxies have no image file, e\.g\. b"):
        select_next_batch(tiny / "model", missing, tmp_path / "o", progress=False)
    everything = tmp_path / "all.csv"
    pd.DataFrame({"subject_id": range(5000, 5000 + N_IMAGES)}).to_csv(everything, index=False)
    with pytest.raises(ClumptoolError, match="nothing left to select"):
        select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", labelled=[everything], progress=False)


def test_cli_dry_run_and_error_exit(tiny, tmp_path):
    from clumptool.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["select-next-batch", "--model", str(tiny / "model"), "--pool", str(tiny / "images"),
                               "--n", "2", "--random-control", "1", "--strategy", "entropy", "--out",
                               str(tmp_path / "o"), "--round", "cli-1", "--upload", "--dry-run", "--project-id",
                               "1234", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "selection.parquet").exists()
    ledger_path = tmp_path / "clumptool-state" / "www.zooniverse.org" / "project-1234-workflow-none"
    with Ledger(ledger_path / "al_ledger.sqlite") as ledger:  # a dry run records nothing: no galaxy is taken
        assert not len(ledger.rows("cli-1")) and not ledger.already_taken()
    res = runner.invoke(main, ["select-next-batch", "--model", str(tiny / "model"), "--pool", str(tiny / "images"),
                               "--n", "2", "--random-control", "1", "--strategy", "entropy", "--out",
                               str(tmp_path / "o-real"), "--round", "cli-2", "--upload", "--dry-run", "--project-id",
                               "1234", "--quiet"])
    first, again = (pd.read_parquet(tmp_path / d / "selection.parquet") for d in ("o", "o-real"))
    assert first["galaxy_id"].tolist() == again["galaxy_id"].tolist()  # the same galaxies are still there to pick
    res = runner.invoke(main, ["select-next-batch", "--model", str(tiny / "model"), "--pool",
                               str(tmp_path / "missing"), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "Error:" in res.output and "pool not found" in res.output


def test_label_saving_interpolates_labels_at_equal_f1(monkeypatch):
    # the offline AL loop is an experiment: it lives in bench/ (bench/al_loop.py), not in the package
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    from al_loop import label_saving, labels_to_reach

    curves = pd.DataFrame({
        "strategy": ["random"] * 3 + ["tta-bald"] * 3,
        "n_labelled": [40, 80, 120] * 2,
        "f1": [0.2, 0.4, 0.5, 0.2, 0.5, 0.6],
    })
    assert labels_to_reach(curves[curves["strategy"] == "random"], 0.3) == pytest.approx(60.0)
    sv = label_saving(curves, "tta-bald")
    assert sv["target"] == 0.5 and sv["n_baseline_final"] == 120.0
    assert sv["n_strategy"] == pytest.approx(80.0)
    assert sv["saving"] == pytest.approx(1 / 3)
    # a baseline that reached its final value early: the conservative saving compares with that point
    bumpy = curves.assign(f1=[0.2, 0.6, 0.5, 0.2, 0.5, 0.6])
    sv = label_saving(bumpy, "tta-bald")
    assert sv["n_baseline_first"] == pytest.approx(40 + 0.3 / 0.4 * 40)
    assert sv["saving"] == pytest.approx(1 / 3)
    assert sv["saving_conservative"] == pytest.approx(1 - 80 / 70)
    worse = curves.assign(f1=[0.2, 0.4, 0.5, 0.1, 0.2, 0.3])
    assert label_saving(worse, "tta-bald")["saving"] is None


def test_upload_to_the_fake_zooniverse_and_resume(tiny, tmp_path, fake):
    from clumptool.active_learning.select import UploadRequest

    request = UploadRequest(project_id=1234, workflow_id=5678, endpoint=fake.url)
    res = select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=2, random_control=1,
                            strategy="entropy", round_name="up-1", upload=request, progress=False, plot=False)
    assert res.upload.ok, res.upload.format()
    (subject_set,) = fake.state.sets_named("up-1")  # the subject set is named after the round
    metas = [fake.state.subjects[s]["metadata"] for s in fake.state.subject_ids_in_set(subject_set["id"])]
    assert sorted(m["#galaxy_id"] for m in metas) == sorted(res.selection["galaxy_id"])
    assert sorted(m["#al_control"] for m in metas) == [0, 0, 1]
    # the same round again: same batch, nothing uploaded twice
    again = select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=2, random_control=1,
                              strategy="entropy", round_name="up-1", upload=request, progress=False, plot=False)
    assert again.resumed and again.upload.ok and again.upload.created == 0
    assert len(fake.state.requests_to("POST", r"^/api/subjects$")) == 3


def test_diversity_step_keeps_to_uncertain_candidates():
    rng = np.random.default_rng(0)
    scores = np.r_[rng.uniform(0.5, 1.0, 10), np.zeros(40)]
    scored = pd.DataFrame({"galaxy_id": [str(i) for i in range(50)], "score": scores})
    emb = rng.normal(size=(50, 8))
    picks = choose(scored, 5, 50, "kcenter", lambda idx: emb[idx], 0, seed=0, strategy="tta-bald")
    assert set(picks["pool_index"]) <= set(range(10))
    assert len(set(picks["pool_index"])) == 5


def test_labelled_ids_from_exports_and_tables(tmp_path):
    import json

    from clumptool.active_learning.pool import read_labelled_ids

    export = tmp_path / "classifications.csv"
    pd.DataFrame({"classification_id": [1, 2], "subject_ids": [111, 112],
                  "subject_data": [json.dumps({"111": {"#galaxy_id": "G7"}}), json.dumps({"112": {"ra": 1}})]}
                 ).to_csv(export, index=False)
    boxes = tmp_path / "boxes.parquet"
    pd.DataFrame({"subject_id": np.array([5, 5, 6], dtype="int64"), "x1": [0.0, 1, 2]}).to_parquet(boxes)
    assert read_labelled_ids([export, boxes]) == {"111", "112", "G7", "5", "6"}
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"name": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(ClumptoolError, match="needs 'galaxy_id', 'subject_id' or 'subject_ids'"):
        read_labelled_ids([bad])


def test_unclassified_subjects_of_an_aggregate_table_are_not_labelled(tmp_path):
    """aggregate's subjects table lists subjects nobody classified (n_viewers 0): they stay in the pool."""
    from clumptool.active_learning.pool import read_labelled_ids

    subjects = tmp_path / "subjects.parquet"
    pd.DataFrame({"subject_id": np.array([7, 8, 9], dtype="int64"), "n_viewers": [20, 0, 3]}).to_parquet(subjects)
    assert read_labelled_ids([subjects]) == {"7", "9"}


def test_scoring_leaves_the_shared_model_as_it_was(tiny):
    """Thresholds, TTA and MC dropout are per-call settings: no score threshold, mode or weight is changed."""
    from clumptool.active_learning.pool import read_pool
    from clumptool.detection.io import load_model

    table = read_pool(tiny / "images").head(4)
    model, spec = load_model(tiny / "model_dropout")
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    thresh = model.roi_heads.score_thresh
    for strategy in ("tta-bald", "mc-bald", "entropy"):
        score_pool(model, spec, table, ScoringOptions(strategy=strategy, passes=2, score_thresh=0.01), progress=False)
        assert model.roi_heads.score_thresh == thresh != 0.01
        assert not any(m.training for m in model.modules()), strategy
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_mc_dropout_scores_are_reproducible_and_follow_the_batches(tiny):
    from clumptool.active_learning.pool import read_pool
    from clumptool.detection.io import load_model

    table = read_pool(tiny / "images")
    model, spec = load_model(tiny / "model_dropout")
    opts = ScoringOptions(strategy="mc-bald", passes=3, batch_size=3)
    a = score_pool(model, spec, table, opts, seed=5, progress=False).table
    torch.manual_seed(123)  # the caller's random state does not matter
    b = score_pool(model, spec, table, opts, seed=5, progress=False).table
    pd.testing.assert_frame_equal(a, b)
    c = score_pool(model, spec, table, opts, seed=6, progress=False).table
    assert not np.allclose(a["score"], c["score"])  # the seed is used: the test can fail


def test_the_figure_shows_the_detections_of_the_scoring_pass(tiny, tmp_path, monkeypatch):
    """selection.png is drawn from the detections computed while scoring (no second detector run); they are
    the plain pass's, in original pixels, those >= 0.2 (the lowest score drawn)."""
    import clumptool.active_learning.select as select
    from clumptool.detection.image_list import ImageList
    from clumptool.detection.io import load_model
    from clumptool.detection.predicting import PostProcessed, collecting_trainer, detect_images

    seen = {}
    real = select.selection_figure

    def spy(sel, scored, detections, target):
        seen["ids"], seen["detections"] = sel["galaxy_id"].tolist(), detections
        return real(sel, scored, detections, target)

    monkeypatch.setattr(select, "selection_figure", spy)
    select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=3, random_control=1, strategy="entropy",
                      diversity="none", round_name="fig", progress=False)
    assert (tmp_path / "o" / "selection.png").stat().st_size > 0
    model, spec = load_model(tiny / "model")
    paths = sorted(str(p) for p in (tiny / "images").glob("*.png"))
    ids = [p.rsplit("/", 1)[1][:-4] for p in paths]
    ref = detect_images(collecting_trainer("cpu"), model.eval(), PostProcessed(0.2, None),
                        ImageList(ids=ids, paths=paths), spec, batch_size=8)
    ref = dict(zip(ids, ref, strict=True))
    assert sum(len(ref[g].scores) for g in seen["ids"]) > 0  # something to draw: the test can fail
    for gid in seen["ids"]:
        got = seen["detections"][gid]
        np.testing.assert_allclose(got.boxes, ref[gid].boxes, atol=1e-4)
        np.testing.assert_allclose(got.scores, ref[gid].scores, atol=1e-5)


def test_a_resumed_round_keeps_its_figure(tiny, tmp_path):
    first = select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=2, random_control=1,
                              strategy="entropy", diversity="none", round_name="again", progress=False)
    png = (tmp_path / "o" / "selection.png").read_bytes()
    again = select_next_batch(tiny / "model", tiny / "images", tmp_path / "o", n=2, random_control=1,
                              strategy="entropy", diversity="none", round_name="again", progress=False)
    assert again.resumed and not first.resumed
    assert (tmp_path / "o" / "selection.png").read_bytes() == png
