"""Robustness of ``clumptool evaluate`` and ``clumptool predict``: bad inputs, bad options, interrupts.

Each case asserts the exit code, that the message names the file/row/field or the option and says how to fix
it, and, for failures and interrupts, that the previous outputs are byte-identical afterwards.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest
from _evalpred_helpers import (
    OPERATING,
    SUBJECTS,
    catalogue_meta,
    failed,
    make_model,
    make_project,
    metrics,
    patch_threshold,
)
from harness import interrupt_when, no_traceback, run_cli, snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A project, a model with an operating threshold, a legacy model, and previous evaluate/predict sets."""
    root = tmp_path_factory.mktemp("evalpred")
    make_project(root / "project")
    make_model(root / "model", OPERATING)
    make_model(root / "legacy", None)
    return root


@pytest.fixture
def w(world, monkeypatch):
    """The world with the model's operating threshold visible, and the previous output sets in place."""
    patch_threshold(monkeypatch, world / "model", OPERATING)
    ev, cat = world / "prev-eval", world / "prev-cat"
    if not (ev / "manifest.json").exists():
        ok = run_cli("evaluate", "--model", world / "model", "--boxes", world / "project" / "truth.csv",
                     "--images", world / "project" / "images", "--out", ev, "--quiet")
        assert ok.code == 0, ok.text
    if not (cat / "manifest.json").exists():
        ok = run_cli("predict", "--model", world / "model", "--images", world / "project" / "images",
                     "--subjects", world / "project" / "subjects.csv", "--out", cat, "--quiet")
        assert ok.code == 0, ok.text
    return world


def evaluate(w: Path, *args, truth: Path | None = None, out: Path | None = None):
    return run_cli("evaluate", "--model", w / "model", "--boxes", truth or w / "project" / "truth.csv",
                   "--images", w / "project" / "images", "--out", out or w / "prev-eval", *args)


def predict(w: Path, *args, out: Path | None = None):
    return run_cli("predict", "--model", w / "model", "--images", w / "project" / "images",
                   "--out", out or w / "prev-cat", *args)


def truth_with(w: Path, tmp_path: Path, **changes) -> Path:
    """truth.csv with row 0's fields changed (row 0 is file row 2)."""
    df = pd.read_csv(w / "project" / "truth.csv")
    for k, v in changes.items():
        df[k] = df[k].astype(object)
        df.loc[0, k] = v
    path = tmp_path / "truth.csv"
    df.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------------ truth


@pytest.mark.parametrize(("changes", "needles"), [
    ({"x": -100.0}, ["row 2", "field 'x'", "outside the image", "fix or delete the row"]),
    ({"x": float("nan")}, ["row 2", "field 'x'", "not a finite number", "fix the value or delete the row"]),
    ({"y": "inf"}, ["row 2", "field 'y'", "not a finite number"]),
    ({"x": 500.0}, ["row 2", "field 'x'", "outside the 40 x 40 px image", "fix or delete the row"]),
    ({"fwhm_px": float("nan")}, ["row 2", "field 'fwhm_px'", "positive number", "fix it"]),
    ({"fwhm_px": 0.0}, ["row 2", "field 'fwhm_px'", "positive number"]),
    ({"label": 3}, ["row 2", "field 'label'", "1 .. 2", "fix the label or delete the row"]),
    ({"label": "clump"}, ["row 2", "field 'label'", "expected a class id"]),
])
def test_bad_truth_values_name_row_and_field(w, tmp_path, changes, needles):
    before = snapshot(w / "prev-eval")
    res = evaluate(w, truth=truth_with(w, tmp_path, **changes))
    failed(res, str(tmp_path / "truth.csv"), *needles)
    assert snapshot(w / "prev-eval") == before


def test_truth_without_coordinate_columns(w, tmp_path):
    pd.DataFrame({"subject_id": [1000], "ra": [1.0]}).to_csv(tmp_path / "t.csv", index=False)
    before = snapshot(w / "prev-eval")
    failed(evaluate(w, truth=tmp_path / "t.csv"), "t.csv", "x1, y1, x2, y2", "x, y", "found subject_id, ra")
    assert snapshot(w / "prev-eval") == before


def test_empty_truth_table_refuses_instead_of_completeness_one(w, tmp_path):
    pd.DataFrame(columns=["subject_id", "x", "y", "label"]).to_csv(tmp_path / "empty.csv", index=False)
    before = snapshot(w / "prev-eval")
    res = evaluate(w, truth=tmp_path / "empty.csv")
    failed(res, "empty.csv", "no true clumps", "completeness cannot be measured", "--allow-no-truth")
    assert "1.000" not in res.text
    assert snapshot(w / "prev-eval") == before


def test_truth_of_other_galaxies_refuses_then_allowed_is_undefined_never_one(w, tmp_path):
    df = pd.read_csv(w / "project" / "truth.csv").assign(subject_id=lambda d: d.subject_id + 50_000)
    df.to_csv(tmp_path / "other.csv", index=False)
    before = snapshot(w / "prev-eval")
    failed(evaluate(w, truth=tmp_path / "other.csv"), "other.csv", "none of its 5 subjects", "truth ids e.g. 51000",
           "--allow-no-truth")
    assert snapshot(w / "prev-eval") == before
    res = evaluate(w, "--allow-no-truth", truth=tmp_path / "other.csv", out=tmp_path / "ev")
    assert res.code == 0, res.text
    m = metrics(tmp_path / "ev")
    overall = m["scopes"]["overall"]["at_threshold"]
    assert overall["n_true"] == 0 and overall["completeness"] is None and overall["f1"] is None
    assert m["best_on_this_set"]["threshold"] is None
    assert "completeness undefined (no true clumps)" in res.out
    assert "undefined (no data)" in res.out and "-1.000" not in res.out  # mAP's -1 is never a number
    assert m["map"]["per_class"]["map"] is None


# ------------------------------------------------------------------------------------------------ subjects


def test_listed_subjects_without_images_are_an_error_not_fewer_galaxies(w, tmp_path):
    ids = SUBJECTS + ["777001", "777002"]
    pd.DataFrame({"subject_id": ids}).to_csv(tmp_path / "test.csv", index=False)
    before = snapshot(w / "prev-eval")
    res = evaluate(w, "--subjects", tmp_path / "test.csv")
    failed(res, "2 of the 8 subjects", "test.csv", "777001, 777002", str(w / "project" / "images"),
           "--allow-missing-images")
    assert snapshot(w / "prev-eval") == before


def test_allow_missing_images_goes_on_and_counts_them(w, tmp_path):
    pd.DataFrame({"subject_id": SUBJECTS + ["777001"]}).to_csv(tmp_path / "test.csv", index=False)
    res = evaluate(w, "--subjects", tmp_path / "test.csv", "--allow-missing-images", out=tmp_path / "ev")
    assert res.code == 0, res.text
    m = metrics(tmp_path / "ev")
    assert m["images"]["n_missing_images"] == 1 and m["images"]["missing_images"] == ["777001"]
    assert m["images"]["n_images"] == len(SUBJECTS)
    assert "1 of the 7 subjects" in res.out and "NOT evaluated" in res.out


def test_blank_row_in_subjects_does_not_turn_ids_into_floats(w, tmp_path):
    (tmp_path / "s.csv").write_text("subject_id,split\n" + "\n".join(f"{s},test" for s in SUBJECTS[:3]) + "\n,\n")
    res = evaluate(w, "--subjects", tmp_path / "s.csv", out=tmp_path / "ev")
    assert res.code == 0, res.text
    assert metrics(tmp_path / "ev")["images"]["n_images"] == 3


def test_subjects_row_with_an_empty_id_names_the_row(w, tmp_path):
    (tmp_path / "s.csv").write_text("subject_id,split\n1000,test\n,test\n")
    before = snapshot(w / "prev-eval")
    failed(evaluate(w, "--subjects", tmp_path / "s.csv"), "s.csv", "row 3", "field 'subject_id'", "empty",
           "fill in")
    assert snapshot(w / "prev-eval") == before


# ------------------------------------------------------------------------------------------------ threshold


def test_evaluate_reports_at_the_models_threshold_and_labels_the_tuned_one(w):
    m = metrics(w / "prev-eval")
    assert m["threshold"] == pytest.approx(OPERATING) and "validation" in m["threshold_source"]
    assert m["scopes"]["overall"]["at_threshold"]["threshold"] == pytest.approx(OPERATING)
    best = m["best_on_this_set"]
    assert "optimistic" in best["note"] and best["threshold"] != pytest.approx(OPERATING)
    assert "optimistic" in m["scopes"]["overall"]["best_f1"]["note"]
    manifest = json.loads((w / "prev-eval" / "manifest.json").read_text())
    assert manifest["command"] == "evaluate" and set(manifest["files"]) == {"metrics.json", "pr_curve.png"}


def test_legacy_model_uses_0_5_and_says_so(w, tmp_path):
    res = run_cli("evaluate", "--model", w / "legacy", "--boxes", w / "project" / "truth.csv", "--images",
                  w / "project" / "images", "--out", tmp_path / "ev")
    assert res.code == 0, res.text
    m = metrics(tmp_path / "ev")
    assert m["threshold"] == 0.5 and "legacy" in m["threshold_source"] and "--score-threshold" in res.out
    res = run_cli("predict", "--model", w / "legacy", "--images", w / "project" / "images", "--out",
                  tmp_path / "cat", "--overlay", "0")
    assert res.code == 0, res.text
    assert catalogue_meta(tmp_path / "cat" / "catalogue.parquet")["score_threshold"] == 0.5
    assert "legacy default 0.5" in res.out


def test_predict_uses_the_models_threshold_and_records_it(w):
    cat = w / "prev-cat" / "catalogue.parquet"
    meta = catalogue_meta(cat)
    assert meta["score_threshold"] == pytest.approx(OPERATING) and "validation" in meta["score_threshold_source"]
    df = pd.read_parquet(cat)
    assert len(df) and (df["clump_score"] >= OPERATING).all()
    spec = json.loads((w / "model" / "model.json").read_text())
    assert set(df["model_version"]) == {spec["version"]} == {meta["model_version"]}


# ------------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize(("command", "args", "needles"), [
    ("evaluate", ["--score-threshold", "1.5"], ["--score-threshold 1.5: must be in [0, 1]"]),
    ("evaluate", ["--match-radius", "-1"], ["--max-dist -1.0: must be a positive number"]),  # its alias
    ("evaluate", ["--batch-size", "0"], ["--batch-size 0: must be a whole number >= 1"]),
    ("evaluate", ["--min-score", "-0.1"], ["--min-score -0.1: must be in [0, 1]"]),
    ("predict", ["--score-threshold", "1.5"], ["--score-threshold 1.5: must be in [0, 1]"]),
    ("predict", ["--batch-size", "0"], ["--batch-size 0: must be a whole number >= 1"]),
    ("predict", ["--nms-iou", "2"], ["--nms-iou 2.0: must be in [0, 1]"]),
    ("predict", ["--batch-size", "0", "--overlay", "-1"], ["--batch-size 0", "--overlay -1"]),  # all at once
])
def test_bad_options_are_refused_before_any_work(w, command, args, needles):
    prev = w / ("prev-eval" if command == "evaluate" else "prev-cat")
    before = snapshot(prev)
    res = evaluate(w, *args) if command == "evaluate" else predict(w, *args)
    failed(res, "Error: ", *needles)
    assert snapshot(prev) == before


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_missing_model_and_model_folder_without_weights(w, tmp_path, command):
    prev = w / ("prev-eval" if command == "evaluate" else "prev-cat")
    before = snapshot(prev)
    extra = ["--boxes", w / "project" / "truth.csv"] if command == "evaluate" else []
    res = run_cli(command, "--model", tmp_path / "nope", "--images", w / "project" / "images", "--out", prev, *extra)
    failed(res, str(tmp_path / "nope"), "model not found", "pass the folder written by 'clumptool train'")
    (tmp_path / "empty-model").mkdir()
    (tmp_path / "empty-model" / "model.json").write_text((w / "model" / "model.json").read_text())
    res = run_cli(command, "--model", tmp_path / "empty-model", "--images", w / "project" / "images", "--out", prev,
                  *extra)
    failed(res, "empty-model", "no model.safetensors", "'clumptool train' output")
    assert snapshot(prev) == before


def test_images_not_a_folder(w, tmp_path):
    before = snapshot(w / "prev-eval")
    res = run_cli("evaluate", "--model", w / "model", "--boxes", w / "project" / "truth.csv",
                  "--images", w / "project" / "truth.csv", "--out", w / "prev-eval")
    failed(res, "--images", "is a file")
    assert snapshot(w / "prev-eval") == before


def test_unwritable_out_is_found_before_the_work(w, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    res = evaluate(w, out=tmp_path / "afile" / "eval")
    failed(res, "--out", "afile", "cannot create the parent folder")
    res = predict(w, out=tmp_path / "afile" / "cat")
    failed(res, "--out", "afile", "cannot create the parent folder")
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_out_folder_of_the_users_own_files_or_another_command_is_never_replaced(w, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    failed(evaluate(w, out=mine), "--out", "notes.txt", "choose a new or empty folder")
    failed(predict(w, out=mine / "catalogue.parquet"), "--out", "notes.txt", "Give a new folder, e.g. --out")
    model_before = snapshot(w / "model")
    failed(evaluate(w, out=w / "model"), "--out", str(w / "model"))
    failed(evaluate(w, out=w / "prev-cat"), "--out", "clumptool predict", "choose another folder")
    assert snapshot(w / "model") == model_before and (mine / "notes.txt").read_text() == "my notes"


def test_quiet_silences_progress_never_errors(w, tmp_path):
    res = evaluate(w, "--quiet", out=tmp_path / "ev")
    assert res.code == 0 and res.out == "" and res.err == "", res.text
    res = evaluate(w, "--quiet", "--subjects", tmp_path / "missing.csv")
    failed(res, "--subjects", "missing.csv", "does not exist")
    pd.DataFrame({"subject_id": ["777001"] + SUBJECTS}).to_csv(tmp_path / "s.csv", index=False)
    failed(predict(w, "--quiet", "--subjects", tmp_path / "s.csv"), "1 of the 7 subjects", "--allow-missing-images")


# ------------------------------------------------------------------------------------------------ predict


def test_predict_with_no_images_refuses(w, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "readme.txt").write_text("x")
    before = snapshot(w / "prev-cat")
    res = run_cli("predict", "--model", w / "model", "--images", tmp_path / "imgs", "--out", w / "prev-cat")
    failed(res, "no images found", str(tmp_path / "imgs"), "looked for *.png|*.jpg", "point --images at")
    assert snapshot(w / "prev-cat") == before


def test_predict_missing_images_refused_then_allowed_and_counted(w, tmp_path):
    pd.DataFrame({"subject_id": SUBJECTS + ["777001", "777002", "777003"]}).to_csv(tmp_path / "s.csv", index=False)
    before = snapshot(w / "prev-cat")
    failed(predict(w, "--subjects", tmp_path / "s.csv"), "3 of the 9 subjects", "777001, 777002, 777003",
           "--allow-missing-images")
    assert snapshot(w / "prev-cat") == before
    res = predict(w, "--subjects", tmp_path / "s.csv", "--allow-missing-images", out=tmp_path / "cat")
    assert res.code == 0, res.text
    meta = catalogue_meta(tmp_path / "cat" / "catalogue.parquet")
    assert meta["n_missing_images"] == 3 and "3 of the 9 subjects" in res.out and "NOT in the catalogue" in res.out
    manifest = json.loads((tmp_path / "cat" / "manifest.json").read_text())
    assert manifest["info"]["n_missing_images"] == 3


def test_predict_out_not_parquet(w, tmp_path):
    failed(predict(w, out=tmp_path / "cat.csv"), "--out", "cat.csv", "Parquet", "ending in .parquet")
    assert not (tmp_path / "cat.csv").exists()


def test_edited_model_json_is_refused_not_stamped_on_rows(w, tmp_path):
    shutil.copytree(w / "model", tmp_path / "model")
    spec = json.loads((tmp_path / "model" / "model.json").read_text())
    spec.update(version="20990101T000000Z-edited", image_size=64)
    (tmp_path / "model" / "model.json").write_text(json.dumps(spec))
    before = snapshot(w / "prev-cat")
    res = run_cli("predict", "--model", tmp_path / "model", "--images", w / "project" / "images",
                  "--out", w / "prev-cat")
    failed(res, "model.json")
    assert snapshot(w / "prev-cat") == before


def test_rerun_replaces_the_whole_set_never_mixes(w, tmp_path):
    out = tmp_path / "cat"
    assert predict(w, out=out).code == 0
    assert predict(w, "--overlay", "0", "--score-threshold", "0.9", out=out).code == 0
    assert sorted(p.name for p in out.iterdir()) == ["catalogue.parquet", "galaxies.parquet", "manifest.json"]  # old png gone
    assert catalogue_meta(out / "catalogue.parquet")["score_threshold"] == 0.9
    assert not list(tmp_path.glob(".*"))


# ------------------------------------------------------------------------------------------------ interrupts


@pytest.fixture(scope="module")
def slow_world(tmp_path_factory):
    """A previous catalogue set, and 46 (hard-linked) images that predict needs ~20 s for at batch size 1."""
    root = tmp_path_factory.mktemp("slow")
    make_project(root / "small")
    make_project(root / "big", n_extra_images=40)
    make_model(root / "model", None)
    return root


def small_predict(root: Path):
    return run_cli("predict", "--model", root / "model", "--images", root / "small" / "images", "--out", root / "cat",
                   "--score-threshold", "0.5", "--quiet")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_predict_leaves_the_previous_catalogue_byte_identical(slow_world, sig):
    root = slow_world
    res = small_predict(root)
    assert res.code == 0, res.text
    before = snapshot(root / "cat")
    assert set(before) == {"catalogue.parquet", "galaxies.parquet", "predictions.png", "manifest.json"}
    staging = root / ".cat.partial"

    def mid_run() -> bool:  # finished shards of the new catalogue are being written into the staging folder
        return any((staging / "shards").glob("part-*.parquet"))

    res = interrupt_when(["predict", "--model", root / "model", "--images", root / "big" / "images",
                          "--out", root / "cat", "--score-threshold", "0.2", "--batch-size", "1",
                          "--shard-size", "4"], mid_run, sig=sig)
    assert snapshot(root / "cat") == before
    if sig == signal.SIGINT:
        no_traceback(res)
        assert res.code == 130 and "Interrupted" in res.err and "unchanged" in res.err and "Rerun" in res.err
        assert "resume" in res.err
    else:
        assert res.code == -signal.SIGKILL
    # only finished shards are kept for a resume (nothing that could be published half made)
    assert {p.name for p in staging.iterdir()} == {"shards"}
    assert not list(staging.glob("*.parquet")) and any((staging / "shards").glob("part-*.parquet"))
    # the next run (other images: another shard plan) starts clean and publishes a whole new set
    res = small_predict(root)
    assert res.code == 0, res.text
    assert not staging.exists() and set(snapshot(root / "cat")) == set(before)


def test_corrupt_image_names_the_file_and_keeps_the_previous_catalogue(w, tmp_path):
    shutil.copytree(w / "project" / "images", tmp_path / "imgs")
    (tmp_path / "imgs" / f"{SUBJECTS[2]}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    before = snapshot(w / "prev-cat")
    res = run_cli("predict", "--model", w / "model", "--images", tmp_path / "imgs", "--out", w / "prev-cat")
    failed(res, f"{SUBJECTS[2]}.png", "cannot read image", "replace the file or remove it")
    assert snapshot(w / "prev-cat") == before and not (w / ".prev-cat.partial").exists()


def test_nothing_detected_is_said_plainly(w, tmp_path):
    res = predict(w, "--score-threshold", "1.0", out=tmp_path / "cat")
    assert res.code == 0, res.text
    assert len(pd.read_parquet(tmp_path / "cat" / "catalogue.parquet")) == 0
    assert "no clump scored >= 1" in res.out and "lower --score-threshold" in res.out


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_subjects_table_listing_nobody(w, tmp_path, command):
    (tmp_path / "s.csv").write_text("subject_id\n")
    prev = w / ("prev-eval" if command == "evaluate" else "prev-cat")
    before = snapshot(prev)
    res = (evaluate if command == "evaluate" else predict)(w, "--subjects", tmp_path / "s.csv")
    failed(res, "--subjects", "s.csv", "lists no subjects", "give the table of galaxies")
    assert snapshot(prev) == before


def test_unknown_or_absent_device_is_refused_up_front(w):
    before = snapshot(w / "prev-eval"), snapshot(w / "prev-cat")
    failed(evaluate(w, "--device", "gpu0"), "--device 'gpu0'", "not a torch device", "use cpu, cuda or cuda:N")
    failed(predict(w, "--devices", "cuda:7"), "--devices cuda:7", "not available here", "use cpu")
    assert (snapshot(w / "prev-eval"), snapshot(w / "prev-cat")) == before
