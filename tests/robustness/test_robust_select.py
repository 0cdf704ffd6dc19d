"""select-next-batch and fake-panoptes as a user meets them: bad options, empty pools, leaked secrets,
failed and killed uploads, and rounds that must never upload a galaxy twice.

Every case asserts the exit code, that the message names the option/file and says how to fix it, and that
the previous output set is byte-identical after a failure (``snapshot``). Uploads go to the loopback fake
Zooniverse through the real panoptes-client.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from _select_helpers import (
    N_POOL,
    PASSWORD,
    USER,
    base_args,
    build_world,
    copy_previous,
    every_file_text,
    galaxies_on_server,
    harness,
    upload_args,
)

from clumptool.common.outputs import verify_output_set
from clumptool.testing.panoptes_env import (
    forget_sessions,
    isolate_environment,
    logged_in_fake,
    single_attempt_client,
)

interrupt_when, no_traceback, run_cli, snapshot = (harness.interrupt_when, harness.no_traceback, harness.run_cli,
                                                   harness.snapshot)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny pool + model, and ``previous``: a published output set of an earlier successful run."""
    root = build_world(tmp_path_factory.mktemp("select-world"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLUMPTOOL_STATE_DIR", str(root / "state"))
        res = run_cli(*base_args(root, root / "previous", "--round", "prev", "--quiet"))
    assert res.code == 0, res.text
    return root


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Ledgers in tmp (never ~/.local/state) and no Zooniverse credentials unless a test sets them."""
    isolate_environment(monkeypatch, tmp_path / "state")


@pytest.fixture
def fake(monkeypatch):
    """The fake Zooniverse (project 1234, workflow 5678), the real client with one attempt per request."""
    pc = single_attempt_client(monkeypatch)
    with logged_in_fake(monkeypatch, USER, PASSWORD) as server:
        yield server
    forget_sessions(pc)


@pytest.fixture
def out(world, tmp_path) -> Path:
    """An output folder already holding a previous run's published set."""
    return copy_previous(world / "previous", tmp_path / "out")


def failed(res, code: int, *words: str) -> None:
    """Exit ``code``, an ``Error:`` line containing every word, no traceback."""
    no_traceback(res)
    assert res.code == code, res.text
    assert "Error:" in res.err, res.text
    for w in words:
        assert w in res.err, f"{w!r} not in:\n{res.err}"


# ----------------------------------------------------------------------------------------------------
# options and locations, checked before any scoring
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, words", [
    (["--n", "0"], ["--n 0: must be a whole number >= 1"]),
    (["--n", "3", "--candidates", "2"], ["--candidates (2) must be at least --n (3)", "raise --candidates"]),
    (["--random-control", "-1"], ["--random-control -1: must be a whole number >= 0"]),
    (["--round", " "], ["--round must not be empty", "leave it out"]),
    (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "nonsense"],
     ["--device", "use"]),
    (["--project-id", "1234"], ["--project-id are used only with --upload", "add --upload"]),
    (["--upload"], ["--upload needs --project-id"]),
])
def test_bad_option_refused_before_scoring(world, out, extra, words):
    before = snapshot(out)
    res = run_cli(*base_args(world, out, *extra))
    failed(res, 2, *words)
    assert snapshot(out) == before


def test_unwritable_out_refused_before_scoring(world, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = run_cli(*base_args(world, blocker / "out"))
    failed(res, 2, "--out", str(blocker / "out"), "cannot create the parent folder")
    assert blocker.read_text() == "not a folder"


def test_out_holding_user_files_is_refused(world, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes")
    before = snapshot(mine)
    res = run_cli(*base_args(world, mine))
    failed(res, 2, "--out", "notes.txt", "choose a new or empty folder")
    assert snapshot(mine) == before


def test_state_inside_out_is_refused(world, out):
    before = snapshot(out)
    res = run_cli(*base_args(world, out, "--state", out / "ledger"))
    failed(res, 2, "--state", "must not be inside --out", "choose another --state")
    assert snapshot(out) == before


@pytest.mark.parametrize("endpoint, words", [
    ("ftp://example.org", ["--endpoint ftp://example.org", "not an http(s) URL", "https://www.zooniverse.org"]),
    ("zooniverse", ["--endpoint zooniverse", "not an http(s) URL"]),
    ("http://panoptes.example.org", ["plain http", "use https"]),
    ("https://www.zooniverse.org/api/?x=1", ["without a path or query"]),
])
def test_bad_endpoint_refused_before_scoring(world, out, endpoint, words, monkeypatch):
    monkeypatch.setenv("PANOPTES_USERNAME", USER)
    monkeypatch.setenv("PANOPTES_PASSWORD", PASSWORD)
    before = snapshot(out)
    res = run_cli(*base_args(world, out, "--upload", "--project-id", 1234, "--endpoint", endpoint))
    failed(res, 2, *words)
    assert snapshot(out) == before


def test_missing_credentials_named_before_scoring_and_dry_run_needs_none(world, out, tmp_path, monkeypatch):
    import clumptool.active_learning.select as select

    def never(*a, **k):
        raise AssertionError("scored before the credentials were checked")

    before = snapshot(out)
    with monkeypatch.context() as m:
        m.setattr(select, "score_pool", never)
        m.setenv("PANOPTES_USERNAME", USER)  # half of a pair
        res = run_cli(*base_args(world, out, *upload_args("https://www.zooniverse.org")))
    failed(res, 2, "PANOPTES_USERNAME and PANOPTES_PASSWORD", "PANOPTES_CLIENT_ID", "only PANOPTES_USERNAME is set")
    assert snapshot(out) == before
    res = run_cli(*base_args(world, out, *upload_args("https://www.zooniverse.org", "--dry-run")))
    assert res.code == 0, res.text
    assert "nothing was sent" in res.out and not verify_output_set(out)


# ----------------------------------------------------------------------------------------------------
# nothing (or too little) to work on
# ----------------------------------------------------------------------------------------------------


def test_empty_pool_everything_labelled(world, out, tmp_path):
    labelled = tmp_path / "labelled.csv"
    pd.DataFrame({"subject_id": range(7000, 7000 + N_POOL)}).to_csv(labelled, index=False)
    before = snapshot(out)
    res = run_cli(*base_args(world, out, "--labelled", labelled))
    failed(res, 2, "nothing left to select", f"{N_POOL} already labelled", "check --labelled")
    assert snapshot(out) == before


def test_n_larger_than_pool_refused_then_allow_fewer_says_so(world, out):
    before = snapshot(out)
    res = run_cli(*base_args(world, out, n=9, controls=5))
    failed(res, 2, f"only {N_POOL} galaxies are left", "--n 9 + --random-control 5 = 14", "--allow-fewer")
    assert snapshot(out) == before
    res = run_cli(*base_args(world, out, "--allow-fewer", "--round", "few", n=9, controls=5))
    assert res.code == 0, res.text
    assert "--allow-fewer: only 10 galaxies left, so 9 (not 9) by the strategy and 1 (not 5)" in res.out
    assert len(pd.read_parquet(out / "selection.parquet")) == N_POOL and not verify_output_set(out)


def test_pool_folder_without_images(world, out, tmp_path):
    empty = tmp_path / "empty-pool"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    before = snapshot(out)
    res = run_cli(*base_args(world, out)[:3], "--pool", empty, *base_args(world, out)[5:])
    failed(res, 2, str(empty), "no images (.png, .jpg, .fits)")
    assert snapshot(out) == before


def test_pool_table_with_missing_image_files(world, out, tmp_path):
    table = tmp_path / "pool.csv"
    pd.DataFrame({"galaxy_id": ["7000", "7001", "ghost"],
                  "image_path": [str(world / "images" / "7000.png"), str(world / "images" / "7001.png"),
                                 "gone/ghost.png"]}).to_csv(table, index=False)
    before = snapshot(out)
    args = base_args(world, out)
    args[4] = table
    res = run_cli(*args)
    failed(res, 2, str(table), "1 of 3 pool galaxies have no image file", "ghost")
    assert snapshot(out) == before


def test_pool_table_with_repeated_and_conflicting_rows(world, out, tmp_path):
    img = [str(world / "images" / f"{7000 + i}.png") for i in range(5)]
    rows = pd.DataFrame({"galaxy_id": [str(7000 + i) for i in range(5)], "image_path": img,
                         "ra": [150.0 + i for i in range(5)]})
    clash = tmp_path / "clash.csv"
    pd.concat([rows, rows.iloc[[2]].assign(ra=999.0)]).to_csv(clash, index=False)
    before = snapshot(out)
    args = base_args(world, out)
    args[4] = clash
    res = run_cli(*args)
    failed(res, 2, str(clash), "rows 4 and 7", "'galaxy_id'", "two different rows for galaxy 7002",
           "keep one row per galaxy")
    assert snapshot(out) == before
    repeated = tmp_path / "repeated.csv"
    pd.concat([rows, rows]).to_csv(repeated, index=False)  # an export concatenated with itself
    args[4] = repeated
    res = run_cli(*args, "--round", "dup")
    assert res.code == 0, res.text
    assert "pool: 5 galaxies (5 repeated rows dropped)" in res.out
    assert len(pd.read_parquet(out / "pool_scores.parquet")) == 5


def test_labelled_file_matching_no_pool_galaxy_is_pointed_out(world, out, tmp_path):
    other = tmp_path / "zooniverse-subjects.csv"
    pd.DataFrame({"subject_id": [91000001, 91000002]}).to_csv(other, index=False)
    res = run_cli(*base_args(world, out, "--labelled", other, "--round", "lab"))
    assert res.code == 0, res.text
    assert f"none of the 2 ids in --labelled {other} is a pool galaxy id" in res.out
    assert "'7000'" in res.out and "'91000001'" in res.out


def test_model_folder_without_weights(world, out, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text((world / "model" / "model.json").read_text())
    before = snapshot(out)
    args = base_args(world, out)
    args[2] = model
    res = run_cli(*args)
    failed(res, 2, f"--model {model}", "no model.safetensors", "'clumptool train' output")
    assert snapshot(out) == before


def test_failed_scoring_leaves_previous_outputs(world, out, tmp_path):
    """A pool image that cannot be decoded fails the scoring: previous set byte-identical, no staging left."""
    pool = tmp_path / "pool"
    pool.mkdir()
    for p in sorted((world / "images").glob("*.png"))[:5]:
        (pool / p.name).write_bytes(p.read_bytes())
    (pool / "7003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    before = snapshot(out)
    args = base_args(world, out)
    args[4] = pool
    res = run_cli(*args)
    failed(res, 2, "7003.png", "cannot read image", "replace the image, or leave this galaxy out of --pool")
    assert snapshot(out) == before
    assert not (out.parent / ".out.partial").exists()


def test_ctrl_c_during_scoring_leaves_previous_outputs(world, out, monkeypatch):
    import clumptool.active_learning.select as select

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(select, "score_pool", interrupted)
    before = snapshot(out)
    res = run_cli(*base_args(world, out, "--round", "ctrl-c"))
    assert res.code == 130 and "run the same command again" in res.err, res.text
    assert snapshot(out) == before and not (out.parent / ".out.partial").exists()


def test_quiet_success_prints_nothing_and_rerun_replaces_the_whole_set(world, out):
    res = run_cli(*base_args(world, out, "--round", "q", "--quiet"))
    assert res.code == 0 and res.out == "" and res.err == "", res.text  # no Lightning/torch warnings either
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["info"]["round"] == "q" and not verify_output_set(out)
    assert set(manifest["files"]) >= {"selection.parquet", "pool_scores.parquet", "manifest.csv", "selection.png"}


# ----------------------------------------------------------------------------------------------------
# Zooniverse: secrets, errors under --quiet, rounds, kills
# ----------------------------------------------------------------------------------------------------


def test_password_in_endpoint_is_never_echoed(world, out, fake, tmp_path):
    url = fake.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    before = snapshot(out)
    res = run_cli(*base_args(world, out, *upload_args(url)))
    failed(res, 2, "--endpoint", f"{USER}:***@", "remove the user:password@ part", "PANOPTES_PASSWORD")
    assert PASSWORD not in res.text
    assert PASSWORD not in every_file_text(tmp_path)
    assert snapshot(out) == before and not fake.state.requests


def test_wrong_password_fails_before_scoring_without_echoing_it(world, out, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("PANOPTES_PASSWORD", "wrong-" + PASSWORD)
    before = snapshot(out)
    res = run_cli(*base_args(world, out, *upload_args(fake.url)))
    failed(res, 2, "login failed", "Invalid login or password", "check PANOPTES_USERNAME and PANOPTES_PASSWORD")
    assert PASSWORD not in res.text and PASSWORD not in every_file_text(tmp_path)
    assert snapshot(out) == before
    assert not fake.state.subjects


@pytest.mark.parametrize("extra, words", [
    (["--project-id", 999], ["--project-id 999: not found", "check the id"]),
    (["--workflow-id", 4242], ["--workflow-id 4242: not found", "check the id"]),
])
def test_unknown_project_or_workflow_refused_before_scoring(world, out, fake, extra, words, monkeypatch):
    import clumptool.active_learning.select as select

    monkeypatch.setattr(select, "score_pool", lambda *a, **k: pytest.fail("scored before the server checks"))
    before = snapshot(out)
    res = run_cli(*base_args(world, out, *upload_args(fake.url), *extra))
    failed(res, 2, *words)
    assert snapshot(out) == before and not fake.state.subjects


def test_subject_quota_too_small_refused_before_scoring(world, out, fake, monkeypatch):
    import clumptool.active_learning.select as select

    monkeypatch.setattr(select, "score_pool", lambda *a, **k: pytest.fail("scored before the quota check"))
    fake.state.users[USER]["subject_limit"] = 2
    before = snapshot(out)
    res = run_cli(*base_args(world, out, *upload_args(fake.url), n=2, controls=1))
    failed(res, 2, "uploaded 0 of 2 subjects", "needs 3 more", "ask the Zooniverse team to raise the limit")
    assert snapshot(out) == before and not fake.state.subjects


def test_quiet_still_prints_a_failed_upload_and_rerun_resumes(world, out, fake, tmp_path):
    fake.state.add_fault(method="POST", path=r"^/api/subjects$", nth=2, times=50, status=500)
    res = run_cli(*base_args(world, out, *upload_args(fake.url), "--round", "r1", "--quiet"))
    failed(res, 2, "upload is incomplete", "selection itself is complete in", "run the same command again")
    assert res.out == ""
    assert PASSWORD not in res.text
    # the local selection was published before the upload, whole
    assert not verify_output_set(out) and json.loads((out / "manifest.json").read_text())["info"]["round"] == "r1"
    selected = sorted(pd.read_parquet(out / "selection.parquet")["galaxy_id"])
    fake.state.faults.clear()
    res = run_cli(*base_args(world, out, *upload_args(fake.url), "--round", "r1", "--quiet"))
    assert res.code == 0, res.text
    assert galaxies_on_server(fake) == selected  # each exactly once


def test_two_rounds_with_new_out_never_upload_a_galaxy_twice(world, fake, tmp_path):
    r1, r2 = tmp_path / "round1", tmp_path / "round2"
    a = run_cli(*base_args(world, r1, *upload_args(fake.url), "--round", "r1", n=3, controls=1))
    assert a.code == 0, a.text
    b = run_cli(*base_args(world, r2, *upload_args(fake.url), "--round", "r2", n=3, controls=1))
    assert b.code == 0, b.text
    first = set(pd.read_parquet(r1 / "selection.parquet")["galaxy_id"])
    second = set(pd.read_parquet(r2 / "selection.parquet")["galaxy_id"])
    assert len(first) == len(second) == 4 and not first & second  # the second round picked other galaxies
    on_server = galaxies_on_server(fake)
    assert len(on_server) == len(set(on_server)) == 8
    assert "4 taken by earlier rounds" in b.out  # left out before scoring, not after
    # the same model again with a new --out and the default round: the batch is reused, nothing re-sent
    n_posts = len(fake.state.requests_to("POST", r"^/api/subjects$"))
    c = run_cli(*base_args(world, tmp_path / "round1-again", *upload_args(fake.url), "--round", "r1"))
    assert c.code == 0 and "already selected" in c.out, c.text
    assert len(fake.state.requests_to("POST", r"^/api/subjects$")) == n_posts


def test_lost_ledger_the_server_still_prevents_reuploads(world, fake, tmp_path):
    a = run_cli(*base_args(world, tmp_path / "r1", *upload_args(fake.url), "--round", "r1", n=3, controls=1))
    assert a.code == 0, a.text
    # another machine / a deleted ledger: only the server remembers
    b = run_cli(*base_args(world, tmp_path / "r2", *upload_args(fake.url), "--round", "r2", "--state",
                           tmp_path / "fresh-ledger", n=3, controls=1))
    assert b.code == 0, b.text
    on_server = galaxies_on_server(fake)
    assert len(on_server) == len(set(on_server)) == 8
    # and asking for more than is left says so instead of re-sending
    c = run_cli(*base_args(world, tmp_path / "r3", *upload_args(fake.url), "--round", "r3", "--state",
                           tmp_path / "another", n=3, controls=0))
    failed(c, 2, "only 2 galaxies are left", "8 taken by earlier rounds", "--allow-fewer")
    assert not (tmp_path / "r3").exists()


def test_allow_reupload_is_explicit(world, fake, tmp_path):
    a = run_cli(*base_args(world, tmp_path / "r1", *upload_args(fake.url), "--round", "r1", n=5, controls=5))
    assert a.code == 0, a.text
    b = run_cli(*base_args(world, tmp_path / "r2", *upload_args(fake.url), "--round", "r2", n=2, controls=0))
    failed(b, 2, "nothing left to select", "10 taken by earlier rounds")
    c = run_cli(*base_args(world, tmp_path / "r2", *upload_args(fake.url, "--allow-reupload"), "--round", "r2",
                           n=2, controls=0))
    assert c.code == 0, c.text
    assert len(galaxies_on_server(fake)) == 12


def test_sigkill_during_upload_then_resume_without_duplicates(world, tmp_path, fake):
    """A real SIGKILL while the 3rd subject create is in flight; the rerun adopts the subject the server
    created for it and uploads the rest, each galaxy exactly once."""
    fake.state.add_fault(method="POST", path=r"^/api/subjects$", nth=3, status=0, delay=1.0)
    out = tmp_path / "killed"
    args = base_args(world, out, *upload_args(fake.url), "--round", "kill", "--quiet", n=4, controls=2)
    res = interrupt_when(args, lambda: len(fake.state.requests_to("POST", r"^/api/subjects$")) >= 3,
                         sig=signal.SIGKILL)
    assert res.code == -signal.SIGKILL
    published = snapshot(out)
    assert published and not verify_output_set(out)  # the selection was published before the upload began
    deadline = time.monotonic() + 10
    while len(fake.state.subjects) < 3 and time.monotonic() < deadline:  # the held create finishes server-side
        time.sleep(0.05)
    assert len(fake.state.subjects) == 3
    again = run_cli(*args)
    assert again.code == 0, again.text
    selected = sorted(pd.read_parquet(out / "selection.parquet")["galaxy_id"])
    assert len(selected) == 6 and galaxies_on_server(fake) == selected
    (subject_set,) = fake.state.sets_named("kill")
    assert len(fake.state.subject_ids_in_set(subject_set["id"])) == 6


# ----------------------------------------------------------------------------------------------------
# fake-panoptes
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, words", [
    (["--fault", "{not json"], ["--fault"]),
    (["--fault", '{"nth": 1, "colour": "red"}'], ["--fault", "unknown fault fields", "colour"]),
    (["--port", "70000"], ["--port", "70000"]),
    (["--subject-limit", "-1"], ["--subject-limit"]),
])
def test_fake_panoptes_bad_options(extra, words):
    res = run_cli("fake-panoptes", *extra)
    failed(res, 2, *words)


def test_fake_panoptes_unreadable_state(tmp_path):
    state = tmp_path / "fake-state"
    state.mkdir()
    (state / "state.json").write_text("{broken")
    before = snapshot(state)
    res = run_cli("fake-panoptes", "--state", state)
    failed(res, 2, str(state / "state.json"), "not a readable fake-panoptes state", "give another --state")
    assert snapshot(state) == before
