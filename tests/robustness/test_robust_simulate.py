"""Robustness of ``simulate`` and ``simulate-volunteers``: bad options refused before any work, with a message
that names the option and how to fix it; a failed, interrupted or different rerun never mixes or loses outputs.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest
from harness import cli_command, interrupt_when, no_traceback, run_cli, snapshot

from clumptool.common.outputs import read_manifest, staging_path, verify_output_set

TINY = ["--galaxies", "4", "--image-size", "64", "--volunteers-per-subject", "3", "--seed", "1", "--quiet"]


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A published project from an earlier run, shared read-only by the failure cases."""
    out = tmp_path_factory.mktemp("prev") / "sim"
    r = run_cli("simulate", "--out", out, *TINY)
    assert r.code == 0, r.text
    return out


def _refused(args, previous, code=2, *needles):
    before = snapshot(previous)
    r = run_cli(*args)
    no_traceback(r)
    assert r.code == code, r.text
    for needle in needles:
        assert needle in r.err, r.err
    assert snapshot(previous) == before
    assert not staging_path(previous).exists()
    return r


@pytest.mark.parametrize("option, value, needles", [
    ("--galaxies", "0", ("--galaxies must be at least 1", "e.g. --galaxies 200")),
    ("--image-size", "8", ("--image-size must be between 64 and 4096", "Clump Scout images are 400")),
    ("--clumpy-fraction", "1.5", ("--clumpy-fraction", "must be in [0, 1]", "got 1.5")),
    ("--volunteers-per-subject", "0", ("--volunteers-per-subject must be at least 1", "Clump Scout had 20")),
    ("--crowd", "loud", ("--crowd 'loud' is not a crowd", "default, bulge, distractor, sparse, confusion")),
    ("--cutout", "500", ("--cutout must be between 1 and the image size 64", "leave it out")),
    ("--seed", "-3", ("--seed must be 0 or more",)),
])
def test_simulate_bad_option_refused_before_work(previous, option, value, needles):
    args = ["simulate", "--out", previous, *TINY]
    args += [option, value] if option not in args else []
    if option in TINY:
        i = args.index(option)
        args[i + 1] = value
    _refused(args, previous, 2, "Error:", *needles)


def test_simulate_sparse_crowd_with_a_volunteer_count_is_refused(previous):
    _refused(["simulate", "--out", previous, *TINY, "--crowd", "sparse"], previous, 2,
             "--volunteers-per-subject cannot be combined with --crowd sparse", "drop one of the two options")


def test_simulate_out_is_a_file(tmp_path, previous):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    _refused(["simulate", "--out", target, *TINY], previous, 2, "exists and is not a folder", "give a folder path")
    assert target.read_text() == "mine"


def test_simulate_out_under_a_file_is_unwritable(tmp_path, previous):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    r = _refused(["simulate", "--out", blocker / "sim", *TINY], previous, 2, "--out", "cannot create the parent folder")
    assert str(blocker) in r.err


def test_simulate_refuses_a_folder_of_the_users_files(tmp_path, previous):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("\\section{Clumps}")
    before = snapshot(mine)
    _refused(["simulate", "--out", mine, *TINY], previous, 2, "holds files clumptool did not write",
             "chapter1.tex", "choose a new or empty folder")
    assert snapshot(mine) == before


def test_rerun_with_other_options_leaves_no_stale_images(tmp_path):
    out = tmp_path / "sim"
    assert run_cli("simulate", "--out", out, *TINY).code == 0
    assert len(list((out / "images").glob("*.png"))) == 4
    r = run_cli("simulate", "--out", out, *TINY, "--no-images", "--crowd", "bulge")
    assert r.code == 0, r.text
    assert not (out / "images").exists() and not (out / "preview.png").exists()
    manifest = read_manifest(out)
    assert manifest["info"]["crowd"] == "bulge" and manifest["command"] == "simulate"
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == set(manifest["files"])
    assert verify_output_set(out) == []


def _render_started(out):
    images = staging_path(out) / "images"
    return lambda: images.is_dir() and any(images.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupt_while_rendering_keeps_the_previous_project(tmp_path, sig):
    out = tmp_path / "sim"
    assert run_cli("simulate", "--out", out, *TINY).code == 0
    before = snapshot(out)
    args = ["simulate", "--out", out, "--galaxies", "40", "--image-size", "400", "--seed", "2",
            "--crowd", "distractor", "--quiet"]
    r = interrupt_when(args, _render_started(out), sig=sig, timeout=240)
    assert r.code != 0
    no_traceback(r)
    assert snapshot(out) == before
    assert verify_output_set(out) == []
    if sig == signal.SIGINT:
        assert not staging_path(out).exists()  # cleaned up on Ctrl-C
        assert r.code == 130 and "interrupted; nothing was published" in r.err and "run the command again" in r.err
    # the next run starts afresh (a staging folder left by SIGKILL is cleared) and publishes a whole set
    r = run_cli("simulate", "--out", out, *TINY, "--crowd", "confusion")
    assert r.code == 0, r.text
    assert verify_output_set(out) == [] and not staging_path(out).exists()
    assert read_manifest(out)["info"]["crowd"] == "confusion"


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_writes(tmp_path):
    """Two runs share one staging folder: the second must not clear it under the first (seen when a killed bench
    left its simulate child running and the rerun started the same project)."""
    out = tmp_path / "sim"
    first = subprocess.Popen(cli_command("simulate", "--out", out, "--galaxies", "40", "--image-size", "400",
                                         "--seed", "2", "--crowd", "bulge", "--quiet"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started, deadline = _render_started(out), time.monotonic() + 240
    while not started() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started() and first.poll() is None, "the first run ended before it began rendering"
    second = run_cli("simulate", "--out", out, *TINY, "--crowd", "confusion")
    no_traceback(second)
    assert second.code != 0 and "another clumptool run is writing this folder now" in second.err, second.text
    assert first.wait(timeout=300) == 0, first.communicate()
    manifest = read_manifest(out)
    assert manifest["info"]["crowd"] == "bulge" and len(list((out / "images").glob("*.png"))) == 40
    assert verify_output_set(out) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["sim"]
    assert run_cli("simulate", "--out", out, *TINY, "--crowd", "confusion").code == 0  # free again


# simulate-volunteers --------------------------------------------------------------------------------


@pytest.fixture()
def earlier_export(tmp_path, previous):
    out = tmp_path / "round1.csv"
    r = run_cli("simulate-volunteers", "--truth", previous / "truth.csv", "--subjects", previous / "subjects.csv",
                "--out", out, "--image-size", "64", "--volunteers-per-subject", "3")
    assert r.code == 0, r.text
    return out


def _volunteers(previous, out, *extra):
    return ["simulate-volunteers", "--truth", previous / "truth.csv", "--subjects", previous / "subjects.csv",
            "--out", out, "--image-size", "64", *extra]


@pytest.mark.parametrize("extra, needles", [
    (("--volunteers-per-subject", "0"), ("--volunteers-per-subject must be at least 1",)),
    (("--crowd", "rowdy"), ("--crowd 'rowdy' is not a crowd", "sparse")),
    (("--crowd", "sparse", "--volunteers-per-subject", "5"), ("cannot be combined with --crowd sparse",)),
    (("--image-size", "8"), ("--image-size must be between 64 and 4096",)),
    (("--start-classification-id", "-1"), ("--start-classification-id must be a positive integer",)),
])
def test_simulate_volunteers_bad_option_keeps_the_earlier_export(previous, earlier_export, extra, needles):
    before = snapshot(earlier_export.parent)
    r = run_cli(*_volunteers(previous, earlier_export, *extra))
    no_traceback(r)
    assert r.code == 2, r.text
    for needle in needles:
        assert needle in r.err, r.err
    assert snapshot(earlier_export.parent) == before


def test_simulate_volunteers_out_is_a_folder(previous, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    r = run_cli(*_volunteers(previous, folder))
    no_traceback(r)
    assert r.code == 2 and "--out" in r.err and "is a folder; give a file name" in r.err, r.err
    assert snapshot(folder) == {}


def test_simulate_volunteers_out_under_a_file(previous, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    r = run_cli(*_volunteers(previous, blocker / "round2.csv"))
    no_traceback(r)
    assert r.code == 2 and "--out" in r.err and "choose another location" in r.err, r.err
    assert blocker.read_text() == "x"


def test_simulate_volunteers_crowd_uses_the_projects_objects(previous, tmp_path):
    out = tmp_path / "bulge.csv"
    r = run_cli(*_volunteers(previous, out, "--crowd", "bulge", "--volunteers-per-subject", "20"))
    assert r.code == 0, r.text
    import pandas as pd

    cls = pd.read_csv(out, dtype=str, keep_default_na=False)
    centre = 0
    for ann in cls["annotations"]:
        for m in json.loads(ann)[1]["value"]:
            centre += abs(m["x"] - 32) < 4 and abs(m["y"] - 32) < 4
    assert centre >= 10  # bulge clickers mark the centre
    shutil.rmtree(tmp_path, ignore_errors=True)
