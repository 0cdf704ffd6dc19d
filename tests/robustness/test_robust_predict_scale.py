"""Robustness of predict at scale: image tables, formats, devices/precision options, and resumed shards.

Each case asserts the exit code, that the message names the file/row/field or option and says how to fix it,
and that the previous outputs are byte-identical afterwards; resumed runs never mix shards of other settings.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from _evalpred_helpers import SUBJECTS, failed, make_model, make_project
from harness import interrupt_when, no_traceback, run_cli, snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    make_project(root / "project", n_extra_images=30)
    make_model(root / "model", None)
    res = run_cli("predict", "--model", root / "model", "--images", root / "project" / "images", "--out",
                  root / "prev", "--score-threshold", "0.5", "--quiet")
    assert res.code == 0, res.text
    return root


def predict(w: Path, *args, images: Path | None = None, out: Path | None = None):
    return run_cli("predict", "--model", w / "model", "--images", images or w / "project" / "images",
                   "--out", out or w / "prev", *args)


def table(w: Path, tmp_path: Path, **columns) -> Path:
    files = sorted((w / "project" / "images").glob("*.png"))[:6]
    df = pd.DataFrame({"image_path": [str(p) for p in files], **columns})
    path = tmp_path / "galaxies.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("args", "needles"), [
    (["--format", "fits", "--out", "X/c.ecsv"], ["--out", "c.ecsv", "--format is fits", "make them agree"]),
    (["--out", "X/c.txt"], ["--out", "c.txt", ".parquet", ".fits", ".ecsv", ".vot"]),
    (["--devices", "tpu"], ["--devices tpu", "not understood", "use auto, cpu"]),
    (["--shard-size", "0"], ["--shard-size 0: must be a whole number >= 1"]),
    (["--num-nodes", "0"], ["--num-nodes 0: must be a whole number >= 1"]),
])
def test_bad_scale_options_are_refused_before_any_work(world, tmp_path, args, needles):
    before = snapshot(world / "prev")
    args = [str(a).replace("X", str(tmp_path)) for a in args]
    if "--out" in args:
        res = run_cli("predict", "--model", world / "model", "--images", world / "project" / "images", *args)
    else:
        res = predict(world, *args)
    failed(res, *needles)
    assert snapshot(world / "prev") == before and not list(tmp_path.iterdir())


def test_mixed_precision_on_cpu_says_it_needs_a_gpu(world):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = snapshot(world / "prev")
    failed(predict(world, "--precision", "bf16-mixed"), "--precision bf16-mixed", "needs a GPU", "--precision 32")
    assert snapshot(world / "prev") == before


@pytest.mark.parametrize(("columns", "edit", "needles"), [
    ({}, lambda df: df.rename(columns={"image_path": "where"}), ["galaxies.csv", "no image path column",
                                                                  "image_path", "Add an image_path column"]),
    ({}, lambda df: df.assign(image_path=[""] + list(df.image_path[1:])), ["galaxies.csv", "row 2",
                                                                           "'image_path'", "empty image path"]),
    ({"subject_id": [1, 2, 3, 3, 5, 6]}, None, ["galaxies.csv", "row 5", "'subject_id'", "listed twice",
                                                 "keep one row per galaxy"]),
    ({}, lambda df: df.iloc[:0], ["galaxies.csv", "lists no images"]),
])
def test_bad_image_tables_name_the_row_and_field(world, tmp_path, columns, edit, needles):
    path = table(world, tmp_path, **columns)
    if edit is not None:
        edit(pd.read_csv(path)).to_csv(path, index=False)
    before = snapshot(world / "prev")
    failed(predict(world, images=path), *needles)
    assert snapshot(world / "prev") == before


def test_table_with_missing_files_refused_then_allowed(world, tmp_path):
    path = table(world, tmp_path)
    df = pd.read_csv(path)
    df.loc[1, "image_path"] = "gone/777.png"
    df.to_csv(path, index=False)
    before = snapshot(world / "prev")
    failed(predict(world, images=path), "1 of the 6 images listed in", "777", "do not exist",
           "--allow-missing-images")
    assert snapshot(world / "prev") == before
    res = predict(world, "--allow-missing-images", images=path, out=tmp_path / "cat")
    assert res.code == 0 and "NOT in the catalogue" in res.out, res.text


def _kill_mid_run(w: Path, out: Path, *args) -> Path:
    shards = out.parent / f".{out.name}.partial" / "shards"
    res = interrupt_when(["predict", "--model", w / "model", "--images", w / "project" / "images", "--out", out,
                          "--batch-size", "1", "--shard-size", "4", "--quiet", *args],
                         lambda: len(list(shards.glob("part-*.parquet"))) >= 2, sig=signal.SIGKILL)
    assert res.code == -signal.SIGKILL
    return shards


def test_a_killed_run_resumed_with_other_settings_never_mixes_shards(world, tmp_path):
    """Shards of a threshold-0.2 run must not end up in a threshold-0.6 catalogue."""
    out = tmp_path / "cat"
    shards = _kill_mid_run(world, out, "--score-threshold", "0.2")
    assert any(shards.glob("part-*.parquet"))
    res = predict(world, "--score-threshold", "0.6", "--batch-size", "1", "--shard-size", "4", "--quiet", out=out)
    assert res.code == 0, res.text
    cat = pd.read_parquet(out / "catalogue.parquet")
    assert (cat["clump_score"] >= 0.6).all()
    fresh = predict(world, "--score-threshold", "0.6", "--batch-size", "1", "--shard-size", "4", "--quiet",
                    out=tmp_path / "fresh")
    assert fresh.code == 0
    pd.testing.assert_frame_equal(cat, pd.read_parquet(tmp_path / "fresh" / "catalogue.parquet"))
    assert not shards.parent.exists()


def test_a_killed_run_resumes_and_the_result_equals_an_uninterrupted_one(world, tmp_path):
    out = tmp_path / "cat"
    shards = _kill_mid_run(world, out, "--score-threshold", "0.3")
    kept = sorted(p.name for p in shards.glob("part-*.parquet"))
    res = predict(world, "--score-threshold", "0.3", "--batch-size", "1", "--shard-size", "4", out=out)
    assert res.code == 0, res.text
    assert f"{len(kept)} resumed from an interrupted run" in res.out
    fresh = predict(world, "--score-threshold", "0.3", "--batch-size", "1", "--shard-size", "4", "--quiet",
                    out=tmp_path / "fresh")
    assert fresh.code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "catalogue.parquet"),
                                  pd.read_parquet(tmp_path / "fresh" / "catalogue.parquet"))
    assert sorted(os.listdir(out)) == ["catalogue.parquet", "galaxies.parquet", "manifest.json", "predictions.png"]
    assert SUBJECTS[0] in set(pd.read_parquet(out / "catalogue.parquet")["subject_id"])


def test_sigterm_stops_after_the_batch_keeps_shards_and_the_previous_outputs(world, tmp_path):
    """scancel or a SLURM time limit sends SIGTERM: stop, publish nothing, keep finished shards, say so."""
    before = snapshot(world / "prev")
    shards = world / ".prev.partial" / "shards"
    res = interrupt_when(["predict", "--model", world / "model", "--images", world / "project" / "images", "--out",
                          world / "prev", "--batch-size", "1", "--shard-size", "4", "--score-threshold", "0.3"],
                         lambda: len(list(shards.glob("part-*.parquet"))) >= 2, sig=signal.SIGTERM)
    no_traceback(res)
    assert res.code == 130 and "Interrupted" in res.err and "resume" in res.err, res.text
    assert snapshot(world / "prev") == before and len(list(shards.glob("part-*.parquet"))) >= 2
    res = predict(world, "--batch-size", "1", "--shard-size", "4", "--score-threshold", "0.3")
    assert res.code == 0 and "resumed from an interrupted run" in res.out, res.text
    assert not shards.parent.exists()
