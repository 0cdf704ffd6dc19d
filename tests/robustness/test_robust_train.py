"""`clumptool train` and the model folder under bad inputs, bad options, interrupts and hand edits.

Every case asserts the exit code, that the message names the file/row/field or option and says how to fix
it, and that a previous model folder is byte-identical after a failed or interrupted retrain. The last cases
run real (tiny) training: SIGKILL and SIGINT into an existing model folder, and the exact-resume check
(per-epoch losses of an interrupted-then-resumed run equal those of an uninterrupted one).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal

import _train_helpers as t  # tiny project, previous model folder, fake checkpoint
import pytest
import torch
from harness import interrupt_when, no_traceback, run_cli, snapshot  # noqa: F401

TINY = t.TINY_ARGS


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one torch thread keeps in-process training steps fast (and equal to subprocesses')."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return t.make_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def prev(tmp_path):
    """An existing model folder a retrain goes into, and its snapshot."""
    out = t.previous_model(tmp_path / "model")
    return out, snapshot(out)


def train_args(project, out, *extra):
    boxes, images, _ = project
    return ["train", "--boxes", boxes, "--images", images, "--out", out, *TINY, *extra]


def failed(outcome, code: int, *needles: str) -> None:
    """Exit code, no traceback, and each needle (file/row/field/option and the fix) in the message."""
    no_traceback(outcome)
    assert outcome.code == code, outcome.text
    for needle in needles:
        assert needle in outcome.text, f"{needle!r} not in:\n{outcome.text}"


# --- 1. nothing (or nothing sound) to learn from --------------------------------------------------------

def test_empty_boxes_table_refused(project, prev, tmp_path):
    out, before = prev
    boxes = t.write_boxes(tmp_path / "empty.csv", [])
    res = run_cli("train", "--boxes", boxes, "--images", project[1], "--out", out, *TINY)
    failed(res, 2, "empty.csv", "no box at all", "nothing to learn from", "clumptool aggregate")
    assert snapshot(out) == before


def _rows(project):
    import pandas as pd

    return pd.read_csv(project[0]).to_dict("records")


@pytest.mark.parametrize("edit, needles", [
    ({"x1": -100.0, "x2": -90.0}, ["row 2", "field 'x1'", "outside its 48x48 image", "fix or remove the row"]),
    ({"y1": 500.0, "y2": 510.0}, ["row 2", "field 'y1'", "outside", "fix or remove the row"]),
    ({"x2": 1.0}, ["row 2", "field 'x2'", "x2 <= x1", "fix or remove the row"]),
    ({"y1": float("nan")}, ["row 2", "field 'y1'", "not a finite number", "fix or remove the row"]),
    ({"label": 7}, ["row 2", "field 'label'", "not a known class", "fix or remove the row"]),
], ids=["x-outside", "y-outside", "x2<=x1", "nan", "unknown-label"])
def test_bad_box_row_named(project, prev, tmp_path, edit, needles):
    out, before = prev
    rows = _rows(project)
    rows[0].update(edit)
    boxes = t.write_boxes(tmp_path / "bad.csv", rows)
    res = run_cli("train", "--boxes", boxes, "--images", project[1], "--out", out, *TINY)
    failed(res, 2, "bad.csv", *needles)
    assert snapshot(out) == before


def test_missing_column_named(project, prev, tmp_path):
    out, before = prev
    boxes = tmp_path / "nolabel.csv"
    boxes.write_text("subject_id,x1,y1,x2,y2\n1001,1,1,9,9\n")
    res = run_cli("train", "--boxes", boxes, "--images", project[1], "--out", out, *TINY)
    failed(res, 2, "nolabel.csv", "missing column(s) label", "clumptool aggregate")
    assert snapshot(out) == before


def test_images_missing_for_boxed_subjects(project, prev, tmp_path):
    out, before = prev
    images = tmp_path / "images"
    shutil.copytree(project[1], images)
    (images / "1001.png").unlink()
    (images / "1002.png").unlink()
    res = run_cli("train", "--boxes", project[0], "--images", images, "--out", out, *TINY)
    failed(res, 2, "2 subject(s) in the boxes table have no image", "1001, 1002", "add their images")
    assert snapshot(out) == before


def test_subjects_without_images(project, prev, tmp_path):
    out, before = prev
    subjects = tmp_path / "subjects.csv"
    subjects.write_text("subject_id\n" + "\n".join(str(1000 + i) for i in range(8)) + "\n999\n")
    res = run_cli("train", "--boxes", project[0], "--images", project[1], "--subjects", subjects, "--out", out,
                  *TINY)
    failed(res, 2, "1 labelled subject(s)", "subjects.csv", "999", "pass --subjects")
    assert snapshot(out) == before


# --- 6. options and --out checked before any work ---------------------------------------------------------

@pytest.mark.parametrize("extra, needles", [
    (["--epochs", "0"], ["--epochs 0", "whole number >= 1"]),
    (["--image-size", "7"], ["--image-size 7", "whole number >= 32"]),
    (["--batch-size", "0"], ["--batch-size 0", "whole number >= 1"]),
    (["--lr", "-1"], ["--lr -1", "must be a positive number (a learning rate"]),
    (["--val-fraction", "1.5"], ["--val-fraction 1.5", "[0, 1)"]),
    (["--devices", str((os.cpu_count() or 1) + 1)], ["--devices", "this machine has", "use a count"]),
    (["--devices", "0,1"], ["--devices 0,1", "needs GPUs"]),
    (["--weights", "no/such/weights.safetensors"], ["--weights no/such/weights.safetensors", "file not found",
                                                    "leave --weights out"]),
], ids=["epochs0", "image-size7", "batch0", "lr-1", "val1.5", "devices", "device-list", "weights-missing"])
def test_bad_option_before_work(project, prev, extra, needles):
    if "--devices" in extra and torch.cuda.is_available():
        pytest.skip("device checks here are for CPU machines")
    out, before = prev
    res = run_cli(*train_args(project, out, *extra))
    failed(res, 2, *needles)
    assert snapshot(out) == before
    assert not (out.parent / f".{out.name}.partial").exists()  # refused before any work


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only check")
def test_mixed_precision_on_cpu(project, prev):
    out, before = prev
    res = run_cli(*train_args(project, out, "--precision", "16-mixed"))
    failed(res, 2, "--precision 16-mixed", "needs a GPU", "--precision 32")
    assert snapshot(out) == before


def test_out_is_a_file(project, tmp_path):
    target = tmp_path / "model.txt"
    target.write_text("mine\n")
    res = run_cli(*train_args(project, target))
    failed(res, 2, "--out", "model.txt", "is a file")
    assert target.read_text() == "mine\n"


def test_out_under_a_file(project, tmp_path):
    (tmp_path / "plain").write_text("x")
    res = run_cli(*train_args(project, tmp_path / "plain" / "model"))
    failed(res, 2, "--out", "cannot create the parent folder")


def test_out_with_foreign_files_refused(project, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    before = snapshot(out)
    res = run_cli(*train_args(project, out))
    failed(res, 2, "--out", "notes.txt", "choose a new or empty folder")
    assert snapshot(out) == before


def test_resume_missing_checkpoint(project, prev, tmp_path):
    out, before = prev
    res = run_cli(*train_args(project, out, "--resume", tmp_path / "gone.ckpt"))
    failed(res, 2, "--resume", "gone.ckpt", "not found", "last.ckpt")
    assert snapshot(out) == before


def test_resume_not_a_checkpoint(project, prev, tmp_path):
    out, before = prev
    junk = tmp_path / "notes.ckpt"
    junk.write_text("this is not a checkpoint\n")
    res = run_cli(*train_args(project, out, "--resume", junk))
    failed(res, 2, "--resume", "notes.ckpt", "not a readable checkpoint", "last.ckpt")
    assert snapshot(out) == before


@pytest.mark.parametrize("extra, needles", [
    (["--image-size", "64"], ["--image-size 64", "image_size = 32", "leave out --image-size"]),
    (["--backbone", "resnet18"], ["--backbone resnet18", "backbone = efficientnet_b0", "without --resume"]),
    (["--seed", "5"], ["--seed 5", "seed = 0", "leave out --seed"]),
], ids=["image-size", "architecture", "seed"])
def test_resume_checkpoint_of_other_settings(project, prev, tmp_path, extra, needles):
    out, before = prev
    ckpt = t.fake_checkpoint(tmp_path / "other.ckpt")
    boxes, images, _ = project
    args = ["train", "--boxes", boxes, "--images", images, "--out", out, "--crop", "none", "--quiet",
            "--resume", ckpt, *extra]
    res = run_cli(*args)
    failed(res, 2, "other.ckpt", *needles)
    assert snapshot(out) == before


# --- 3. a model is its weights and its settings together ------------------------------------------------------

def test_edited_model_json_detected_on_load(prev):
    from clumptool.common.errors import ClumptoolError
    from clumptool.detection.io import load_model, read_weights

    out, _ = prev
    spec = json.loads((out / "model.json").read_text())
    spec["image_size"] = 48
    (out / "model.json").write_text(json.dumps(spec, indent=2))
    for loader in (load_model, read_weights):
        with pytest.raises(ClumptoolError) as err:
            loader(out)
        msg = str(err.value)
        assert "model.json was edited after training" in msg and "image_size 32 -> 48" in msg
        assert "retrain, or restore" in msg


def test_edited_version_detected_on_load(prev):
    from clumptool.common.errors import ClumptoolError
    from clumptool.detection.io import load_model

    out, _ = prev
    spec = json.loads((out / "model.json").read_text())
    spec["version"] = spec["version"][:-1] + ("0" if spec["version"][-1] != "0" else "1")
    (out / "model.json").write_text(json.dumps(spec, indent=2))
    with pytest.raises(ClumptoolError, match="field 'version'.*retrain, or restore"):
        load_model(out)


def test_weights_of_another_run_detected(tmp_path):
    from clumptool.common.errors import ClumptoolError
    from clumptool.detection.io import load_model

    a = t.previous_model(tmp_path / "a")
    b = t.previous_model(tmp_path / "b")
    shutil.copy(b / "model.safetensors", a / "model.safetensors")
    with pytest.raises(ClumptoolError, match="not the ones .*model.json was written with.*mixes two runs"):
        load_model(a)
    load_model(b)  # an intact folder loads


def test_old_model_folder_loads_with_warning(prev, caplog):
    from clumptool.detection.io import load_model

    out, _ = prev
    spec = json.loads((out / "model.json").read_text())
    for key in ("settings_sha256", "weights_sha256", "score_threshold"):
        spec.pop(key)
    (out / "model.json").write_text(json.dumps(spec, indent=2))
    with caplog.at_level(logging.WARNING):
        _, loaded = load_model(out)
    assert loaded.score_threshold is None  # evaluate/predict read None as the legacy 0.5
    assert "older clumptool without digests" in caplog.text and "retrain" in caplog.text


# --- 2. runs that learn nothing or cannot be measured ---------------------------------------------------------

def test_run_that_found_nothing_fails_and_keeps_previous(project, prev, monkeypatch):
    """A model detecting nothing on validation: exit 2 with what to change; the previous model stays."""
    from clumptool.detection import train as train_mod

    def nothing(model, val_set, batch_size):
        import numpy as np

        return [(np.zeros((0, 4)), np.zeros(0), val_set[i][1]["boxes"].numpy()) for i in range(len(val_set))]

    monkeypatch.setattr(train_mod, "validation_predictions", nothing)
    out, before = prev
    res = run_cli(*train_args(project, out, "--epochs", "1", "--batch-size", "8"))
    failed(res, 2, "without finding anything",
           "--epochs", "--image-size", "--weights", "--accept-empty-model", "--resume")
    assert snapshot(out) == before
    assert (out.parent / f".{out.name}.partial" / "checkpoints" / "last.ckpt").exists()  # kept to continue


def test_no_validation_truth_is_undefined_not_perfect(project, tmp_path):
    from clumptool.common.matching import scores_from_counts as f1_from_counts

    c, p, f1 = f1_from_counts(0, 0, 0)
    assert math.isnan(c) and math.isnan(p) and math.isnan(f1)
    assert f1_from_counts(5, 0, 0)[2] == 0.0  # truth but nothing found: 0, not undefined
    out = tmp_path / "noval"
    res = run_cli(*train_args(project, out, "--epochs", "1", "--val-fraction", "0", "--batch-size", "8"))
    assert res.code == 0, res.text
    # a warning, printed even with --quiet: F1 undefined (never 1.000), and how to get validation truth
    assert "undefined" in res.err and "1.000" not in res.text and "raise --val-fraction" in res.err
    summary = json.loads((out / "training.json").read_text())
    assert summary["best_val_f1"] is None and summary["val_f1_at_threshold"] is None
    assert json.loads((out / "model.json").read_text())["score_threshold"] == 0.5


def test_boxes_cut_by_the_crop_are_counted(project, tmp_path):
    """Boxes outside the central crop are not trained on: said with a count (even with --quiet), not silently."""
    out = tmp_path / "cropped"
    res = run_cli(*train_args(project, out, "--epochs", "1", "--val-fraction", "0", "--batch-size", "8",
                              "--crop", "24"))
    assert res.code == 0, res.text
    summary = json.loads((out / "training.json").read_text())
    cut = summary["boxes_in_table"] - summary["boxes_trained_on"]
    assert 0 < cut < summary["boxes_in_table"]
    assert f"NOTE: {cut} of {summary['boxes_in_table']} boxes lie mostly outside the central 24 px crop" in res.err
    assert "--crop none" in res.err


# --- 3/4. interrupts into an existing model folder, and the exact resume ----------------------------------

def test_sigkill_mid_training_keeps_previous_model(project, prev):
    out, before = prev
    stage = out.parent / f".{out.name}.partial"
    res = interrupt_when(train_args(project, out, "--epochs", "5"), lambda: (stage / "split.csv").exists(),
                           sig=signal.SIGKILL, env=t.SINGLE_THREAD)
    assert res.code == -signal.SIGKILL
    assert snapshot(out) == before  # model.json + model.safetensors byte-identical


def test_exact_resume_after_sigint(project, prev, tmp_path):
    """Ctrl-C after epoch 0 -> exit 130 with the resume command; the resumed run's losses equal the straight run's."""
    straight = tmp_path / "straight"
    ok = run_cli(*train_args(project, straight, "--epochs", "3", "--accept-empty-model"))
    assert ok.code == 0 and ok.out == "", ok.text  # --quiet: no progress, no summary; only warnings remain
    assert all(line.startswith("WARNING") for line in ok.err.splitlines()), ok.err
    reference = t.epoch_losses(straight)
    assert len(reference) == 3

    out, before = prev
    last = out.parent / f".{out.name}.partial" / "checkpoints" / "last.ckpt"
    args = train_args(project, out, "--epochs", "3", "--accept-empty-model")
    res = interrupt_when(args, last.exists, sig=signal.SIGINT, env=t.SINGLE_THREAD)
    failed(res, 130, "Interrupted", "previous model folder is untouched", f"--resume {last}")
    assert "KeyboardInterrupt" not in res.text and "GPU available" not in res.text  # --quiet: no Lightning lines
    assert snapshot(out) == before

    resumed = run_cli(*args, "--resume", last)
    assert resumed.code == 0, resumed.text
    losses = t.epoch_losses(out)
    print("exact resume: straight", [f"{v:.6f}" for v in reference], "resumed", [f"{v:.6f}" for v in losses])
    assert losses == pytest.approx(reference, rel=1e-6, abs=1e-7)
    assert not last.parent.parent.exists()  # the staging folder became the model folder
    assert snapshot(out) != before and (out / "checkpoints" / "last.ckpt").exists()
    spec = json.loads((out / "model.json").read_text())
    assert spec["score_threshold"] is not None and spec["weights_sha256"]
